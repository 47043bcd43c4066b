"""Issue 7's behaviours of the drop-in, each against a real peer: the stdlib `ssl` on the other
end of a loopback socket or of a pair of memory BIOs.

Security: hostnames the stdlib refuses, sessions bound to their context, the session cache
never resuming across verification settings, `SSLObject.context` changing the handshake.
Data: full duplex from two threads, concurrent misuse detected, bounded non-blocking writes,
unwrap() leaving what follows close_notify, fatal alerts after the handshake."""
import hashlib
import os
import select
import socket
import ssl
import threading
import time

import pytest
import trustme

import fasttls
from support.peers import MAX_STEPS, ThreadedServer, bio_handshake_over_socket

DEADLINE = 60  # seconds: every blocking step of these tests is bounded by it


def _client_context(ca, **attributes):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    for name, value in attributes.items():
        setattr(ctx, name, value)
    return ctx


def _stdlib_server_context(server_cert):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(ctx)
    return ctx


def _echo(tls):
    while True:
        data = tls.recv(65536)
        if not data:
            break
        tls.sendall(data)


def _connect(ctx, port, hostname="localhost"):
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    return ctx.wrap_socket(raw, server_hostname=hostname)


# ---- security ----

@pytest.mark.parametrize("hostname", ["", ".example.com", ".localhost"])
def test_hostnames_the_stdlib_refuses(ca, hostname):
    ctx = _client_context(ca, check_hostname=False)  # else "" fails earlier, as in the stdlib
    std = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    std.check_hostname = False
    for context in (std, ctx):  # ".example.com" fails IDNA encoding first, a ValueError too
        with pytest.raises(ValueError):
            context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname=hostname)
    with pytest.raises(ValueError, match="leading dot"):
        fasttls.newtls("client", fasttls.newctx(), hostname)


def test_session_of_another_context_is_refused(ca, server_cert):
    server = ThreadedServer(_stdlib_server_context(server_cert), 1, _echo)
    ctx = _client_context(ca)
    with _connect(ctx, server.port) as tls:
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"
        session = tls.session
    server.join()
    with pytest.raises(ValueError, match="different SSLContext"):
        _client_context(ca).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(),
                                     server_hostname="localhost", session=session)


def test_session_cache_never_skips_verification(ca, server_cert):
    """A session made without verification is not resumed once the context verifies: the
    resumed handshake would carry no certificate check at all."""
    untrusted = trustme.CA()  # the context will trust this CA only: the server must fail
    server = ThreadedServer(_stdlib_server_context(server_cert), 2, _echo)
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # the session is ready after the handshake
    with _connect(ctx, server.port) as tls:
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    untrusted.configure_trust(ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        _connect(ctx, server.port)
    server.join()


def test_session_cache_follows_verify_flags(ca, server_cert):
    """A session verified without CRL checks is not resumed once the context demands them:
    the new flags would never be applied."""
    server = ThreadedServer(_stdlib_server_context(server_cert), 2, _echo)
    ctx = _client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    with _connect(ctx, server.port) as tls:
        tls.sendall(b"ping")
        assert tls.recv(4) == b"ping"
    ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF  # no CRL loaded: verification must fail
    with pytest.raises(ssl.SSLCertVerificationError, match="CRL"):
        _connect(ctx, server.port)
    server.join()


def test_setting_context_changes_verification(ca, server_cert):
    """SSLObject.context set before the handshake: the new context's trust store verifies."""
    server_side = _stdlib_server_context(server_cert)
    trusting, distrusting = _client_context(ca), _client_context(trustme.CA())
    for first, second, fails in ((trusting, distrusting, True), (distrusting, trusting, False)):
        client = _Memory(first, server_hostname="localhost")
        client.obj.context = second
        assert client.obj.context is second
        server = _Memory(server_side, server_side=True)
        if fails:
            with pytest.raises(ssl.SSLCertVerificationError):
                _memory_handshake(client, server)
        else:
            _memory_handshake(client, server)


class _Memory:
    """An SSLObject with its two memory BIOs."""

    def __init__(self, ctx, **kwargs):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, **kwargs)


def _memory_handshake(client, server, limit=50):
    """Shuttle bytes between two _Memory ends until both finished the handshake."""
    done = [False, False]
    for _ in range(limit):
        for i, (end, peer) in enumerate(((client, server), (server, client))):
            if not done[i]:
                try:
                    end.obj.do_handshake()
                    done[i] = True
                except ssl.SSLWantReadError:
                    pass
            data = end.outgoing.read()
            if data:
                peer.incoming.write(data)
        if all(done):
            return
    raise AssertionError("handshake did not finish")


# ---- data integrity and concurrency ----

