"""`SSLSocketTransport`: the TLS transport that owns its socket (selector event loops).

Once the handshake is done, each readiness callback is one engine call that does the system call
and the TLS work together: `recv_from` receives into the engine's own buffer and decrypts every
record in it, `send_to` encrypts and sends straight from the engine's output. The handshake
runs over the memory API (it is a few messages; its output and alerts leave through
`_send_raw`).

Ciphertext the socket did not take waits in exactly one place, in order: the engine
(after `send_to`), or this transport's queue (bytes taken out of the engine: the handshake's
flights, an alert, close_notify). At most one of the two holds anything at a time: a write
made while the queue is not empty is queued behind it, and whatever is queued or kept leaves
first when the socket is writable again.
"""
import collections
import socket
import warnings
from asyncio import base_events, trsock
from typing import Any, Optional

from fasttls._errors import SSLEOFError, SSLError
from fasttls.aio._transport import SSLTransport

HANDSHAKE_RECV_SIZE = 64 * 1024


class SSLSocketTransport(SSLTransport):
    """See the module docstring and SSLTransport."""

    def __init__(self, loop, sock: socket.socket, protocol, sslcontext, waiter=None, *,
                 server_side: bool = False, server_hostname: Optional[str] = None, extra=None,
                 server=None, ssl_handshake_timeout=None, ssl_shutdown_timeout=None) -> None:
        super().__init__(loop, protocol, sslcontext, waiter, server_side, server_hostname,
                         extra, server, ssl_handshake_timeout, ssl_shutdown_timeout)
        self._extra["socket"] = trsock.TransportSocket(sock)  # asyncio's restricted view
        for name, get in (("sockname", sock.getsockname), ("peername", sock.getpeername)):
            if name not in self._extra:
                try:
                    self._extra[name] = get()
                except OSError:
                    self._extra[name] = None
        self._sock: Optional[socket.socket] = sock
        self._fd = sock.fileno()
        self._queue: "collections.deque[Any]" = collections.deque()  # see the module docstring
        self._queued = 0
        self._writer = False        # the loop watches for writability
        self._close_when_sent = False
        base_events._set_nodelay(sock)  # type: ignore[attr-defined]  # small writes leave at once, as with asyncio's own
        loop._transports[self._fd] = self  # the loop refuses add_reader() on a transport's fd
        loop.call_soon(self._connect)

    def _connect(self) -> None:
        if self._lost:
            return
        self._loop._add_reader(self._fd, self._on_handshake_readable)
        self._start()

    def _handshake_done(self) -> None:
        if not self._lost and not self._paused:
            self._loop._add_reader(self._fd, self._on_readable)
        super()._handshake_done()

    # ---- receiving ----

    def _on_handshake_readable(self) -> None:
        try:
            data = self._sock.recv(HANDSHAKE_RECV_SIZE)  # type: ignore[union-attr]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._handshake_failed(exc)
            return
        if data:
            self._received(data)
        else:
            self._lower_eof()

    def _on_readable(self) -> None:
        """The hot path: one engine call, one call into the protocol."""
        tls = self._tls
        try:
            plaintext = tls.recv_from(self._fd)
        except SSLEOFError:
            self._lower_eof()
            return
        except OSError as exc:  # SSLError included: the engine sent the alert already
            if self._open:
                self._fatal_error(exc, "Fatal error on SSL transport")
            else:
                self._receive_failed(exc)
            return
        if tls.unsent and not self._writer:  # a KeyUpdate reply the socket did not take
            self._watch_writable()
        if plaintext is None:
            return  # nothing complete yet
        if self._open:
            self._got(plaintext)
        elif not plaintext:
            self._closed_by_peer_too()  # after close(): the peer's close_notify came
        # (plaintext after close() is discarded: only the peer's close_notify matters)

    def _receive_failed(self, exc: BaseException) -> None:
        # After close(): a failure while waiting for the peer's close_notify ends the wait.
        self._close_lower(exc if not isinstance(exc, SSLError) else None)

    def _receive_closing(self, data) -> None:
        if data:
            super()._receive_closing(data)  # handshake-path bytes (never after the handshake)
        elif self._tls.pending_input or self._tls.pending:
            self._on_readable()

    # ---- sending ----

    def get_write_buffer_size(self) -> int:
        return self._queued + self._tls.unsent

    def write(self, data) -> None:
        if not self._open or self._queue:
            super().write(data)  # checks, refusals, or queued behind _send_raw's bytes
            return
        if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        try:
            left = self._tls.send_to(self._fd, data)
        except OSError as exc:
            self._fatal_error(exc, "Fatal write error on SSL transport")
            return
        if left:
            if not self._writer:
                self._watch_writable()
            self._maybe_pause_protocol()

    def _send_raw(self, data) -> None:
        """Bytes taken out of the engine (handshake flights, alerts, close_notify)."""
        if not data or self._sock is None:
            return
        if not self._queue and not self._tls.unsent:
            try:
                n = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._fatal_error(exc, "Fatal write error on SSL transport")
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
        self._queue.append(data)
        self._queued += len(data)
        if not self._writer:
            self._watch_writable()
        self._maybe_pause_protocol()

    def _watch_writable(self) -> None:
        self._writer = True
        self._loop._add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        queue = self._queue
        try:
            if self._tls.unsent:
                if self._tls.send_to(self._fd):
                    return
            while queue:
                data = queue[0]
                n = self._sock.send(data)  # type: ignore[union-attr]
                self._queued -= n
                if n < len(data):
                    queue[0] = memoryview(data)[n:]
                    return
                queue.popleft()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fatal_error(exc, "Fatal write error on SSL transport")
            return
        self._writer = False
        self._loop._remove_writer(self._fd)
        self._maybe_resume_protocol()
        if self._close_when_sent:
            self._connection_lost(None)

    # ---- the lower layer ----

    def _close_lower(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._closing = True
        self._cancel_timer()
        if self._sock is not None:
            self._loop._remove_reader(self._fd)
        if exc is None and (self._queue or self._tls.unsent):
            self._close_when_sent = True  # _on_writable finishes
            return
        self._abort_lower()
        self._connection_lost(exc)

    def _abort_lower(self) -> None:
        if self._sock is None:
            return
        self._loop._remove_reader(self._fd)
        if self._writer:
            self._writer = False
            self._loop._remove_writer(self._fd)
        self._queue.clear()
        self._queued = 0

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        try:
            super()._call_connection_lost(exc)
        finally:
            sock, self._sock = self._sock, None
            if sock is not None:
                if self._writer:
                    self._writer = False
                    self._loop._remove_writer(self._fd)
                self._loop._remove_reader(self._fd)
                self._loop._transports.pop(self._fd, None)
                sock.close()

    def _pause_lower(self) -> None:
        if self._sock is not None:
            self._loop._remove_reader(self._fd)

    def _resume_lower(self) -> None:
        if self._sock is not None and not self._lost:
            self._loop._add_reader(self._fd, self._on_readable if self._tls.finished()
                                   else self._on_handshake_readable)

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            warnings.warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()
