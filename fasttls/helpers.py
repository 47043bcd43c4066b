"""Socket helpers in the style of skynet's ``http.tlshelper``.

They mirror the reference's closures over a socket (``init_requestfunc``, ``init_responsefunc``,
``readfunc``, ``writefunc``, ``readallfunc``, ``closefunc``) so code written against it ports line
for line, while fixing its weaknesses (see docs/API.md):

* everything the engine has to send is sent: the flight that completes the handshake, and any
  output produced while reading (KeyUpdate replies, post-handshake messages);
* on a handshake failure the alert is sent to the peer before the error is raised;
* plaintext that arrived together with the last handshake flight is decrypted before blocking on
  the socket, so server-speaks-first protocols do not deadlock;
* "no data yet", a clean close (close_notify, ``b""``) and a truncation (TCP EOF without
  close_notify, ``SSLEOFError``) are told apart;
* ``readfunc`` and ``readallfunc`` share one plaintext buffer, so nothing is lost between them;
* ``closefunc`` sends close_notify;
* the socket's timeout is honoured: a stalled peer raises the socket's ``TimeoutError``.
"""
from __future__ import annotations

import socket
import ssl
import weakref
from typing import TYPE_CHECKING, Callable, Optional

from ._errors import SSLEOFError, SSLError

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


class _Stream:
    """Per-connection state shared by the helpers of one TLS object: the socket in use and the
    single plaintext buffer. It must never refer to the TLS object (it is the value of a
    WeakKeyDictionary keyed by it)."""

    __slots__ = ("sock", "buf")

    def __init__(self, sock: Optional[socket.socket]) -> None:
        self.sock = sock
        self.buf = bytearray()


_streams: "weakref.WeakKeyDictionary[TLS, _Stream]" = weakref.WeakKeyDictionary()


def _stream(tls: TLS, sock: Optional[socket.socket] = None) -> _Stream:
    st = _streams.get(tls)
    if st is None:
        st = _streams[tls] = _Stream(sock)
    elif sock is not None:
        st.sock = sock
    return st


def _eof(message: str, truncated: bool = True) -> SSLEOFError:
    exc = SSLEOFError(ssl.SSL_ERROR_EOF, message)
    if truncated:  # the stdlib's names for a TCP EOF without close_notify
        exc.library, exc.reason = "SSL", "UNEXPECTED_EOF_WHILE_READING"
    return exc


def _handshake(st: _Stream, tls: TLS) -> None:
    if tls.finished():
        return
    sock = st.sock
    try:
        out = tls.handshake()
        while True:
            if out:
                sock.sendall(out)
            if tls.finished():
                break
            data = sock.recv(RECV_SIZE)
            if not data:
                raise _eof("connection closed during the handshake")
            out = tls.handshake(data)
    except SSLError as exc:
        alert = getattr(exc, "alert", b"")
        if alert:
            try:
                sock.sendall(alert)
            except OSError:
                pass
        raise
    if tls.pending_output:  # e.g. TLS 1.3 session tickets not yet handed out
        sock.sendall(tls.write())


def _decrypt(st: _Stream, tls: TLS, data: bytes = b"") -> bytes:
    plain = tls.read(data)
    if tls.pending_output:  # a KeyUpdate reply or other post-handshake output: send it now
        st.sock.sendall(tls.write())
    return plain


def _pull(st: _Stream, tls: TLS) -> bool:
    """Append newly available plaintext to the shared buffer, blocking on the socket only when
    nothing is decrypted yet. False once the peer has sent close_notify and nothing else came;
    SSLEOFError if the transport ended without close_notify."""
    # Data fed earlier (e.g. with the last handshake flight) may already hold whole records.
    plain = _decrypt(st, tls)
    while not plain:
        if tls.eof:
            return False
        data = st.sock.recv(RECV_SIZE)
        if not data:
            raise _eof("connection closed without close_notify (truncated)")
        plain = _decrypt(st, tls, data)
    st.buf += plain
    return True


def _take(buf: bytearray, n: int) -> bytes:
    data = bytes(buf[:n])
    del buf[:n]
    return data


def init_requestfunc(sock: socket.socket, tls: TLS) -> Callable[[Optional[str]], None]:
    """``f(hostname=None)``: run the client handshake over ``sock``."""
    st = _stream(tls, sock)

    def init(hostname: Optional[str] = None) -> None:
        if hostname is not None and not tls.finished():
            tls.set_hostname(hostname)
        _handshake(st, tls)

    return init


def init_responsefunc(sock: socket.socket, tls: TLS) -> Callable[[], None]:
    """``f()``: run the server handshake over ``sock``, sending everything pending at the end."""
    st = _stream(tls, sock)

    def init() -> None:
        _handshake(st, tls)

    return init


def readfunc(sock: socket.socket, tls: TLS) -> Callable[[Optional[int]], bytes]:
    """``f(sz=None)``. Without ``sz``: the buffered plaintext if any, else block until some
    arrives; ``b""`` only after close_notify. With ``sz``: exactly ``sz`` bytes, or
    ``SSLEOFError`` saying how many arrived (those stay buffered)."""
    st = _stream(tls, sock)

    def read(sz: Optional[int] = None) -> bytes:
        buf = st.buf
        if sz is None:
            if not buf and not _pull(st, tls):
                return b""
            return _take(buf, len(buf))
        if sz < 0:
            raise ValueError("sz must be >= 0")
        while len(buf) < sz:
            try:
                more = _pull(st, tls)
            except SSLEOFError as exc:
                raise _eof(
                    f"connection closed without close_notify (truncated): "
                    f"{len(buf)} of {sz} bytes arrived"
                ) from exc
            if not more:
                raise _eof(
                    f"peer closed the connection (close_notify): {len(buf)} of {sz} bytes arrived",
                    truncated=False,
                )
        return _take(buf, sz)

    return read


def writefunc(sock: socket.socket, tls: TLS) -> Callable[[bytes], None]:
    """``f(data)``: encrypt ``data`` and send it (with anything pending before it)."""
    st = _stream(tls, sock)

    def write(data: bytes) -> None:
        out = tls.write(data)
        if out:
            st.sock.sendall(out)

    return write


def readallfunc(sock: socket.socket, tls: TLS) -> Callable[[], bytes]:
    """``f()``: all plaintext until close_notify, starting with what ``readfunc`` left buffered.
    A TCP EOF without close_notify raises ``SSLEOFError`` (the data stays buffered)."""
    st = _stream(tls, sock)

    def readall() -> bytes:
        while _pull(st, tls):
            pass
        return _take(st.buf, len(st.buf))

    return readall


def closefunc(tls: TLS) -> Callable[[], None]:
    """``f()``: send close_notify over the socket the other helpers used (best effort), then
    release the connection's buffers. The socket itself stays open: it belongs to the caller."""

    def close() -> None:
        st = _streams.get(tls)
        try:
            out = tls.close()
            if out and st is not None and st.sock is not None:
                st.sock.sendall(out)
        except OSError:  # includes ssl.SSLError and socket.timeout
            pass
        tls.release_buffers()

    return close
