"""fasttls's sans-IO TLS object over real loopback sockets against the ``openssl`` command line:
``s_server`` (fasttls as client) and ``s_client`` (fasttls as server). Ports are ephemeral,
every socket has a timeout, every loop a count limit, and every process is killed in `finally`."""
import contextlib
import os
import re
import select
import socket
import ssl
import subprocess
import time

import pytest

import fasttls
from support.pairs import TLS12, TLS13, VERSIONS, VERSION_NAME, client_ctx, server_ctx
from support.peers import MAX_STEPS, SOCKET_TIMEOUT, socket_handshake, socket_read_until
from support.requires import require_program

VERSION_FLAG = {TLS12: "-tls1_2", TLS13: "-tls1_3"}
PROCESS_TIMEOUT = 20.0  # bounds waiting for a peer process to start or end


@pytest.fixture
def openssl():
    return require_program("openssl")


@contextlib.contextmanager
def s_server(openssl, tmp_path, identity, *extra):
    """Run `openssl s_server` on 127.0.0.1 with an ephemeral port for one connection; yield
    (process, port, path of its stderr log). Always killed at the end."""
    paths = identity.write(tmp_path)
    stderr_path = tmp_path / "s_server.err"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
             "-cert", str(paths["cert"]), "-key", str(paths["key"]), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
        )
    try:
        yield proc, wait_for_port(proc), stderr_path
    finally:
        proc.kill()
        proc.wait(timeout=PROCESS_TIMEOUT)
        proc.stdout.close()


def wait_for_port(proc):
    """The port from s_server's "ACCEPT 127.0.0.1:PORT" line."""
    seen = b""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    for _ in range(1000):
        match = re.search(rb"ACCEPT 127\.0\.0\.1:(\d+)\s", seen)
        if match:
            return int(match.group(1))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if not readable:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    raise AssertionError(f"s_server did not report its port; output so far: {seen!r}")


@contextlib.contextmanager
def s_client(openssl, tmp_path, port, stdin_data, *extra, interactive=False):
    """Run `openssl s_client` against 127.0.0.1:port with stdin_data as its input, then EOF
    (ignored thanks to -ign_eof); yield (process, path of its combined output).

    interactive=True: no -ign_eof (s_client then obeys its one-letter commands) and stdin stays
    open for the test to write to."""
    out_path = tmp_path / "s_client.out"
    args = [openssl, "s_client", "-connect", f"127.0.0.1:{port}", *extra]
    if not interactive:
        args.append("-ign_eof")
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        proc.stdin.write(stdin_data)
        if interactive:
            proc.stdin.flush()
        else:
            proc.stdin.close()
        yield proc, out_path
    finally:
        proc.kill()
        proc.wait(timeout=PROCESS_TIMEOUT)
        with contextlib.suppress(OSError):
            proc.stdin.close()


@contextlib.contextmanager
def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.settimeout(SOCKET_TIMEOUT)
        yield sock
    finally:
        sock.close()


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)


