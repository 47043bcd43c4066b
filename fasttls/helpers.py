"""Socket helpers in the style of skynet's ``http.tlshelper``.

They mirror the reference's closures over a socket (``init_requestfunc``, ``init_responsefunc``,
``readfunc``, ``writefunc``, ``readallfunc``, ``closefunc``) so code written against it ports line
for line, while fixing its weaknesses (see docs/API.md):

* everything the engine has to send is sent: the flight that completes the handshake, and any
  output produced while reading (KeyUpdate replies, post-handshake messages);
* on a failure, during the handshake or after it (a bad record), OpenSSL's fatal alert is sent to
  the peer before the error is raised;
* plaintext that arrived together with the last handshake flight is decrypted before blocking on
  the socket, so server-speaks-first protocols do not deadlock;
* "no data yet", a clean close (close_notify, ``b""``) and a truncation (TCP EOF without
  close_notify, ``SSLEOFError``) are told apart;
* ``readfunc`` and ``readallfunc`` read from the connection's own plaintext buffer (the TLS
  object owns it), so nothing is lost between them, nor when sending a reply fails;
* ``closefunc`` sends close_notify;
* the socket's timeout is honoured: a stalled peer raises the socket's ``TimeoutError``.

Each operation is one call into the engine, which does the socket's system calls itself with
the TLS work (``TLS.recv_from``, ``send_to``, ``handshake_on``): no receive buffer is allocated
per call, and alerts and KeyUpdate replies leave from inside the engine.
"""
from __future__ import annotations

import errno
import socket
import ssl
from typing import TYPE_CHECKING, Callable, Optional

from ._errors import SSLEOFError
from ._tls import handshake_over_socket, socket_timeout_ms

if TYPE_CHECKING:  # pragma: no cover
    from ._tls import TLS

__all__ = [
    "init_requestfunc",
    "init_responsefunc",
    "readfunc",
    "writefunc",
    "readallfunc",
    "closefunc",
]

# 64 KiB per recv(): room for four full-size TLS records (16 KiB of plaintext plus overhead each),
# so bulk transfers take few system calls and few calls into the engine, while a small message
# costs no more (recv returns what is there, and the buffer is not zero-filled per call).
RECV_SIZE = 64 * 1024


def _eof(message: str, truncated: bool = True) -> SSLEOFError:
    exc = SSLEOFError(ssl.SSL_ERROR_EOF, message)
    if truncated:  # the stdlib's names for a TCP EOF without close_notify
        exc.library, exc.reason = "SSL", "UNEXPECTED_EOF_WHILE_READING"
    return exc


def _handshake(tls: TLS) -> None:
    """The whole handshake in the engine, which sends every flight itself (the one completing
    the handshake and TLS 1.3 session tickets included). A handshake that waits for the
    application (`tls.pause`: a session lookup, a signature) is resolved here, blocking."""
    if tls.finished():
        return
    sock = tls.transport
    try:
        if not handshake_over_socket(tls, sock):
            raise BlockingIOError(errno.EAGAIN, "the socket is non-blocking")
    except SSLEOFError as exc:
        raise _eof("connection closed during the handshake") from exc


def _receive(tls: TLS, size: int = -1) -> bytes:
    """Plaintext: what is buffered, else one engine call that receives and decrypts (at most
    `size` bytes, the rest staying buffered); b"" once the peer has sent close_notify.
    SSLEOFError if the transport ended without it. Output produced while reading (a KeyUpdate
    reply) is sent by the engine before it returns."""
    sock = tls.transport
    # The common blocking socket without a function call (this is on every read and write).
    timeout = -1 if sock.gettimeout() is None else socket_timeout_ms(sock)
    try:
        data = tls.recv_from(sock.fileno(), timeout, size)
    except SSLEOFError as exc:
        raise _eof("connection closed without close_notify (truncated)") from exc
    if data is None:  # a non-blocking socket with nothing complete yet
        raise BlockingIOError(errno.EAGAIN, "no complete record yet")
    return data


