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
"""
from __future__ import annotations

import socket
import ssl
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


def _eof(message: str, truncated: bool = True) -> SSLEOFError:
    exc = SSLEOFError(ssl.SSL_ERROR_EOF, message)
    if truncated:  # the stdlib's names for a TCP EOF without close_notify
        exc.library, exc.reason = "SSL", "UNEXPECTED_EOF_WHILE_READING"
    return exc


def _send_alert(sock: socket.socket, error: SSLError) -> None:
    """The fatal alert OpenSSL produced, sent before the error is raised (RFC 8446 §5.2)."""
    alert = getattr(error, "alert", b"")
    if alert:
        try:
            sock.sendall(alert)
        except OSError:
            pass  # a courtesy to the peer; the error is what matters


def _handshake(tls: TLS) -> None:
    if tls.finished():
        return
    sock = tls.transport
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
        _send_alert(sock, exc)
        raise
    if tls.pending_output:  # e.g. TLS 1.3 session tickets not yet handed out
        try:
            sock.sendall(tls.write())
        except (BrokenPipeError, ConnectionResetError):
            # A TLS 1.3 client that closes right after the handshake never reads its tickets;
            # OpenSSL itself tolerates EPIPE on the ticket write. The next read reports the end.
            pass


def _pull(tls: TLS) -> bool:
    """Decrypt more plaintext into the connection's buffer (`tls.pending`), blocking on the
    socket only when nothing new is decrypted. False once the peer has sent close_notify;
    SSLEOFError if the transport ended without close_notify. Output produced while reading (a
    KeyUpdate reply, an alert) is sent at once; if sending fails, the plaintext stays buffered."""
    sock = tls.transport
    before = tls.pending
    data = b""  # ciphertext fed earlier (e.g. with the last handshake flight) may hold records
    while True:
        try:
            tls.read(data, 0)
        except SSLError as exc:
            _send_alert(sock, exc)
            raise
        if tls.pending_output:
            sock.sendall(tls.write())
        if tls.pending > before:
            return True
        if tls.eof:
            return False
        data = sock.recv(RECV_SIZE)
        if not data:
            raise _eof("connection closed without close_notify (truncated)")


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
            if not tls.pending and not _pull(tls):
                return b""
            return tls.read()
        if sz < 0:
            raise ValueError("sz must be >= 0")
        while tls.pending < sz:
            try:
                more = _pull(tls)
            except SSLEOFError as exc:
                raise _eof(
                    f"connection closed without close_notify (truncated): "
                    f"{tls.pending} of {sz} bytes arrived"
                ) from exc
            if not more:
                raise _eof(
                    f"peer closed the connection (close_notify): {tls.pending} of {sz} bytes "
                    "arrived",
                    truncated=False,
                )
        return tls.read(b"", sz)

    return read


def writefunc(sock: socket.socket, tls: TLS) -> Callable[[bytes], None]:
    """``f(data)``: encrypt ``data`` and send it (with anything pending before it)."""
    _attach(sock, tls)

    def write(data: bytes) -> None:
        out = tls.write(data)
        if out:
            tls.transport.sendall(out)

    return write


def readallfunc(sock: socket.socket, tls: TLS) -> Callable[[], bytes]:
    """``f()``: all plaintext until close_notify, starting with what ``readfunc`` left buffered.
    A TCP EOF without close_notify raises ``SSLEOFError`` (the data stays buffered)."""
    _attach(sock, tls)

    def readall() -> bytes:
        while _pull(tls):
            pass
        return tls.read()

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
