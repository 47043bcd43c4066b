"""Socket I/O inside the engine (TLS.recv_from, send_to, handshake_on over a file descriptor),
against real peers on loopback: the stdlib `ssl` (SSLSocket, or SSLObject over memory BIOs
driven by hand where the test must place record boundaries) and `openssl s_server`.

Covered: records split across receives, 16 MiB both ways at once (full duplex), non-blocking
want-read / want-write, the three timeouts, close_notify against a bare TCP EOF, the KeyUpdate
reply sent by a receive, a signal interrupting a blocked receive (EINTR, retried), and a closed
descriptor (OSError, no crash). Every blocking call has a timeout, every loop a bound, every
thread a join with a timeout."""
import hashlib
import os
import select
import signal
import socket
import ssl
import threading

import pytest

import fasttls
from support.openssl_server import OpenSSLServer
from support.peers import bio_handshake_over_socket, loopback_pair
from support.requires import require_program

TIMEOUT_MS = 10_000  # the engine's waits in tests that are not about timeouts
JOIN = 30.0
MAX_STEPS = 10_000
BIG = 16 << 20


def client_ctx(ca):
    return fasttls.newctx(cadata=ca.cert_pem.bytes())


def server_ctx(cert):
    ctx = fasttls.newctx()
    ctx.set_cert(b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes())
    return ctx


