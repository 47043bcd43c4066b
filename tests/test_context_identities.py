"""Several identities per context (add_cert), file paths for the drop-in (paths_only), and DH
parameters from a file (load_dh_params).

OpenSSL keeps one certificate per key type and serves each client the one its signature
algorithms (TLS 1.3) or cipher suites (TLS 1.2) accept. Peers: the stdlib in memory (TLS 1.2,
restricted by cipher suite) and `openssl s_client -sigalgs` over a socket (TLS 1.3)."""
import contextlib
import errno
import pathlib
import socket
import ssl
import subprocess
import threading

import pytest

import fasttls
from support.certs import Identity
from support.peers import SOCKET_TIMEOUT, StdlibPeer, handshake_with_stdlib, socket_handshake
from support.requires import require_program

TLS12 = ssl.TLSVersion.TLSv1_2
ECDSA_SUITE = "ECDHE-ECDSA-AES128-GCM-SHA256"
RSA_SUITE = "ECDHE-RSA-AES128-GCM-SHA256"


@pytest.fixture(scope="module")
def two_types():
    """An RSA and an ECDSA leaf for localhost, from one CA."""
    rsa = Identity("rsa", "localhost")
    return {"rsa": rsa, "ecdsa": Identity("ecdsa", "localhost", ca=rsa.ca),
            "ecdsa2": Identity("ecdsa", "localhost", ca=rsa.ca)}


def served_to_tls12_client(server_ctx, ca, suite):
    """The DER certificate a stdlib TLS 1.2 client offering only `suite` is served, or the
    ssl.SSLError of a failed handshake."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    client_ctx.maximum_version = TLS12
    client_ctx.set_ciphers(suite)
    peer = StdlibPeer(client_ctx, False, "localhost")
    try:
        handshake_with_stdlib(fasttls.newtls("server", server_ctx), peer)
    except (ssl.SSLError, fasttls.SSLError) as exc:
        return exc
    return peer.obj.getpeercert(binary_form=True)


def test_rsa_and_ecdsa_each_served_to_the_client_that_wants_it(two_types):
    ctx = fasttls.newctx()
    ctx.add_cert(two_types["rsa"].chain_pem, two_types["rsa"].key_pem)
    ctx.add_cert(two_types["ecdsa"].chain_pem, two_types["ecdsa"].key_pem)
    ca = two_types["rsa"].ca
    assert served_to_tls12_client(ctx, ca, ECDSA_SUITE) == two_types["ecdsa"].leaf_der
    assert served_to_tls12_client(ctx, ca, RSA_SUITE) == two_types["rsa"].leaf_der


def test_set_cert_still_replaces_every_identity(two_types):
    """The native reload semantics: after set_cert(ECDSA), no RSA certificate is left to serve."""
    ctx = fasttls.newctx()
    ctx.add_cert(two_types["rsa"].chain_pem, two_types["rsa"].key_pem)
    ctx.add_cert(two_types["ecdsa"].chain_pem, two_types["ecdsa"].key_pem)
    ctx.set_cert(two_types["ecdsa2"].chain_pem, two_types["ecdsa2"].key_pem)
    ca = two_types["rsa"].ca
    assert served_to_tls12_client(ctx, ca, ECDSA_SUITE) == two_types["ecdsa2"].leaf_der
    failed = served_to_tls12_client(ctx, ca, RSA_SUITE)
    assert isinstance(failed, ssl.SSLError), failed
    # ...and adding RSA again brings it back beside the ECDSA one.
    ctx.add_cert(two_types["rsa"].chain_pem, two_types["rsa"].key_pem)
    assert served_to_tls12_client(ctx, ca, RSA_SUITE) == two_types["rsa"].leaf_der
    assert served_to_tls12_client(ctx, ca, ECDSA_SUITE) == two_types["ecdsa2"].leaf_der


def test_add_cert_of_a_loaded_key_type_replaces_that_one(two_types):
    ctx = fasttls.newctx()
    ctx.add_cert(two_types["rsa"].chain_pem, two_types["rsa"].key_pem)
    ctx.add_cert(two_types["ecdsa"].chain_pem, two_types["ecdsa"].key_pem)
    ctx.add_cert(two_types["ecdsa2"].chain_pem, two_types["ecdsa2"].key_pem)
    ca = two_types["rsa"].ca
    assert served_to_tls12_client(ctx, ca, ECDSA_SUITE) == two_types["ecdsa2"].leaf_der
    assert served_to_tls12_client(ctx, ca, RSA_SUITE) == two_types["rsa"].leaf_der


@contextlib.contextmanager
def fasttls_server_for_one(ctx):
    """A thread serving one fasttls handshake on 127.0.0.1; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    sock.settimeout(SOCKET_TIMEOUT)
    errors = []

    def serve():
        try:
            conn, _ = sock.accept()
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                tls = fasttls.newtls("server", ctx)
                socket_handshake(conn, tls, client=False)
                conn.sendall(tls.write(b"bye\n") + tls.close())
        except Exception as exc:  # reported by the test, after s_client's output
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield sock.getsockname()[1], errors
    finally:
        thread.join(SOCKET_TIMEOUT * 2)
        sock.close()