def best_effort_send(sock, data):
    """Send at the end of a test: the peer may already have closed, which is not the point."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


# ------------------------------------------------------------ fasttls client vs s_server


@pytest.mark.parametrize("version", VERSIONS)
def test_client_against_s_server(openssl, tmp_path, identity, version):
    with s_server(openssl, tmp_path, identity, "-rev", VERSION_FLAG[version]) as (proc, port, _):
        tls = fasttls.newtls("client", client_ctx(identity), "localhost")
        with connect(port) as sock:
            socket_handshake(sock, tls, client=True)
            assert tls.version() == VERSION_NAME[version]
            assert tls.getpeercert(binary_form=True) == identity.leaf_der
            assert ("DNS", "localhost") in tls.getpeercert()["subjectAltName"]
            if version == TLS12:
                assert ("ECDSA" in tls.cipher()[0]) == (identity.key_type == "ecdsa")

            sock.sendall(tls.write(b"hello fasttls\n"))
            echoed = socket_read_until(sock, tls, lambda got: b"\n" in got)
            assert echoed.strip() == b"hello fasttls"[::-1]

            # "CLOSE" makes s_server shut the connection down cleanly: close_notify
            sock.sendall(tls.write(b"CLOSE\n"))
            assert socket_read_until(sock, tls, lambda got: False) == b""
            assert tls.eof
            best_effort_send(sock, tls.close())


def test_client_large_lines_against_s_server(openssl, tmp_path, identities):
    """Many lines written in one go, echoed back reversed line by line."""
    identity = identities["ecdsa"]
    lines = [b"%04d:" % i + bytes(range(65, 91)) * 10 for i in range(300)]
    with s_server(openssl, tmp_path, identity, "-rev") as (proc, port, _):
        tls = fasttls.newtls("client", client_ctx(identity), "localhost")
        with connect(port) as sock:
            socket_handshake(sock, tls, client=True)
            sock.sendall(tls.write(b"".join(line + b"\n" for line in lines)))
            echoed = socket_read_until(sock, tls, lambda got: got.count(b"\n") >= len(lines))
            assert echoed.split(b"\n")[:len(lines)] == [line[::-1] for line in lines]
            best_effort_send(sock, tls.close())


def test_client_rejects_s_server_certificate(openssl, tmp_path, identities, stranger_identity):
    """Verification fails on our side; the alert we hand out reaches s_server, which reports
    it."""
    with s_server(openssl, tmp_path, stranger_identity, "-rev") as (proc, port, stderr_path):
        tls = fasttls.newtls("client", client_ctx(identities["ecdsa"]), "localhost")
        with connect(port) as sock:
            with pytest.raises(fasttls.SSLCertVerificationError) as info:
                socket_handshake(sock, tls, client=True)
            assert "unable to get local issuer certificate" in str(info.value)
            assert info.value.alert
            sock.sendall(info.value.alert)
            proc.wait(timeout=PROCESS_TIMEOUT)  # -naccept 1: it ends after this connection
        assert "alert unknown ca" in stderr_path.read_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_client_certificate_to_s_server(openssl, tmp_path, identities, client_identity,
                                        version):
    identity = identities["rsa"]
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(client_identity.ca_pem)
    args = ("-rev", "-Verify", "1", "-CAfile", str(client_ca), VERSION_FLAG[version])
    with s_server(openssl, tmp_path, identity, *args) as (proc, port, _):
        cctx = client_ctx(identity)
        cctx.set_cert(client_identity.chain_pem, client_identity.key_pem)
        tls = fasttls.newtls("client", cctx, "localhost")
        with connect(port) as sock:
            socket_handshake(sock, tls, client=True)
            sock.sendall(tls.write(b"abc\n"))
            assert socket_read_until(sock, tls, lambda got: b"\n" in got).strip() == b"cba"
            best_effort_send(sock, tls.close())


def test_missing_client_certificate_to_s_server(openssl, tmp_path, identities,
                                                client_identity):
    """TLS 1.3: the client finishes first; s_server's certificate_required alert then arrives as
    an error naming it."""
    identity = identities["rsa"]
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(client_identity.ca_pem)
    args = ("-rev", "-Verify", "1", "-CAfile", str(client_ca), "-tls1_3")
    with s_server(openssl, tmp_path, identity, *args) as (proc, port, _):
        tls = fasttls.newtls("client", client_ctx(identity), "localhost")
        with connect(port) as sock:
            socket_handshake(sock, tls, client=True)
            with pytest.raises(fasttls.SSLError) as info:
                socket_read_until(sock, tls, lambda got: False)
            assert info.value.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"


# ------------------------------------------------------------ fasttls server vs s_client


def serve_one(server_sock, tls):
    """Accept one connection, handshake, expect "hello\\n", answer "world\\n" and close_notify,
    then read until the peer's close_notify (or TCP end). Returns the connection's tls."""
    conn, _ = server_sock.accept()
    with conn:
        conn.settimeout(SOCKET_TIMEOUT)
        socket_handshake(conn, tls, client=False)
        request = socket_read_until(conn, tls, lambda got: b"\n" in got)
        assert request == b"hello\n"
        conn.sendall(tls.write(b"world\n") + tls.close())
        assert socket_read_until(conn, tls, lambda got: False) == b""
    return tls


@pytest.mark.parametrize("version", VERSIONS)
def test_server_against_s_client(openssl, tmp_path, identity, version):
    cafile = identity.write(tmp_path)["ca"]
    tls = fasttls.newtls("server", server_ctx(identity))
    with listener() as server_sock:
        port = server_sock.getsockname()[1]
        args = ("-CAfile", str(cafile), "-servername", "localhost", "-verify_return_error",
                VERSION_FLAG[version])
        with s_client(openssl, tmp_path, port, b"hello\n", *args) as (proc, out_path):
            serve_one(server_sock, tls)
            assert proc.wait(timeout=PROCESS_TIMEOUT) == 0
            output = out_path.read_text(errors="replace")
    assert tls.eof, "s_client answers our close_notify with its own"
    assert tls.version() == VERSION_NAME[version]
    assert "Verify return code: 0 (ok)" in output
    assert f"{VERSION_NAME[version]}, Cipher is {tls.cipher()[0]}" in output
    assert re.search(r"^world$", output, re.MULTILINE), output


def test_s_client_with_certificate_and_alpn(openssl, tmp_path, identities, client_identity):
    identity = identities["ecdsa"]
    paths = identity.write(tmp_path)
    (tmp_path / "client").mkdir()
    client_paths = client_identity.write(tmp_path / "client")
    sctx = server_ctx(identity, verify_mode=ssl.CERT_REQUIRED, cadata=client_identity.ca_pem,
                      alpn_protocols=["http/1.1", "h2"])
    tls = fasttls.newtls("server", sctx)
    with listener() as server_sock:
        port = server_sock.getsockname()[1]
        args = ("-CAfile", str(paths["ca"]), "-servername", "localhost", "-verify_return_error",
                "-cert", str(client_paths["cert"]), "-key", str(client_paths["key"]),
                "-alpn", "h2,http/1.1")
        with s_client(openssl, tmp_path, port, b"hello\n", *args) as (proc, out_path):
            serve_one(server_sock, tls)
            proc.wait(timeout=PROCESS_TIMEOUT)
            output = out_path.read_text(errors="replace")
    assert "ALPN protocol: http/1.1" in output
    assert tls.selected_alpn_protocol() == "http/1.1"
    assert tls.getpeercert(binary_form=True) == client_identity.leaf_der
    assert ("DNS", "client.example") in tls.getpeercert()["subjectAltName"]


def test_s_client_rejects_wrong_name(openssl, tmp_path, identities):
    """s_client checking a name our certificate lacks aborts; our server gets its alert as an
    error naming it."""
    identity = identities["rsa"]
    cafile = identity.write(tmp_path)["ca"]
    tls = fasttls.newtls("server", server_ctx(identity))
    with listener() as server_sock:
        port = server_sock.getsockname()[1]
        args = ("-CAfile", str(cafile), "-verify_hostname", "other.example",
                "-verify_return_error", "-tls1_3")
        with s_client(openssl, tmp_path, port, b"", *args) as (proc, out_path):
            conn, _ = server_sock.accept()
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                with pytest.raises(fasttls.SSLError) as info:
                    socket_handshake(conn, tls, client=False)
                    socket_read_until(conn, tls, lambda got: False)
            proc.wait(timeout=PROCESS_TIMEOUT)
    assert info.value.reason == "SSLV3_ALERT_BAD_CERTIFICATE"


def test_key_update_from_s_client(openssl, tmp_path, identities):
    """TLS 1.3 KeyUpdate (s_client's "K" command: update and request ours): reading it leaves
    our own KeyUpdate pending (write() flushes it), data after it is still read, and what we
    write afterwards is still read by s_client."""
    identity = identities["ecdsa"]
    cafile = identity.write(tmp_path)["ca"]
    tls = fasttls.newtls("server", server_ctx(identity))
    with listener() as server_sock:
        port = server_sock.getsockname()[1]
        args = ("-CAfile", str(cafile), "-servername", "localhost", "-verify_return_error",
                "-tls1_3")
        with s_client(openssl, tmp_path, port, b"hello\n", *args, interactive=True) as (
                proc, out_path):
            conn, _ = server_sock.accept()
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                socket_handshake(conn, tls, client=False)
                assert socket_read_until(conn, tls, lambda got: b"\n" in got) == b"hello\n"
                # one command per write, each only after the previous one had its effect
                proc.stdin.write(b"K\n")
                proc.stdin.flush()
                # reading the KeyUpdate (update_requested) produces our KeyUpdate: pending
                for _ in range(MAX_STEPS):
                    data = conn.recv(65536)
                    assert data, "s_client closed the connection"
                    assert tls.read(data) == b""
                    if tls.pending_output:
                        break
                reply = tls.write()
                assert reply
                assert not tls.pending_output
                conn.sendall(reply)
                proc.stdin.write(b"again\n")
                proc.stdin.flush()
                assert socket_read_until(conn, tls, lambda got: b"\n" in got) == b"again\n"
                conn.sendall(tls.write(b"world\n") + tls.close())
                assert socket_read_until(conn, tls, lambda got: False) == b""
            proc.wait(timeout=PROCESS_TIMEOUT)
            output = out_path.read_text(errors="replace")
    assert "KEYUPDATE" in output
    assert re.search(r"^world$", output, re.MULTILINE), output