def stdlib_server_ctx(cert, tickets=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    if not tickets:
        ctx.num_tickets = 0
    return ctx


class Thread(threading.Thread):
    """fn(*args) in a daemon thread; finish() joins (bounded) and re-raises its error."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.result, self.error = fn, args, None, None
        self.start()

    def run(self):
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # handed over by finish()
            self.error = exc

    def finish(self):
        self.join(JOIN)
        assert not self.is_alive(), "thread did not finish in time (deadlock?)"
        if self.error is not None:
            raise self.error
        return self.result


@pytest.fixture
def pair():
    c, s = loopback_pair()
    yield c, s
    c.close()
    s.close()


def connect(ca, cert, pair, serve, tickets=True):
    """A fasttls client over pair[0], handshaken with the engine; the stdlib server on pair[1]
    runs serve(ssl_socket) in a thread. Returns (tls, fd, server thread)."""
    c, s = pair

    def server():
        with stdlib_server_ctx(cert, tickets).wrap_socket(s, server_side=True) as tls:
            return serve(tls)

    peer = Thread(server)
    tls = fasttls.newtls("client", client_ctx(ca), "localhost")
    assert tls.handshake_on(c.fileno(), TIMEOUT_MS) is True
    return tls, c.fileno(), peer


def recv_exactly(tls, fd, n, timeout_ms=TIMEOUT_MS):
    got = bytearray()
    for _ in range(MAX_STEPS):
        if len(got) >= n:
            return bytes(got)
        data = tls.recv_from(fd, timeout_ms)
        assert data, "the connection ended early"
        got += data
    raise AssertionError("receive loop did not end")


def wait_readable(sock):
    assert select.select([sock], [], [], JOIN / 2)[0], "nothing arrived"


# ---- records and transfers ----

def test_records_split_across_receives(ca, server_cert, pair):
    """A record whose header and body arrive in pieces: nothing (None) until it is whole, then
    its plaintext, with no byte lost between the receives."""
    c, s = pair
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    peer_obj = stdlib_server_ctx(server_cert, tickets=False).wrap_bio(
        incoming, outgoing, server_side=True)
    peer = Thread(bio_handshake_over_socket, s, peer_obj, incoming, outgoing)
    tls = fasttls.newtls("client", client_ctx(ca), "localhost")
    assert tls.handshake_on(c.fileno(), TIMEOUT_MS)
    peer.finish()
    payload = os.urandom(5000)
    peer_obj.write(payload)
    record = outgoing.read()
    for piece in (record[:3], record[3:5], record[5:-1]):
        s.sendall(piece)
        wait_readable(c)
        assert tls.recv_from(c.fileno(), 0) is None  # incomplete: would block
    s.sendall(record[-1:])
    assert tls.recv_from(c.fileno(), TIMEOUT_MS) == payload
    # Two records in one segment, read with size: the rest stays buffered in the TLS object.
    peer_obj.write(b"first")
    peer_obj.write(b"second")
    s.sendall(outgoing.read())
    assert tls.recv_from(c.fileno(), TIMEOUT_MS, 3) == b"fir"
    assert tls.pending >= 2
    assert recv_exactly(tls, c.fileno(), 8) == b"stsecond"


def test_16_mib_both_ways_full_duplex(ca, server_cert, pair):
    """One thread sends 16 MiB while another receives the echo, on one connection: the engine
    takes its lock only around the TLS work, never while blocked on the socket."""
    def echo(tls):
        while True:
            data = tls.recv(1 << 16)
            if not data:
                return
            tls.sendall(data)

    tls, fd, peer = connect(ca, server_cert, pair, echo)
    tls.enable_duplex()
    data = os.urandom(1 << 20) * 16
    expected = hashlib.sha256(data).hexdigest()

    def send():
        view = memoryview(data)
        for i in range(0, BIG, 1 << 20):
            assert tls.send_to(fd, view[i:i + (1 << 20)], TIMEOUT_MS) == 0

    writer = Thread(send)
    received = recv_exactly(tls, fd, BIG)
    writer.finish()
    assert hashlib.sha256(received).hexdigest() == expected
    pair[0].sendall(tls.close())
    pair[0].shutdown(socket.SHUT_WR)
    peer.finish()


def test_16_mib_as_server_against_stdlib_client(ca, server_cert, pair):
    """The server role, one direction at a time: 16 MiB in, then 16 MiB out."""
    c, s = pair
    data = os.urandom(1 << 20) * 16

    def client():
        with ssl.create_default_context(cadata=ca.cert_pem.bytes().decode()).wrap_socket(
                c, server_hostname="localhost") as tls:
            tls.sendall(data)
            got = bytearray()
            while len(got) < BIG:
                more = tls.recv(1 << 16)
                assert more
                got += more
            return hashlib.sha256(got).hexdigest()

    peer = Thread(client)
    tls = fasttls.newtls("server", server_ctx(server_cert))
    assert tls.handshake_on(s.fileno(), TIMEOUT_MS)
    assert recv_exactly(tls, s.fileno(), BIG) == data
    assert tls.send_to(s.fileno(), data, TIMEOUT_MS) == 0
    assert peer.finish() == hashlib.sha256(data).hexdigest()


# ---- non-blocking ----

def test_nonblocking_handshake_reports_its_direction(ca, server_cert, pair):
    c, s = pair
    peer = Thread(lambda: stdlib_server_ctx(server_cert).wrap_socket(s, server_side=True))
    tls = fasttls.newtls("client", client_ctx(ca), "localhost")
    for _ in range(MAX_STEPS):
        if tls.handshake_on(c.fileno(), 0):
            break
        if tls.wants_write:
            assert select.select([], [c], [], JOIN / 2)[1]
        else:
            wait_readable(c)
    else:
        raise AssertionError("the handshake did not finish")
    assert tls.finished() and tls.version() == "TLSv1.3"
    peer.finish().close()


def test_nonblocking_want_read_and_want_write(ca, server_cert, pair):
    """With timeout 0: None when nothing arrived; a send the socket cannot take returns what is
    left (kept in the engine, `unsent`), and flushing later sends it all, in order."""
    c, s = pair
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    release = threading.Event()

    def slow_reader(tls):
        release.wait(JOIN)
        got = bytearray()
        while len(got) < (4 << 20):
            got += tls.recv(1 << 16)
        return hashlib.sha256(got).hexdigest()

    tls, fd, peer = connect(ca, server_cert, pair, slow_reader)
    assert tls.recv_from(fd, 0) is None  # want-read (tickets, if any, came and went)
    data = os.urandom(4 << 20)
    left = tls.send_to(fd, data, 0)
    assert 0 < left == tls.unsent  # want-write: the socket is full
    assert tls.send_to(fd, b"", 0) == tls.unsent > 0  # still full: nothing lost, nothing moved
    release.set()
    for _ in range(MAX_STEPS):
        assert select.select([], [c], [], JOIN / 2)[1]
        if tls.send_to(fd, b"", 0) == 0:
            break
    else:
        raise AssertionError("the flush did not end")
    assert tls.unsent == 0
    assert peer.finish() == hashlib.sha256(data).hexdigest()


# ---- timeouts ----

def test_receive_timeout(ca, server_cert, pair):
    release = threading.Event()
    tls, fd, peer = connect(ca, server_cert, pair, lambda t: release.wait(JOIN))
    with pytest.raises(socket.timeout, match="read operation timed out"):
        tls.recv_from(fd, 200)
    assert tls.state is fasttls.State.OPEN  # a timeout is not a failure
    release.set()
    peer.finish()


def test_send_timeout(ca, server_cert, pair):
    c, s = pair
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    release = threading.Event()
    tls, fd, peer = connect(ca, server_cert, pair, lambda t: release.wait(JOIN))
    with pytest.raises(socket.timeout, match="write operation timed out"):
        tls.send_to(fd, os.urandom(16 << 20), 200)
    assert tls.unsent > 0  # what the socket did not take waits in the engine
    release.set()
    peer.finish()


def test_handshake_timeout(ca, pair):
    c, _ = pair  # the server end accepts TCP and never speaks TLS
    tls = fasttls.newtls("client", client_ctx(ca), "localhost")
    with pytest.raises(socket.timeout, match="handshake operation timed out"):
        tls.handshake_on(c.fileno(), 200)


# ---- the end of a connection ----

def test_close_notify_then_our_reply(ca, server_cert, pair):
    tls, fd, peer = connect(ca, server_cert, pair, lambda t: (t.sendall(b"bye"), t.unwrap()))
    assert recv_exactly(tls, fd, 3) == b"bye"
    assert tls.recv_from(fd, TIMEOUT_MS) == b""  # close_notify
    assert tls.eof and tls.eof_returned
    assert tls.recv_from(fd, 0) == b""  # from then on: no more I/O, still b""
    pair[0].sendall(tls.close())  # the stdlib's unwrap() waits for ours
    peer.finish()


def test_tcp_eof_without_close_notify_is_truncation(ca, server_cert, pair):
    def hang_up(t):
        t.sendall(b"partial")
        t.shutdown(socket.SHUT_WR)  # TCP FIN, no close_notify

    tls, fd, peer = connect(ca, server_cert, pair, hang_up)
    peer.finish()
    assert recv_exactly(tls, fd, 7) == b"partial"
    with pytest.raises(fasttls.SSLEOFError) as info:
        tls.recv_from(fd, TIMEOUT_MS)
    assert isinstance(info.value, ssl.SSLEOFError)
    assert not tls.eof


def test_keyupdate_reply_sent_by_the_receive(ca, server_cert, tmp_path):
    """s_server sends a KeyUpdate asking for ours, then data: the receive that decrypts them
    sends our KeyUpdate itself, before we write anything."""
    openssl = require_program("openssl")
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    server_cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    srv = OpenSSLServer(openssl, tmp_path, "-tls1_3", "-num_tickets", "0")
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=JOIN) as sock:
            tls = fasttls.newtls("client", client_ctx(ca), "localhost")
            assert tls.handshake_on(sock.fileno(), TIMEOUT_MS)
            srv.command(b"K\n")
            srv.wait_for(lambda line: line.startswith(">>>") and "KeyUpdate" in line,
                         "its KeyUpdate going out")
            srv.command(b"after key update\n")
            got = b""
            for _ in range(MAX_STEPS):
                if got.endswith(b"\n"):
                    break
                got += tls.recv_from(sock.fileno(), TIMEOUT_MS)
            assert got == b"after key update\n"
            assert tls.unsent == 0  # the reply left inside the receive
            srv.wait_for(lambda line: line.startswith("<<<") and "KeyUpdate" in line,
                         "our KeyUpdate reply (sent by the receive)")
            assert tls.send_to(sock.fileno(), b"new keys work\n", TIMEOUT_MS) == 0
            srv.wait_for(lambda line: "new keys work" in line, "our data after the update")
    finally:
        srv.stop()


# ---- system calls ----

@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_signal_during_a_blocked_receive_is_retried(ca, server_cert, pair):
    """A signal interrupts the engine's recv() (EINTR): Python runs the handler, and the
    receive goes on to return the data that comes afterwards (PEP 475)."""
    handled = threading.Event()
    main = threading.main_thread().ident
    assert threading.get_ident() == main, "signals are delivered to the main thread"
    go = threading.Event()

    def late_sender(t):
        go.wait(JOIN)
        for _ in range(100):  # until the handler ran (bounded)
            signal.pthread_kill(main, signal.SIGUSR1)
            if handled.wait(0.05):
                break
        t.sendall(b"after the signal")
        t.recv(1)  # until our end closes

    previous = signal.signal(signal.SIGUSR1, lambda *args: handled.set())
    try:
        tls, fd, peer = connect(ca, server_cert, pair, late_sender, tickets=False)
        go.set()
        assert recv_exactly(tls, fd, 16, timeout_ms=-1) == b"after the signal"
        assert handled.is_set()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    pair[0].close()
    peer.finish()


def _recv_until_closed(t):
    """The peer's side of a connection whose other end closes its descriptor: the end may come
    as a reset (the client's unread session tickets), which is not what the test checks."""
    try:
        t.recv(1)
    except (ConnectionResetError, ssl.SSLEOFError):
        pass


def test_closed_descriptor_is_an_oserror(ca, server_cert, pair):
    tls, fd, peer = connect(ca, server_cert, pair, _recv_until_closed)
    pair[0].close()  # fd is no longer open
    with pytest.raises(OSError) as info:
        tls.recv_from(fd, 0)
    assert info.value.errno == 9  # EBADF
    with pytest.raises(OSError):
        tls.send_to(fd, b"data", 0)
    with pytest.raises(OSError):
        fasttls.newtls("client", client_ctx(ca), "localhost").handshake_on(fd, 0)
    peer.finish()