def s_client_output(openssl, port, *args):
    done = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{port}",
                           "-servername", "localhost", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr


@pytest.mark.parametrize("sigalg, expected", [("ecdsa_secp256r1_sha256", "ecdsa"),
                                              ("rsa_pss_rsae_sha256", "rsa")])
def test_tls13_client_signature_algorithms_choose_the_certificate(two_types, sigalg, expected):
    openssl = require_program("openssl")
    ctx = fasttls.newctx()
    ctx.add_cert(two_types["rsa"].chain_pem, two_types["rsa"].key_pem)
    ctx.add_cert(two_types["ecdsa"].chain_pem, two_types["ecdsa"].key_pem)
    with fasttls_server_for_one(ctx) as (port, errors):
        output = s_client_output(openssl, port, "-tls1_3", "-sigalgs", sigalg)
    assert not errors, (errors, output)
    assert "TLSv1.3" in output, output
    assert two_types[expected].subject_ou() in output, output
    other = "rsa" if expected == "ecdsa" else "ecdsa"
    assert two_types[other].subject_ou() not in output


# ---------------------------------------------------------------------- paths for the drop-in


def test_paths_only_reads_bytes_and_pathlike_as_file_names(two_types, tmp_path):
    paths = two_types["ecdsa"].write(tmp_path)
    ctx = fasttls.newctx()
    ctx.set_cert(bytes(paths["cert"]), bytes(paths["key"]), paths_only=True)
    ctx.add_cert(pathlib.Path(paths["cert"]), paths["key"], paths_only=True)
    ctx.add_cert(str(paths["cert"]), str(paths["key"]), paths_only=True)
    assert served_to_tls12_client(ctx, two_types["rsa"].ca, ECDSA_SUITE) == \
        two_types["ecdsa"].leaf_der
    with pytest.raises(OSError):  # PEM is not a path here (too long a file name, even)
        ctx.set_cert(two_types["ecdsa"].chain_pem, paths_only=True)
    # Without paths_only, bytes stay PEM data (the native API's documented behaviour).
    ctx.set_cert(two_types["ecdsa"].chain_pem, two_types["ecdsa"].key_pem)


def test_paths_only_refuses_other_buffers(two_types):
    with pytest.raises(TypeError):
        fasttls.newctx().set_cert(bytearray(b"cert.pem"), paths_only=True)


# ---------------------------------------------------------------------------- DH parameters


@pytest.fixture(scope="module")
def dh_files(tmp_path_factory):
    openssl = require_program("openssl")
    directory = tmp_path_factory.mktemp("dh")
    files = {"ffdhe3072": directory / "ffdhe3072.pem", "small": directory / "dh512.pem"}
    subprocess.run([openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                    "group:ffdhe3072", "-out", str(files["ffdhe3072"])], check=True, timeout=60)
    subprocess.run([openssl, "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt",
                    "dh_paramgen_prime_len:512", "-out", str(files["small"])], check=True,
                   timeout=120)
    return files


def test_load_dh_params_is_used_for_dhe(two_types, dh_files):
    """A TLS 1.2 DHE handshake uses the loaded 3072-bit group (automatic selection would pick
    2048 bits for a 2048-bit RSA key)."""
    openssl = require_program("openssl")
    ctx = fasttls.newctx()
    ctx.set_cert(two_types["rsa"].chain_pem, two_types["rsa"].key_pem)
    ctx.load_dh_params(dh_files["ffdhe3072"])
    with fasttls_server_for_one(ctx) as (port, errors):
        output = s_client_output(openssl, port, "-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256")
    assert not errors, (errors, output)
    assert "Server Temp Key: DH, 3072 bits" in output, output


def test_load_dh_params_accepts_what_the_stdlib_accepts(dh_files):
    ctx = fasttls.newctx()
    ctx.load_dh_params(str(dh_files["ffdhe3072"]))
    ctx.load_dh_params(bytes(dh_files["ffdhe3072"]))
    ctx.load_dh_params(dh_files["ffdhe3072"])


def test_load_dh_params_errors_as_in_the_stdlib(two_types, dh_files, tmp_path):
    ctx = fasttls.newctx()
    with pytest.raises(TypeError):
        ctx.load_dh_params(None)
    with pytest.raises(FileNotFoundError) as missing:
        ctx.load_dh_params(tmp_path / "missing.pem")
    assert missing.value.errno == errno.ENOENT
    cert = two_types["rsa"].write(tmp_path)["cert"]
    with pytest.raises(ssl.SSLError) as no_params:
        ctx.load_dh_params(cert)
    assert no_params.value.reason == "NO_START_LINE"  # as the stdlib reports it
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ssl.SSLError):
        ctx.load_dh_params(garbage)
    with pytest.raises(ssl.SSLError, match="DH_KEY_TOO_SMALL|too small"):
        ctx.load_dh_params(dh_files["small"])  # under the security level's 2048 bits
    # The stdlib agrees on each of them.
    theirs = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    theirs.load_dh_params(dh_files["ffdhe3072"])
    for bad in (cert, garbage):
        with pytest.raises(ssl.SSLError):
            theirs.load_dh_params(bad)