def test_full_duplex_from_two_threads(ca, server_cert):
    """One thread in recv(), another in sendall(), 32 MiB through an echo server."""
    total = 32 * 2**20
    payload = os.urandom(2**20)
    server = ThreadedServer(_stdlib_server_context(server_cert), 1, _echo)
    tls = _connect(_client_context(ca), server.port)
    received = hashlib.sha256()
    count = [0]
    errors = []

    def reader():
        try:
            while count[0] < total:
                data = tls.recv(65536)
                if not data:
                    break
                received.update(data)
                count[0] += len(data)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    sent = hashlib.sha256()
    for _ in range(total // len(payload)):
        tls.sendall(payload)
        sent.update(payload)
    thread.join(DEADLINE)
    assert not thread.is_alive() and not errors, errors
    assert count[0] == total
    assert received.hexdigest() == sent.hexdigest()
    tls.close()
    server.join()


def test_two_readers_at_once_are_refused(ca, server_cert):
    release = threading.Event()

    def silent(tls):
        release.wait(DEADLINE)

    server = ThreadedServer(_stdlib_server_context(server_cert), 1, silent)
    tls = _connect(_client_context(ca), server.port)
    tls.settimeout(5)
    ended = []  # how the first reader's recv() ended, checked here (not in its thread)

    def first_reader():
        try:
            ended.append(tls.recv(10))
        except OSError as exc:
            ended.append(exc)

    first = threading.Thread(target=first_reader, daemon=True)
    first.start()
    for _ in range(100):  # until the first reader is blocked in recv()
        if tls._sslobj._receiving.locked():
            break
        threading.Event().wait(0.02)
    with pytest.raises(ssl.SSLError, match="another thread is already reading"):
        tls.recv(10)
    release.set()
    first.join(DEADLINE)
    assert not first.is_alive()
    # The server ends the connection: the first reader sees its end (b"" after close_notify,
    # or an error), undisturbed by the refused second reader.
    assert ended and (ended[0] == b"" or isinstance(ended[0], OSError)), ended
    tls.close()
    server.join()


def test_nonblocking_send_reports_only_what_left(ca, server_cert):
    """A peer that does not read: send() raises SSLWantWriteError once the kernel is full,
    keeps at most one chunk, and every byte reported as sent reaches the peer."""
    go = threading.Event()
    got = hashlib.sha256()
    got_count = [0]

    def slow_reader(tls):
        go.wait(DEADLINE)
        while True:
            data = tls.recv(65536)
            if not data:
                break
            got.update(data)
            got_count[0] += len(data)

    server = ThreadedServer(_stdlib_server_context(server_cert), 1, slow_reader)
    tls = _connect(_client_context(ca), server.port)
    tls.setblocking(False)
    payload = os.urandom(256 * 1024)
    reported = 0
    sent = hashlib.sha256()
    for _ in range(10_000):
        try:
            n = tls.send(payload)
        except ssl.SSLWantWriteError:
            break
        sent.update(payload[:n])
        reported += n
    else:
        raise AssertionError("the socket never filled up")
    assert len(tls._sslobj._transport.unsent) <= 17 * 1024  # one chunk, not the backlog
    go.set()
    tls.setblocking(True)
    tls.settimeout(DEADLINE)
    n = tls.send(payload)  # the retried write finishes the chunk it had encrypted
    sent.update(payload[:n])
    reported += n
    tls.unwrap()
    tls.close()
    server.join()
    assert got_count[0] == reported
    assert got.hexdigest() == sent.hexdigest()


def test_unwrap_leaves_what_follows_close_notify(ca, server_cert):
    """The server's close_notify and plain bytes after it arrive in one segment: unwrap()
    stops at the end of the close_notify record, the plain bytes stay in the socket."""
    server_ctx = _stdlib_server_context(server_cert)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE)
    port = listener.getsockname()[1]
    errors = []

    def serve():
        try:
            raw, _ = listener.accept()
            raw.settimeout(DEADLINE)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
            bio_handshake_over_socket(raw, obj, incoming, outgoing)
            for _ in range(MAX_STEPS):  # until the client's close_notify (read() returns b"")
                try:
                    if not obj.read(1024):
                        break
                except ssl.SSLWantReadError:
                    data = raw.recv(65536)
                    if not data:  # else want-read forever on an empty BIO
                        raise AssertionError("TCP ended before the client's close_notify")
                    incoming.write(data)
            else:
                raise AssertionError("no close_notify from the client")
            try:
                obj.unwrap()
            except ssl.SSLWantReadError:
                pass
            raw.sendall(outgoing.read() + b"PLAIN AFTER TLS")
            raw.recv(1)
            raw.close()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    tls = _connect(_client_context(ca), port)
    plain = tls.unwrap()
    assert plain.recv(100) == b"PLAIN AFTER TLS"
    plain.close()
    thread.join(DEADLINE)
    listener.close()
    assert not thread.is_alive() and not errors, errors


