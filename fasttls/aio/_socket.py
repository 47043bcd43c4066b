"""`SSLSocketTransport`: the TLS transport that owns its socket (selector event loops).

The loop calls `_on_readable` when the socket has data: one `recv_into` into a buffer kept for
the connection's life, one engine call that decrypts every record in it, one call into the
protocol. Writes encrypt and try the socket at once, as asyncio's own socket transport does;
what the socket does not take waits here, in order, with the loop watching for writability.
"""
import collections
import socket
import warnings
from asyncio import base_events, trsock
from typing import Any, Optional

from fasttls.aio._transport import SSLTransport

RECV_SIZE = 256 * 1024  # as asyncio's socket transport (max_size): many records per wakeup


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
        self._recv_into = sock.recv_into
        self._send = sock.send
        self._view = memoryview(bytearray(RECV_SIZE))
        self._unsent: "collections.deque[Any]" = collections.deque()
        self._unsent_size = 0
        self._close_when_sent = False  # close once what is unsent has gone
        base_events._set_nodelay(sock)  # small writes leave at once, as with asyncio's own
        loop._transports[self._fd] = self  # the loop refuses add_reader() on a transport's fd
        loop.call_soon(self._connect)

    def _connect(self) -> None:
        if self._lost:
            return
        self._loop._add_reader(self._fd, self._on_readable)
        self._start()

    # ---- receiving ----

    def _on_readable(self) -> None:
        try:
            n = self._recv_into(self._view)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if self._tls.finished():
                self._fatal_error(exc, "Fatal read error on SSL transport")
            else:
                self._handshake_failed(exc)
            return
        if n:
            self._received(self._view[:n])
        else:
            self._lower_eof()

    # ---- sending ----

    def get_write_buffer_size(self) -> int:
        return self._unsent_size

    def _send_raw(self, data) -> None:
        if not data or self._sock is None:
            return
        if not self._unsent:
            try:
                n = self._send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._fatal_error(exc, "Fatal write error on SSL transport")
                return
            if n == len(data):
                return
            data = memoryview(data)[n:]
            self._loop._add_writer(self._fd, self._on_writable)
        self._unsent.append(data)
        self._unsent_size += len(data)
        self._maybe_pause_protocol()

    def _on_writable(self) -> None:
        unsent = self._unsent
        try:
            while unsent:
                data = unsent[0]
                n = self._send(data)
                self._unsent_size -= n
                if n < len(data):
                    unsent[0] = memoryview(data)[n:]
                    break
                unsent.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self._fatal_error(exc, "Fatal write error on SSL transport")
            return
        if unsent:
            return
        self._loop._remove_writer(self._fd)
        self._maybe_resume_protocol()
        if self._close_when_sent and not self._unsent:
            self._connection_lost(None)

    # ---- the lower layer ----

    def _close_lower(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        self._closing = True
        self._cancel_timer()
        if self._sock is not None:
            self._loop._remove_reader(self._fd)
        if self._unsent and exc is None:
            self._close_when_sent = True  # _on_writable finishes
            return
        self._abort_lower()
        self._connection_lost(exc)

    def _abort_lower(self) -> None:
        if self._sock is None:
            return
        self._loop._remove_reader(self._fd)
        if self._unsent:
            self._loop._remove_writer(self._fd)
            self._unsent.clear()
            self._unsent_size = 0

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        try:
            super()._call_connection_lost(exc)
        finally:
            sock, self._sock = self._sock, None
            if sock is not None:
                if self._unsent:
                    self._loop._remove_writer(self._fd)
                self._loop._remove_reader(self._fd)
                self._loop._transports.pop(self._fd, None)
                sock.close()

    def _pause_lower(self) -> None:
        if self._sock is not None:
            self._loop._remove_reader(self._fd)

    def _resume_lower(self) -> None:
        if self._sock is not None and not self._lost:
            self._loop._add_reader(self._fd, self._on_readable)

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            warnings.warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            sock.close()


