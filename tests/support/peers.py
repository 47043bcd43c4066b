"""Peers of another implementation for fasttls endpoints: a stdlib ``ssl.SSLObject`` over
``ssl.MemoryBIO``, stepped by hand, and a real socket. Every loop is bounded by a count and every
socket has a timeout, so a deadlock or a lost byte shows up as a failure, never as a hang."""
import socket
import ssl
import threading

from support.pump import deliver

SOCKET_TIMEOUT = 10.0  # bounds every blocking socket call
MAX_STEPS = 2000  # bounds every read loop


def pin_version(ctx, version):
    """Restrict a stdlib context to one TLS version (None: leave its range as it is)."""
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def stdlib_server_context(identity, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    identity.leaf.configure_cert(ctx)
    return pin_version(ctx, version)


def stdlib_client_context(identity, version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    identity.ca.configure_trust(ctx)
    return pin_version(ctx, version)


class StdlibPeer:
    """A stdlib ssl.SSLObject over two MemoryBIOs, stepped by hand."""

    def __init__(self, ctx, server_side, hostname=None):
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname
        )
        self.done = False

    def step(self, data=b""):
        """Feed ciphertext, advance the handshake; return the ciphertext to send."""
        if data:
            self.incoming.write(data)
        if not self.done:
            try:
                self.obj.do_handshake()
                self.done = True
            except ssl.SSLWantReadError:
                pass
        return self.outgoing.read()

    def send(self, plaintext):
        self.obj.write(plaintext)
        return self.outgoing.read()

    def receive(self, ciphertext=b""):
        """Feed ciphertext; return all plaintext that is available now."""
        if ciphertext:
            self.incoming.write(ciphertext)
        received = bytearray()
        for _ in range(MAX_STEPS):
            try:
                chunk = self.obj.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError("stdlib peer kept producing data")
        return bytes(received)


def handshake_with_stdlib(tls, peer, limit=50):
    """Handshake a fasttls endpoint with a StdlibPeer of the other role."""
    to_peer = tls.handshake() if peer.obj.server_side else b""
    for _ in range(limit):
        to_tls = peer.step(to_peer)
        to_tls_reply, plaintext = deliver(tls, to_tls)
        assert plaintext == b""
        to_peer = to_tls_reply
        if peer.done and tls.finished():
            if to_peer:  # e.g. TLS 1.3 tickets: the stdlib consumes them on its next read
                peer.incoming.write(to_peer)
            return
    raise AssertionError(f"handshake with the stdlib did not complete within {limit} steps")


# ----------------------------------------------------------------------------- socket peer


def loopback_pair(timeout=SOCKET_TIMEOUT):
    """(client end, server end): connected TCP sockets on 127.0.0.1, both with `timeout`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.settimeout(timeout)
        client = socket.create_connection(lsock.getsockname(), timeout=timeout)
        server, _ = lsock.accept()
    server.settimeout(timeout)
    return client, server


def _handshake_over(sock, first_flight, step, finished):
    """Send `first_flight`, then feed what arrives to `step(data) -> reply` until `finished()`."""
    if first_flight:
        sock.sendall(first_flight)
    for _ in range(MAX_STEPS):
        if finished():
            return
        data = sock.recv(65536)
        if not data:
            raise AssertionError("peer closed the TCP connection during the handshake")
        out = step(data)
        if out:
            sock.sendall(out)
    raise AssertionError("socket handshake did not complete")


def socket_handshake(sock, tls, client):
    """Drive a fasttls endpoint's handshake over a connected socket (with a timeout)."""
    _handshake_over(sock, tls.handshake() if client else b"", tls.handshake, tls.finished)


def stdlib_socket_handshake(sock, peer):
    """Drive a StdlibPeer's handshake over a connected socket (with a timeout)."""
    first = b"" if peer.obj.server_side else peer.step()
    _handshake_over(sock, first, peer.step, lambda: peer.done)


def socket_read_until(sock, tls, predicate):
    """Read plaintext over the socket until predicate(received) is true, the peer sends
    close_notify, or TCP ends. Returns the plaintext received.

    Starts with read() of nothing: records that arrived with the end of the handshake (a peer
    that writes right after its Finished) are already inside tls, not on the socket."""
    received = bytearray(tls.read())
    for _ in range(MAX_STEPS):
        if predicate(bytes(received)) or tls.eof:
            break
        data = sock.recv(65536)
        if not data:
            break
        received += tls.read(data)
        if tls.pending_output:
            sock.sendall(tls.write())
    else:
        raise AssertionError("socket read loop did not end")
    return bytes(received)


def bio_handshake_over_socket(sock, obj, incoming, outgoing, send_last_flight=True):
    """Drive a stdlib SSLObject's handshake (with its two MemoryBIOs) over a connected socket,
    bounded in steps (the socket's timeout bounds each one); its last flight is sent, or with
    send_last_flight=False left in `outgoing` (for the caller to send with what follows)."""
    for _ in range(MAX_STEPS):
        try:
            obj.do_handshake()
            if send_last_flight:
                sock.sendall(outgoing.read())
            return
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise AssertionError("peer closed the TCP connection during the handshake")
            incoming.write(data)
    raise AssertionError("socket handshake did not complete")


class ThreadedServer:
    """A TLS server on 127.0.0.1 (a stdlib or fasttls context) in a thread: for each of `count`
    connections, the handshake, then `handler(tls_socket)`. Handshake failures are kept in
    `errors`."""

    def __init__(self, context, count=1, handler=None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(SOCKET_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.errors = []
        self.served = []  # (cipher, version) per connection
        self._handler = handler
        self._thread = threading.Thread(target=self._serve, args=(context, count), daemon=True)
        self._thread.start()

    def _serve(self, context, count):
        for _ in range(count):
            try:
                raw, _ = self.listener.accept()
            except OSError as exc:
                self.errors.append(exc)
                return
            raw.settimeout(SOCKET_TIMEOUT)
            with raw:
                try:
                    tls = context.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self.errors.append(exc)
                    continue
                with tls:
                    self.served.append((tls.cipher(), tls.version()))
                    try:
                        (self._handler or say_ok)(tls)
                    except (ssl.SSLError, OSError) as exc:
                        self.errors.append(exc)

    def join(self):
        self._thread.join(SOCKET_TIMEOUT)
        self.listener.close()
        assert not self._thread.is_alive(), "server thread still running"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.join()


def say_ok(tls):
    """The default handler: send b\"ok\", then wait for the client to close."""
    tls.sendall(b"ok")
    try:
        tls.recv(1)  # until the client closes
    except (ssl.SSLError, OSError):
        pass
