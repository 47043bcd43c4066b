"""`SSLLayeredTransport`: the TLS transport over another transport.

Used where fasttls cannot own the socket: under uvloop (its TCP transport is C, and its own SSL
code is what fasttls replaces) and for `start_tls` (the transport being upgraded already owns
the socket). `_Lower` is the protocol the lower transport delivers to; it hands ciphertext to
the TLS transport, which writes its ciphertext to the lower transport. Flow control is the lower
transport's: its buffer is the only one, and its pause/resume_writing reach the application.
"""
import asyncio
from typing import Any, Optional

from fasttls.aio._transport import SSLTransport

class _Lower(asyncio.Protocol):
    """The lower transport's protocol: ciphertext in, connection events. A plain protocol
    rather than a buffered one: one call per read (uvloop makes the bytes in C) instead of
    get_buffer and buffer_updated."""

    __slots__ = ("tls",)

    def __init__(self, tls: "SSLLayeredTransport") -> None:
        self.tls: Optional[SSLLayeredTransport] = tls

    def connection_made(self, transport) -> None:
        if self.tls is not None:
            self.tls._lower_made(transport)

    def data_received(self, data: bytes) -> None:
        tls = self.tls
        if tls is not None:  # None: the connection ended (see _call_connection_lost)
            tls._received(data)

    def eof_received(self) -> bool:
        if self.tls is not None:
            self.tls._lower_eof()
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if self.tls is not None:
            self.tls._lower_lost(exc)

    def pause_writing(self) -> None:
        if self.tls is not None:
            self.tls._lower_paused(True)

    def resume_writing(self) -> None:
        if self.tls is not None:
            self.tls._lower_paused(False)


class SSLLayeredTransport(SSLTransport):
    """See the module docstring and SSLTransport."""

    def __init__(self, loop, protocol, sslcontext, waiter=None, *, server_side: bool = False,
                 server_hostname: Optional[str] = None, server=None, ssl_handshake_timeout=None,
                 ssl_shutdown_timeout=None, call_connection_made: bool = True) -> None:
        super().__init__(loop, protocol, sslcontext, waiter, server_side, server_hostname,
                         None, server, ssl_handshake_timeout, ssl_shutdown_timeout,
                         call_connection_made)
        self.lower_protocol = _Lower(self)
        self._lower: Optional[asyncio.Transport] = None
        self._writing_paused = False

    def _lower_made(self, transport) -> None:
        self._lower = transport
        self._start()

    def _lower_lost(self, exc: Optional[BaseException]) -> None:
        if self._lost:
            return
        if not self._tls.finished():
            self._handshake_failed(exc or ConnectionResetError("Connection lost during the TLS "
                                                               "handshake"))
        else:
            self._connection_lost(exc)

    def _lower_paused(self, paused: bool) -> None:
        self._writing_paused = paused
        if not self._connected or self._lost:
            return
        try:
            if paused:
                self._protocol.pause_writing()
            else:
                self._protocol.resume_writing()
        except Exception as exc:
            self._loop.call_exception_handler({
                "message": "protocol.pause_writing() failed" if paused
                else "protocol.resume_writing() failed",
                "exception": exc, "transport": self, "protocol": self._protocol})

    # ---- flow control: the lower transport's ----

    def get_write_buffer_size(self) -> int:
        return self._lower.get_write_buffer_size() if self._lower is not None else 0

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        if self._lower is not None:
            self._lower.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self):
        return self._lower.get_write_buffer_limits() if self._lower is not None else (0, 0)

    # ---- the lower layer ----

    def _send_raw(self, data) -> None:
        lower = self._lower
        if data and lower is not None and not lower.is_closing():
            lower.write(data)

    def _close_lower(self, exc: Optional[BaseException]) -> None:
        self._closing = True
        self._cancel_timer()
        lower = self._lower
        if lower is None or lower.is_closing():
            self._connection_lost(exc)
        else:
            lower.close()  # connection_lost follows, from the lower transport

    def _abort_lower(self) -> None:
        if self._lower is not None:
            self._lower.abort()

    def _pause_lower(self) -> None:
        if self._lower is not None:
            self._lower.pause_reading()

    def _resume_lower(self) -> None:
        if self._lower is not None:
            self._lower.resume_reading()

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        try:
            super()._call_connection_lost(exc)
        finally:
            # The lower transport and its protocol point at each other and at this transport:
            # detached here, refcounting frees the connection at once (a cycle would wait for
            # the cyclic GC, and a busy server piles up tens of KiB per connection until then).
            self.lower_protocol.tls = None
            self._lower = None

    def _lower_extra(self, name: str, default: Any) -> Any:
        if self._lower is None:
            return default
        return self._lower.get_extra_info(name, default)
