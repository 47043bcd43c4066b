"""Hostile peers, the handshake (issue 4, section 3): protocol versions fasttls refuses, and fatal
alerts in place of the peer's flight. The case runner and the rules every case follows:
support.hostile."""
import pytest

import fasttls
from support.hostile import (
    TLS10,
    TLS11,
    WEAK,
    Case,
    Error,
    accept_one,
    clienthello_bytes,
    f_client,
    f_server,
    memory_handshake,
    params,
    raw_to_client,
    raw_to_server,
    run_case,
    s_client,
    s_server,
    serve_with_helpers,
    std_client_ctx,
    std_server_ctx,
)
from support.pairs import TLS12
from support.peers import StdlibPeer
from support.records import ALERT, record


def old_version_server(version):
    def scenario(env):
        tls = f_client(env.certs.server_rsa)
        ctx = std_server_ctx(env, env.certs.server_rsa, version, weak=True)
        memory_handshake(env, tls, StdlibPeer(ctx, server_side=True))
        raise AssertionError(f"fasttls accepted {tls.version()}")

    return scenario


def old_version_client(version):
    def scenario(env):
        tls = f_server(env.certs.server_rsa)
        ctx = std_client_ctx(env, env.certs.server_rsa.ca_pem, version=version, weak=True)
        memory_handshake(env, tls, StdlibPeer(ctx, server_side=False, hostname="localhost"))
        raise AssertionError(f"fasttls accepted {tls.version()}")

    return scenario


def openssl_old_version_server(env):
    """`openssl s_server -tls1` (TLS 1.0 only) against a fasttls client using the helpers."""
    port = s_server(env, env.certs.server_rsa, "-tls1", "-cipher", WEAK)
    sock = env.connect(port)
    tls = f_client(env.certs.server_rsa)
    fasttls.helpers.init_requestfunc(sock, tls)()
    raise AssertionError(f"fasttls accepted {tls.version()}")


def openssl_old_version_client(env):
    """`openssl s_client -tls1` against a fasttls server using the helpers."""
    listener = env.listener()
    s_client(env, listener.getsockname()[1], "-tls1", "-cipher", WEAK)
    sock = accept_one(listener)
    serve_with_helpers(env, f_server(env.certs.server_rsa), sock)


CASES = [
    # ---- old protocol versions
    Case("tls10-only-server", "client", "stdlib", old_version_server(TLS10), Error,
         "protocol version"),
    Case("tls11-only-server", "client", "stdlib", old_version_server(TLS11), Error,
         "protocol version"),
    Case("tls10-only-client", "server", "stdlib", old_version_client(TLS10), Error,
         "unsupported protocol", reason="UNSUPPORTED_PROTOCOL"),
    Case("tls11-only-client", "server", "stdlib", old_version_client(TLS11), Error,
         "unsupported protocol", reason="UNSUPPORTED_PROTOCOL"),
    Case("tls10-only-server-openssl", "client", "openssl", openssl_old_version_server, Error,
         "protocol version"),
    Case("tls10-only-client-openssl", "server", "openssl", openssl_old_version_client, Error,
         "unsupported protocol"),
    # ---- alerts in the handshake
    Case("fatal-alert-instead-of-server-hello", "client", "raw",
         raw_to_client(record(ALERT, b"\x02\x28")), Error, "alert handshake failure",
         reason="SSLV3_ALERT_HANDSHAKE_FAILURE"),
    Case("fatal-alert-instead-of-client-hello", "server", "raw",
         raw_to_server(record(ALERT, b"\x02\x50", b"\x03\x01")), Error, "unexpected message",
         reason="UNEXPECTED_MESSAGE"),
    Case("fatal-alert-after-server-flight-tls12", "server", "raw",
         raw_to_server(lambda env: clienthello_bytes(env, TLS12), then=record(ALERT, b"\x02\x2a")),
         Error, "alert bad certificate", reason="SSLV3_ALERT_BAD_CERTIFICATE"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_peer(case, hostile_certs, tmp_path):
    run_case(case, hostile_certs, tmp_path)
