"""Keyless servers against `openssl s_client`: TLS 1.3 and 1.2, ECDSA P-256, RSA-PSS and (TLS
1.2) RSA PKCS#1 v1.5, chosen with -sigalgs; the client verifies the chain and the signature
itself, and reports the signature type it got."""
import re

import pytest

from support.interop import run_client
from support.keyless_server import RESPONSE, KeylessServer
from support.requires import require_program

CASES = [
    # (key type, s_client version flag, -sigalgs, what s_client reports, scheme asked for)
    ("ecdsa", "-tls1_3", "ECDSA+SHA256", b"ECDSA", "ecdsa_secp256r1_sha256"),
    ("ecdsa", "-tls1_2", "ECDSA+SHA256", b"ECDSA", "ecdsa_secp256r1_sha256"),
    ("ecdsa", "-tls1_2", "ECDSA+SHA384", b"ECDSA", "ecdsa_secp384r1_sha384"),
    ("rsa", "-tls1_3", "rsa_pss_rsae_sha256", b"RSA-PSS", "rsa_pss_rsae_sha256"),
    ("rsa", "-tls1_3", "rsa_pss_rsae_sha384", b"RSA-PSS", "rsa_pss_rsae_sha384"),
    ("rsa", "-tls1_2", "rsa_pss_rsae_sha256", b"RSA-PSS", "rsa_pss_rsae_sha256"),
    ("rsa", "-tls1_2", "RSA+SHA256", b"RSA", "rsa_pkcs1_sha256"),
    ("rsa", "-tls1_2", "RSA+SHA512", b"RSA", "rsa_pkcs1_sha512"),
]


def s_client(port, ca_path, tmp_path, *flags, name="s_client"):
    openssl = require_program("openssl")
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
            "-CAfile", str(ca_path), "-verify_return_error", "-ign_eof", *flags]
    return run_client(args, tmp_path, name, stdin_bytes=b"GET / HTTP/1.0\r\n\r\n")


@pytest.mark.parametrize("driver", ["sansio", "fd"])
@pytest.mark.parametrize("key_type,version,sigalgs,reported,scheme", CASES,
                         ids=[f"{c[0]}-{c[1][1:]}-{c[2]}" for c in CASES])
def test_s_client(identities, keyless_ctx, tmp_path, driver, key_type, version, sigalgs,
                  reported, scheme):
    identity = identities[key_type]
    paths = identity.write(tmp_path)
    ctx, signer = keyless_ctx(identity)
    with KeylessServer(ctx, driver) as server:
        code, out, err = s_client(server.port, paths["ca"], tmp_path, version,
                                  "-sigalgs", sigalgs)
    assert code == 0, ([r.error for r in server.results], (out + err)[-3000:])
    assert RESPONSE.split(b"\r\n\r\n")[1] in out
    assert b"Verify return code: 0 (ok)" in out
    assert re.search(rb"Peer signature type: " + re.escape(reported) + rb"\b", out + err), out
    (result,) = server.results
    assert result.error is None
    assert result.requests == 1
    (request,) = signer.requests
    assert request.scheme_name == scheme
    assert request.server_name == "localhost"
    if version == "-tls1_3":
        assert request.data.startswith(b" " * 64 + b"TLS 1.3, server CertificateVerify\0")


def test_s_client_resumption_needs_no_signature(identities, keyless_ctx, tmp_path):
    identity = identities["ecdsa"]
    paths = identity.write(tmp_path)
    ctx, signer = keyless_ctx(identity)
    session = tmp_path / "session.pem"
    with KeylessServer(ctx) as server:
        code, out, err = s_client(server.port, paths["ca"], tmp_path, "-tls1_3", "-sess_out",
                                  str(session), name="first")
        assert code == 0, (out + err)[-3000:]
        code, out, err = s_client(server.port, paths["ca"], tmp_path, "-tls1_3", "-sess_in",
                                  str(session), name="second")
    assert code == 0, (out + err)[-3000:]
    assert b"Reused, TLSv1.3" in out
    assert [r.reused for r in server.results] == [False, True]
    assert [r.requests for r in server.results] == [1, 0]
    assert len(signer.requests) == 1