def _attach(sock: socket.socket, tls: TLS) -> TLS:
    tls.transport = sock
    return tls


def init_requestfunc(sock: socket.socket, tls: TLS) -> Callable[[Optional[str]], None]:
    """``f(hostname=None)``: run the client handshake over ``sock``."""
    _attach(sock, tls)

    def init(hostname: Optional[str] = None) -> None:
        if hostname is not None and not tls.finished():
            tls.set_hostname(hostname)
        _handshake(tls)

    return init


def init_responsefunc(sock: socket.socket, tls: TLS) -> Callable[[], None]:
    """``f()``: run the server handshake over ``sock``, sending everything pending at the end."""
    _attach(sock, tls)

    def init() -> None:
        _handshake(tls)

    return init


def readfunc(sock: socket.socket, tls: TLS) -> Callable[[Optional[int]], bytes]:
    """``f(sz=None)``. Without ``sz``: the buffered plaintext if any, else block until some
    arrives; ``b""`` only after close_notify. With ``sz``: exactly ``sz`` bytes, or
    ``SSLEOFError`` saying how many arrived (those stay buffered)."""
    _attach(sock, tls)

    def read(sz: Optional[int] = None) -> bytes:
        if sz is None:
            return _receive(tls)
        if sz <= 0:
            if sz < 0:
                raise ValueError("sz must be >= 0")
            return b""
        chunks: "list[bytes]" = []
        got = 0
        while True:
            try:
                chunk = _receive(tls, sz - got)
            except BaseException as exc:
                tls.unread(b"".join(chunks))  # what arrived stays buffered
                if isinstance(exc, SSLEOFError):
                    raise _eof(
                        f"connection closed without close_notify (truncated): "
                        f"{tls.pending} of {sz} bytes arrived"
                    ) from exc
                raise
            got += len(chunk)
            if got == sz:  # most often on the first call: one engine call for the read
                if not chunks:
                    return chunk
                chunks.append(chunk)
                return b"".join(chunks)
            if not chunk:
                tls.unread(b"".join(chunks))
                raise _eof(
                    f"peer closed the connection (close_notify): {tls.pending} of {sz} bytes "
                    "arrived",
                    truncated=False,
                )
            chunks.append(chunk)

    return read


def writefunc(sock: socket.socket, tls: TLS) -> Callable[[bytes], None]:
    """``f(data)``: encrypt ``data`` and send it (with anything pending before it)."""
    _attach(sock, tls)

    def write(data: bytes) -> None:
        # One engine call: encrypted behind anything pending, and sent. On a non-blocking
        # socket what it does not take waits in the engine and leaves first next time.
        sock = tls.transport
        timeout = -1 if sock.gettimeout() is None else socket_timeout_ms(sock)  # see _receive
        tls.send_to(sock.fileno(), data, timeout)

    return write


def readallfunc(sock: socket.socket, tls: TLS) -> Callable[[], bytes]:
    """``f()``: all plaintext until close_notify, starting with what ``readfunc`` left buffered.
    A TCP EOF without close_notify raises ``SSLEOFError`` (the data stays buffered)."""
    _attach(sock, tls)

    def readall() -> bytes:
        chunks: "list[bytes]" = []
        try:
            while True:
                chunk = _receive(tls)
                if not chunk:
                    break
                chunks.append(chunk)
        except BaseException:
            tls.unread(b"".join(chunks))  # nothing is lost: a later read returns it
            raise
        return b"".join(chunks)

    return readall


def closefunc(tls: TLS) -> Callable[[], None]:
    """``f()``: send close_notify over the socket the other helpers used (best effort), then
    release the connection's buffers. The socket itself stays open: it belongs to the caller."""

    def close() -> None:
        try:
            out = tls.close()
            if out and tls.transport is not None:
                tls.transport.sendall(out)
        except OSError:  # includes ssl.SSLError and socket.timeout
            pass
        tls.release_buffers()

    return close
