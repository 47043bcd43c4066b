"""Hostile peers, certificates (issue 4, section 3): the server's certificate (fasttls client,
stdlib or openssl server) and client certificates (fasttls server requiring one). The case
runner and the rules every case follows: support.hostile."""
import subprocess

import pytest

import fasttls
from support.hostile import (
    Case,
    CertError,
    Error,
    accept_one,
    f_client,
    f_server,
    memory_handshake,
    params,
    run_case,
    s_client,
    s_server,
    serve_with_helpers,
    std_client_ctx,
    std_server_ctx,
)
from support.pairs import TLS12, TLS13
from support.peers import StdlibPeer


def client_vs_stdlib(cert_name, hostname="localhost", trust=None, **server_kw):
    """fasttls client against a stdlib server presenting certs.<cert_name>."""

    def scenario(env):
        cert = getattr(env.certs, cert_name)
        tls = f_client(trust(env.certs) if trust else cert, hostname)
        ctx = std_server_ctx(env, cert, **server_kw)
        error = memory_handshake(env, tls, StdlibPeer(ctx, server_side=True))
        raise AssertionError(f"fasttls accepted the handshake (peer error: {error!r})")

    return scenario


def server_vs_stdlib(client_cert_name=None, version=None, **client_kw):
    """fasttls server requiring a client certificate (from certs.client's CA) against a stdlib
    client presenting certs.<client_cert_name> (or none)."""

    def scenario(env):
        certs = env.certs
        cert = getattr(certs, client_cert_name) if client_cert_name else None
        trusted = certs.client_ca_pem
        if cert is not None and cert.name in ("client-rsa1024", "client-sha1"):
            trusted = cert.ca_pem  # its CA is trusted: only the key or the signature is at fault
        tls = f_server(certs.server, client_ca=trusted)
        ctx = std_client_ctx(env, certs.server.ca_pem, cert, version, **client_kw)
        error = memory_handshake(env, tls, StdlibPeer(ctx, server_side=False,
                                                      hostname="localhost"))
        raise AssertionError(f"fasttls accepted the handshake (peer error: {error!r})")

    return scenario


def stdlib_client_rejects_fasttls(env):
    """The stdlib client does not trust fasttls's certificate and aborts with an alert."""
    tls = f_server(env.certs.untrusted)
    ctx = std_client_ctx(env, env.certs.server.ca_pem)
    peer_error = memory_handshake(env, tls, StdlibPeer(ctx, server_side=False,
                                                       hostname="localhost"))
    raise AssertionError(f"fasttls did not fail (stdlib: {peer_error!r})")


def openssl_expired_server(env):
    """`openssl s_server` presenting an expired certificate; the fasttls client (helpers)."""
    port = s_server(env, env.certs.expired)
    sock = env.connect(port)
    fasttls.helpers.init_requestfunc(sock, f_client(env.certs.expired))()


def openssl_client_without_cert(env):
    """`openssl s_client` without a certificate against a fasttls server that requires one."""
    listener = env.listener()
    s_client(env, listener.getsockname()[1], stdin=subprocess.PIPE)
    sock = accept_one(listener)
    serve_with_helpers(env, f_server(env.certs.server, client_ca=env.certs.client_ca_pem), sock)


CASES = [
    # ---- the server's certificate (fasttls client, stdlib server)
    Case("expired-server-cert", "client", "stdlib", client_vs_stdlib("expired"), CertError,
         "certificate has expired", verify="certificate has expired"),
    Case("not-yet-valid-server-cert", "client", "stdlib", client_vs_stdlib("not_yet_valid"),
         CertError, "certificate is not yet valid"),
    Case("self-signed-server-cert", "client", "stdlib",
         client_vs_stdlib("self_signed", trust=lambda c: c.server), CertError,
         "self-signed certificate"),
    Case("untrusted-server-ca", "client", "stdlib",
         client_vs_stdlib("untrusted", trust=lambda c: c.server), CertError,
         "unable to get local issuer certificate"),
    Case("wrong-hostname", "client", "stdlib",
         client_vs_stdlib("other_host", "localhost"), CertError,
         "Hostname mismatch, certificate is not valid for 'localhost'"),
    Case("wrong-ip-address", "client", "stdlib",
         client_vs_stdlib("other_host", "127.0.0.1"), CertError,
         "IP address mismatch, certificate is not valid for '127.0.0.1'"),
    Case("rsa1024-server-key", "client", "stdlib", client_vs_stdlib("rsa1024", weak=True),
         CertError, "EE certificate key too weak"),
    Case("rsa1024-server-ca", "client", "stdlib", client_vs_stdlib("rsa1024_ca", weak=True),
         CertError, "CA certificate key too weak"),
    Case("sha1-signed-server-cert", "client", "stdlib", client_vs_stdlib("sha1", weak=True),
         CertError, "digest algorithm too weak"),
    Case("missing-intermediate", "client", "stdlib", client_vs_stdlib("leaf_only"), CertError,
         "unable to get local issuer certificate"),
    Case("expired-server-cert-openssl", "client", "openssl", openssl_expired_server, CertError,
         "certificate has expired"),
    # ---- client certificates (fasttls server requiring one, stdlib client)
    Case("client-cert-absent-tls13", "server", "stdlib", server_vs_stdlib(None, TLS13), Error,
         "peer did not return a certificate", reason="PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    Case("client-cert-absent-tls12", "server", "stdlib", server_vs_stdlib(None, TLS12), Error,
         "peer did not return a certificate", reason="PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    Case("client-cert-untrusted", "server", "stdlib", server_vs_stdlib("client_stranger"),
         CertError, "unable to get local issuer certificate"),
    Case("client-cert-expired", "server", "stdlib", server_vs_stdlib("client_expired"),
         CertError, "certificate has expired"),
    Case("client-cert-self-signed", "server", "stdlib",
         server_vs_stdlib("client_self_signed"), CertError, "self-signed certificate"),
    Case("client-cert-rsa1024", "server", "stdlib",
         server_vs_stdlib("client_rsa1024", weak=True), CertError, "EE certificate key too weak"),
    Case("client-cert-sha1", "server", "stdlib", server_vs_stdlib("client_sha1", weak=True),
         CertError, "digest algorithm too weak"),
    Case("client-cert-absent-openssl", "server", "openssl", openssl_client_without_cert, Error,
         "peer did not return a certificate"),
    Case("stdlib-client-rejects-server-cert", "server", "stdlib",
         stdlib_client_rejects_fasttls, Error, "alert unknown ca",
         reason="TLSV1_ALERT_UNKNOWN_CA"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_peer(case, hostile_certs, tmp_path):
    run_case(case, hostile_certs, tmp_path)