def test_nonblocking_unwrap_with_a_split_record_header(ca, server_cert):
    """The peer's close_notify arrives in pieces (its header split) on a non-blocking socket:
    unwrap() raises want-read in between without losing the piece it has, and stops at the
    end of the record; the plain bytes behind it stay in the socket."""
    server_ctx = _stdlib_server_context(server_cert)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE)
    port = listener.getsockname()[1]
    client_closed = threading.Event()
    errors = []

    def serve():
        try:
            raw, _ = listener.accept()
            raw.settimeout(DEADLINE)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = server_ctx.wrap_bio(incoming, outgoing, server_side=True)
            bio_handshake_over_socket(raw, obj, incoming, outgoing)
            client_closed.wait(DEADLINE)
            try:
                obj.unwrap()
            except ssl.SSLWantReadError:
                pass
            close_notify = outgoing.read()
            for piece in (close_notify[:3], close_notify[3:] + b"PLAIN AFTER TLS"):
                raw.sendall(piece)
                time.sleep(0.2)
            raw.recv(1)
            raw.close()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    tls = _connect(_client_context(ca), port)
    tls.setblocking(False)
    plain = None
    for _ in range(200):
        try:
            plain = tls.unwrap()
            break
        except ssl.SSLWantReadError:
            client_closed.set()  # our close_notify is out
            select.select([tls], [], [], 1)
    assert plain is not None, "unwrap() did not finish"
    plain.setblocking(True)
    plain.settimeout(DEADLINE)
    assert plain.recv(100) == b"PLAIN AFTER TLS"
    plain.close()
    thread.join(DEADLINE)
    listener.close()
    assert not thread.is_alive() and not errors, errors


def test_unwrap_leaves_the_rest_in_the_incoming_bio(ca, server_cert):
    client = _Memory(_client_context(ca), server_hostname="localhost")
    server = _Memory(_stdlib_server_context(server_cert), server_side=True)
    _memory_handshake(client, server)
    with pytest.raises(ssl.SSLWantReadError):
        client.obj.unwrap()  # our close_notify out, the peer's awaited
    server.incoming.write(client.outgoing.read())
    server.obj.unwrap()
    client.incoming.write(server.outgoing.read() + b"PLAIN AFTER TLS")
    client.obj.unwrap()
    assert client.incoming.read() == b"PLAIN AFTER TLS"


def test_helpers_send_the_fatal_alert_after_the_handshake(ca, server_cert):
    """A forged record after the handshake: the fasttls helpers server sends bad_record_mac
    before raising, as it does during the handshake (RFC 8446 section 5.2)."""
    chain = b"".join(blob.bytes() for blob in server_cert.cert_chain_pems)
    server_ctx = fasttls.newctx(certfile=chain, keyfile=server_cert.private_key_pem.bytes())
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(DEADLINE)
    port = listener.getsockname()[1]
    raised = []

    def serve():
        raw, _ = listener.accept()
        raw.settimeout(DEADLINE)
        tls = fasttls.newtls("server", server_ctx)
        try:
            fasttls.init_responsefunc(raw, tls)()
            fasttls.readfunc(raw, tls)()
        except fasttls.SSLError as exc:
            raised.append(exc)
        finally:
            raw.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ctx = ssl.create_default_context(cafile=None)
    ca.configure_trust(ctx)
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    bio_handshake_over_socket(raw, obj, incoming, outgoing)
    obj.write(b"hello")
    forged = bytearray(outgoing.read())
    forged[-1] ^= 0x01
    raw.sendall(bytes(forged))
    with pytest.raises(ssl.SSLError, match="BAD_RECORD_MAC|bad record mac|TLSV1_ALERT|DECRYPT"):
        for _ in range(100):  # the tickets, then the alert; the server closes after it
            try:
                obj.read(1024)
            except ssl.SSLWantReadError:
                data = raw.recv(65536)
                if not data:
                    break
                incoming.write(data)
    thread.join(DEADLINE)
    listener.close()
    assert raised, "the server did not fail"
    assert any(word in str(raised[0]).lower() for word in ("bad", "decrypt", "mac")), raised


def test_memory_bio_write_takes_everything(ca, server_cert):
    """A MemoryBIO never refuses ciphertext: SSLObject.write() encrypts all it is given and
    returns its length, as the stdlib's (only a non-blocking socket writes in chunks)."""
    client = _Memory(_client_context(ca), server_hostname="localhost")
    server = _Memory(_stdlib_server_context(server_cert), server_side=True)
    _memory_handshake(client, server)
    payload = os.urandom(1 << 20)
    assert client.obj.write(payload) == len(payload)
    server.incoming.write(client.outgoing.read())
    received = bytearray()
    while len(received) < len(payload):
        received += server.obj.read(65536)
    assert bytes(received) == payload
