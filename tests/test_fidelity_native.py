"""Issue 7's behaviours of the native API and the socket helpers, each against a real peer (the
stdlib `ssl` over loopback sockets, or in memory through `ssl.MemoryBIO`).

- A context chosen by sni_callback serves the connection with all of its settings, its verify
  mode included (native and drop-in).
- A TLS 1.3 client that closes right after the handshake: the server's handshake succeeds.
- TLS 1.3 post-handshake client authentication through `TLS`.
- Plaintext given back with `unread()` comes first."""
import socket
import ssl
import threading

import pytest

import fasttls
from support.peers import bio_handshake_over_socket

DEADLINE = 30


def _pem_chain(cert):
    return b"".join(blob.bytes() for blob in cert.cert_chain_pems)


def _native_server_ctx(cert, **options):
    return fasttls.newctx(certfile=_pem_chain(cert), keyfile=cert.private_key_pem.bytes(),
                          **options)


def _memory_pair(client_ctx, server_tls, hostname="localhost"):
    """A stdlib client SSLObject against a fasttls server TLS, with a shuttle function."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(incoming, outgoing, server_hostname=hostname)

    def handshake(limit=20):
        to_server = b""
        for _ in range(limit):
            try:
                client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                client_done = False
            to_server += outgoing.read()
            if not server_tls.finished():
                incoming.write(server_tls.handshake(to_server))
                to_server = b""
            if client_done and server_tls.finished():
                if to_server:
                    server_tls.read(to_server)
                return
        raise AssertionError("handshake did not finish")

    return client, incoming, outgoing, handshake


def _stdlib_client(ca, cert=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


def test_sni_chosen_context_brings_its_verify_mode(ca, server_cert):
    """The default context asks for no client certificate; the one sni_callback chooses
    requires one: a client without a certificate is refused."""
    strict = _native_server_ctx(server_cert, verify_mode=ssl.CERT_REQUIRED)
    strict.load_verify_locations(cadata=ca.cert_pem.bytes())
    lenient = _native_server_ctx(server_cert, check_hostname=False, verify_mode=ssl.CERT_NONE)
    lenient.sni_callback = lambda tls, name: strict if name == "strict.test" else None
    server = fasttls.newtls("server", lenient)
    client_ctx = _stdlib_client(ca)
    client_ctx.check_hostname = False
    client, incoming, outgoing, handshake = _memory_pair(client_ctx, server, "strict.test")
    with pytest.raises((ssl.SSLError, fasttls.SSLError)) as info:
        handshake()
        client.write(b"x")
        server.read(outgoing.read())
    assert "certificate" in str(info.value).lower()
    assert server.context is strict


def test_sni_chosen_context_in_the_dropin(ca, server_cert):
    strict = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(strict)
    strict.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(strict)
    lenient = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(lenient)

    def choose(ssl_object, name, context):
        if name == "strict.test":
            ssl_object.context = strict

    lenient.sni_callback = choose
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = lenient.wrap_bio(s_in, s_out, server_side=True)
    client_ctx = _stdlib_client(ca)
    client_ctx.check_hostname = False
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="strict.test")
    failed = None
    for _ in range(20):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                failed = failed or exc
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if failed:
            break
    if failed is None:  # TLS 1.3: the server learns of the missing certificate on reading
        client.write(b"x")
        s_in.write(c_out.read())
        with pytest.raises(ssl.SSLError, match="(?i)certificate"):
            server.read(10)
    else:
        assert "certificate" in str(failed).lower()
    assert server.context is strict


@pytest.mark.parametrize("api", ["helpers", "dropin"])
def test_client_gone_right_after_the_handshake(ca, server_cert, api):
    """A TLS 1.3 client closes the connection right after its Finished: the server's
    handshake still succeeds (its session tickets may meet EPIPE or a reset, which OpenSSL
    too tolerates), and the end shows on the next read as truncation, not a broken pipe."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE)
    port = listener.getsockname()[1]
    outcome = []

    def serve():
        raw, _ = listener.accept()
        raw.settimeout(DEADLINE)
        try:
            if api == "helpers":
                tls = fasttls.newtls("server", _native_server_ctx(server_cert))
                fasttls.init_responsefunc(raw, tls)()
                outcome.append("handshake done")
                read = fasttls.readfunc(raw, tls)
            else:
                ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                server_cert.configure_cert(ctx)
                tls_socket = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
                outcome.append("handshake done")
                read = tls_socket.recv
            try:
                read(10)
            except (ssl.SSLEOFError, ConnectionResetError):
                outcome.append("end")
        except Exception as exc:
            outcome.append(exc)
        finally:
            raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ctx = _stdlib_client(ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    bio_handshake_over_socket(raw, client, incoming, outgoing)  # the Finished sent last
    raw.close()  # no close_notify, and no reading of the tickets
    thread.join(DEADLINE)
    listener.close()
    assert outcome == ["handshake done", "end"], outcome


def test_post_handshake_auth_through_tls(ca, server_cert):
    """A stdlib client offering post-handshake auth; a fasttls server asks for the certificate
    after the handshake and verifies it."""
    client_cert = ca.issue_cert("client.test")
    server_ctx = _native_server_ctx(server_cert, verify_mode=ssl.CERT_REQUIRED)
    server_ctx.load_verify_locations(cadata=ca.cert_pem.bytes())
    server = fasttls.newtls("server", server_ctx)
    server.enable_post_handshake_auth()
    client_ctx = _stdlib_client(ca, client_cert)
    client_ctx.post_handshake_auth = True
    client, incoming, outgoing, handshake = _memory_pair(client_ctx, server)
    handshake()
    assert server.getpeercert() is None  # not asked for during the handshake
    incoming.write(server.verify_client_post_handshake())
    with pytest.raises(ssl.SSLWantReadError):
        client.read(10)  # processes the CertificateRequest, answers it
    client.write(b"after")
    assert server.read(outgoing.read()) == b"after"
    assert server.getpeercert()["subjectAltName"] == (("DNS", "client.test"),)


def test_post_handshake_auth_refused_before_tls13(ca, server_cert):
    server = fasttls.newtls("server", _native_server_ctx(server_cert,
                                                         verify_mode=ssl.CERT_REQUIRED))
    server.enable_post_handshake_auth()
    client_ctx = _stdlib_client(ca)
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client, incoming, outgoing, handshake = _memory_pair(client_ctx, server)
    with pytest.raises(fasttls.SSLError):
        handshake()  # TLS 1.2 with CERT_REQUIRED: the certificate is asked for at once
    assert server.state is fasttls.State.BROKEN


def test_unread_plaintext_comes_first(ca, server_cert):
    server = fasttls.newtls("server", _native_server_ctx(server_cert))
    client, incoming, outgoing, handshake = _memory_pair(_stdlib_client(ca), server)
    handshake()
    client.write(b"first")
    client.write(b"second")
    data = server.read(outgoing.read(), 5)
    assert data == b"first" and server.pending == 6
    server.unread(data)
    assert server.read() == b"firstsecond"
    assert server.pending == 0


def test_plaintext_kept_when_the_keyupdate_reply_fails(tmp_path, identity):
    """`openssl s_server` sends a line and then a KeyUpdate asking for ours; our write side is
    shut, so sending the reply fails: the line, already decrypted, is still there for the next
    read (before, the failed send dropped it)."""
    import os
    import re
    import select
    import signal
    import subprocess
    import time

    from support.requires import require_program

    openssl = require_program("openssl")
    paths = identity.write(tmp_path)
    proc = subprocess.Popen(
        [openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-tls1_3",
         "-num_tickets", "0",  # no other records than the two below
         "-cert", str(paths["cert"]), "-key", str(paths["key"])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        seen, port = b"", None
        deadline = time.monotonic() + DEADLINE
        while port is None and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1)[0]:
                seen += os.read(proc.stdout.fileno(), 4096)
            match = re.search(rb"ACCEPT 127\.0\.0\.1:(\d+)\s", seen)
            port = int(match.group(1)) if match else None
        assert port, seen
        sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        tls = fasttls.newtls("client", fasttls.newctx(cadata=identity.ca_pem), "localhost")
        fasttls.init_requestfunc(sock, tls)()
        # A line, then "K" on a line of its own (s_server reads each command from one read of its
        # stdin): KeyUpdate, asking for ours.
        for command in (b"hello from s_server\n", b"K\n"):
            proc.stdin.write(command)
            proc.stdin.flush()
            time.sleep(0.3)
        while len(sock.recv(65536, socket.MSG_PEEK)) < 42 + 27:  # both records are here
            assert time.monotonic() < deadline + DEADLINE, "s_server did not send both records"
            time.sleep(0.05)
        # Frozen, s_server cannot answer our FIN with its own close (which, arriving with the
        # records, would end the connection before any reply is due).
        proc.send_signal(signal.SIGSTOP)
        sock.shutdown(socket.SHUT_WR)
        read = fasttls.readfunc(sock, tls)
        with pytest.raises(OSError):  # BrokenPipeError: the reply cannot leave
            read()
        assert read() == b"hello from s_server\n"
        sock.close()
    finally:
        proc.kill()
        proc.wait(DEADLINE)
        proc.stdout.close()
        proc.stdin.close()
