"""The TLS transport: an `asyncio.Transport` that encrypts and decrypts with one engine call per
operation, where asyncio's own path goes through `sslproto.SSLProtocol` (a state machine, two
memory BIOs and a second transport underneath).

`SSLTransport` holds everything that does not depend on where ciphertext goes: the handshake and
its timeout, delivering plaintext to the protocol (plain or buffered), the close_notify exchange
and its timeout, flow control and `get_extra_info`. Two subclasses move the ciphertext:
`SSLSocketTransport` (fasttls.aio._socket) owns the socket itself, as asyncio's
`_SelectorSocketTransport` does; `SSLLayeredTransport` (fasttls.aio._layered) sits on another
transport (uvloop's TCP transport, or any transport `start_tls` upgrades).

State. The connection's state is the `TLS` object's (fasttls._tls, the one owner); the transport
adds only what asyncio defines: whether the application called close() (`_closing`), whether
the protocol was told about the connection (`_connected`), and whether connection_lost was
scheduled (`_lost`).
"""
import asyncio
import inspect
import logging
import ssl
from asyncio import constants, transports
from typing import Any, Callable, Dict, Optional

from fasttls._errors import KeylessError, SSLError
from fasttls._tls import State

logger = logging.getLogger("fasttls.aio")

HANDSHAKE_TIMEOUT = 60.0  # asyncio's defaults (constants.SSL_HANDSHAKE_TIMEOUT, ...)
SHUTDOWN_TIMEOUT = 30.0
LOG_THRESHOLD = constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


# get_extra_info names answered by the SSLObject once the handshake is done (its methods).
_HANDSHAKE_INFO = {"peercert": "getpeercert", "cipher": "cipher", "compression": "compression"}


def check_timeouts(ssl_handshake_timeout, ssl_shutdown_timeout) -> "tuple[float, float]":
    """The two timeouts with asyncio's defaults, refused as SSLProtocol refuses them."""
    if ssl_handshake_timeout is None:
        ssl_handshake_timeout = HANDSHAKE_TIMEOUT
    elif ssl_handshake_timeout <= 0:
        raise ValueError(f"ssl_handshake_timeout should be a positive number, "
                         f"got {ssl_handshake_timeout}")
    if ssl_shutdown_timeout is None:
        ssl_shutdown_timeout = SHUTDOWN_TIMEOUT
    elif ssl_shutdown_timeout <= 0:
        raise ValueError(f"ssl_shutdown_timeout should be a positive number, "
                         f"got {ssl_shutdown_timeout}")
    return ssl_handshake_timeout, ssl_shutdown_timeout


def default_context(server_side: bool, server_hostname: Optional[str]) -> ssl.SSLContext:
    """What asyncio uses for ssl=True (sslproto._create_transport_context)."""
    if server_side:
        raise ValueError("Server side SSL needs a valid SSLContext")
    context = ssl.create_default_context()
    if not server_hostname:
        context.check_hostname = False
    return context


class SSLTransport(transports._FlowControlMixin, asyncio.Transport):
    """A TLS connection as an asyncio transport. See the module docstring."""

    # Set by asyncio's base classes (private there, so typeshed does not declare them).
    _loop: Any
    _extra: Dict[str, Any]
    _maybe_pause_protocol: Callable[[], None]
    _maybe_resume_protocol: Callable[[], None]

    # As sslproto's transport: TLS inside this one is possible; sendfile() falls back to
    # reading and writing (the file's bytes must be encrypted).
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.FALLBACK

    def __init__(self, loop, protocol, sslcontext, waiter, server_side: bool,
                 server_hostname: Optional[str], extra=None, server=None,
                 ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
                 call_connection_made: bool = True) -> None:
        self._handshake_timeout, self._shutdown_timeout = check_timeouts(
            ssl_handshake_timeout, ssl_shutdown_timeout)
        super().__init__(extra, loop)
        if not server_hostname or server_side:
            server_hostname = None  # as sslproto: "" means no SNI and no hostname check
        # A genuine ssl.SSLObject (for get_extra_info("ssl_object")), whose engine object is
        # fasttls's adapter; the transport drives the adapter's TLS directly.
        self._sslobj = sslcontext.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(),
                                           server_side=server_side,
                                           server_hostname=server_hostname)
        self._adapter = self._sslobj._sslobj
        self._tls = self._adapter._tls
        self._extra["sslcontext"] = sslcontext
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._waiter = waiter
        self._server = server
        self._call_connection_made = call_connection_made
        self._open = False        # handshake done, close() not called: data flows
        self._closing = False     # close() or abort() was called, or the connection ended
        self._connected = False   # protocol.connection_made was called
        self._lost = False        # connection_lost is scheduled
        self._paused = False      # pause_reading()
        self._conn_lost_writes = 0
        self._timer: Optional[asyncio.TimerHandle] = None
        # The handshake waiting for the application (TLS.pause): the task awaiting it, and the
        # ciphertext that arrived meanwhile (handed to the handshake once it goes on).
        self._pause_task: Optional["asyncio.Task[None]"] = None
        self._held_input: "list[bytes]" = []
        if server is not None:
            _attach(server, self)

    # ---- the handshake ----

    def _start(self) -> None:
        """Begin the handshake (the lower layer is connected and reading)."""
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_timed_out)
        if not self._tls.server_side:
            self._adapter._resume_from_cache()
        self._handshake(b"")

    def _handshake(self, data) -> None:
        tls = self._tls
        if self._pause_task is not None:
            if data:
                self._held_input.append(bytes(data))
            return
        try:
            out = tls.handshake(data)
        except Exception as exc:  # an SSLError, or an sni_callback's own (as sslproto reports)
            self._send_raw(getattr(exc, "alert", b""))
            self._handshake_failed(exc)
            return
        if out:
            self._send_raw(out)
        if tls.finished():
            self._handshake_done()
        elif tls.pause is not None:
            self._pause_task = self._loop.create_task(self._resolve_pause(tls.pause))

    async def _resolve_pause(self, pause) -> None:
        """Await what the handshake waits for (a session lookup, a signature) without blocking
        the loop, then go on; bounded by ssl_handshake_timeout, and dropped by close()/abort()
        (connection_lost cancels it)."""
        try:
            await pause.resolve_async()
        except Exception as exc:  # resolve_async hands failures in; a bug in it ends here
            self._pause_task = None
            self._handshake_failed(exc)
            return
        self._pause_task = None
        if self._lost or self._closing:
            return
        data = b"".join(self._held_input)
        self._held_input.clear()
        self._handshake(data)

    def _handshake_done(self) -> None:
        self._cancel_timer()
        tls = self._tls
        self._adapter._remember_session()
        self._extra["ssl_object"] = self._sslobj
        self._open = True
        if self._call_connection_made:
            self._connected = True
            try:
                self._protocol.connection_made(self)
            except Exception as exc:
                self._fatal_error(exc, "Fatal error: protocol.connection_made() call failed.")
                return
        else:
            self._connected = True  # start_tls: the protocol already knows the connection
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.cancelled():
            waiter.set_result(None)
        if tls.pending_input and not self._paused:  # data that came with the last flight
            self._received(b"")

    def _handshake_failed(self, exc: BaseException) -> None:
        self._cancel_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.cancelled():
            waiter.set_exception(exc)
        elif self._loop.get_debug() or not isinstance(exc, OSError):
            logger.debug("%r: SSL handshake failed", self, exc_info=exc)
        self._force_close(exc)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if not self._tls.finished() and not self._lost:
            self._alert_abandoned_pause()
            self._handshake_failed(ConnectionAbortedError(
                f"SSL handshake is taking longer than {self._handshake_timeout} seconds: "
                f"aborting the connection"))

    def _alert_abandoned_pause(self) -> None:
        """The handshake timed out waiting for a keyless signature: fail it, so that the
        handshake ends with an alert the client sees (not just a closed connection)."""
        task, pause = self._pause_task, self._tls.pause
        fail = getattr(pause, "fail", None)  # a SigningRequest (a session lookup has none)
        if task is None or fail is None:
            return
        self._pause_task = None
        task.cancel()
        fail(KeylessError(f"no signature within ssl_handshake_timeout "
                          f"({self._handshake_timeout} s)", "TIMEOUT"))
        try:
            self._tls.handshake()
        except SSLError as exc:
            self._send_raw(getattr(exc, "alert", b""))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- receiving ----

    def _received(self, data) -> None:
        """Ciphertext from the lower layer. While reading is paused nothing is decrypted: it
        waits in the TLS object until resume_reading()."""
        if not self._open:
            if not self._tls.finished():
                if not self._lost:
                    self._handshake(data)
                return
            self._receive_closing(data)
            return
        tls = self._tls
        try:
            plaintext = tls.read(data)
        except SSLError as exc:
            self._send_raw(getattr(exc, "alert", b""))
            self._fatal_error(exc, "Fatal error on SSL transport")
            return
        if tls.pending_output:  # a KeyUpdate reply, a post-handshake answer
            self._send_raw(tls.write())
        self._got(plaintext)

    def _got(self, plaintext: bytes) -> None:
        """What a read of an open connection returned, from either lower layer: plaintext to
        deliver (kept while reading is paused), or b"" with the peer's close_notify, or b""
        for nothing yet."""
        tls = self._tls
        if self._paused:  # arrived after pause_reading(): kept until resume_reading()
            tls.unread(plaintext)
            return
        if plaintext:
            if self._adapter._session_key is not None:  # a client's session not cached yet
                self._adapter._remember_session()  # TLS 1.3 tickets arrive before the data
            if self._buffered:
                self._deliver_buffered(plaintext)
            else:
                try:
                    self._protocol.data_received(plaintext)
                except Exception as exc:
                    self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                    return
            # The read that returned data may also have found the peer's close_notify behind
            # it (the engine reports it on the next read, which no readiness would trigger).
            # TLS's own fast-path flag is down in that case: a plain attribute, no call.
            if not tls._readable and self._open and not self._paused and tls.eof:
                self._peer_closed()
        elif tls.eof:
            self._peer_closed()

    def _deliver_buffered(self, plaintext: bytes) -> None:
        """To a BufferedProtocol: as much at a time as its buffer takes."""
        try:
            view = memoryview(plaintext)
            while view:
                buffer = memoryview(self._protocol.get_buffer(len(view))).cast("B")
                n = min(len(buffer), len(view))
                if not n:
                    raise RuntimeError("get_buffer() returned an empty buffer")
                buffer[:n] = view[:n]
                view = view[n:]
                self._protocol.buffer_updated(n)
        except Exception as exc:
            self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")

    def _peer_closed(self) -> None:
        """The peer's close_notify: the protocol hears eof_received, then both ends close
        (keeping the connection half open is not possible with TLS, as with sslproto). The
        protocol may still write from eof_received(): that leaves before our close_notify."""
        try:
            if self._protocol.eof_received():
                logger.warning("returning true from eof_received() has no effect when "
                               "using ssl")
        except Exception as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        self._open = False
        self._shutdown()

    def _lower_eof(self) -> None:
        """The transport ended without close_notify (truncation): as sslproto, the protocol
        hears eof_received and the connection closes; during the handshake it fails."""
        if self._lost:
            return
        if not self._tls.finished():
            self._handshake_failed(ConnectionResetError("Connection lost during the TLS "
                                                        "handshake"))
            return
        if self._open:
            try:
                self._protocol.eof_received()  # may still write, as with sslproto
            except Exception as exc:
                self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
                return
            self._open = False
        self._close_lower(None)

    def _receive_closing(self, data) -> None:
        """After close(): read only to find the peer's close_notify; data is discarded."""
        tls = self._tls
        try:
            tls.read(data)
            while tls.pending:
                tls.read()
        except SSLError as exc:
            self._close_lower(exc)
            return
        if tls.state is not State.CLOSING:
            self._closed_by_peer_too()

    def _closed_by_peer_too(self) -> None:
        """After close(), the peer's close_notify: as sslproto, the protocol hears
        eof_received, then connection_lost(None)."""
        if self._connected and not self._lost:
            try:
                self._protocol.eof_received()
            except Exception as exc:
                self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
                return
        self._close_lower(None)

    # ---- writing ----

    def write(self, data) -> None:
        if type(data) is not bytes and not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if not self._open:
            if self._closing or self._lost or self._tls.finished():
                if self._conn_lost_writes >= LOG_THRESHOLD:
                    logger.warning("SSL connection is closed")
                self._conn_lost_writes += 1
                return
            raise RuntimeError("write() before the TLS handshake finished")
        if not data:
            return
        try:
            out = self._tls.write(data)
        except SSLError as exc:
            self._fatal_error(exc, "Fatal error on SSL transport")
            return
        self._send_raw(out)

    def writelines(self, list_of_data) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        raise NotImplementedError("SSL doesn't support half-closes")

    def can_write_eof(self) -> bool:
        return False

    # ---- closing ----

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Send close_notify and wait (up to ssl_shutdown_timeout) for the peer's."""
        if self._closing:
            return
        self._closing = True
        if not self._tls.finished():
            self._cancel_timer()
            self._force_close(None)
            return
        self._open = False
        self._shutdown()

    def abort(self) -> None:
        self._closing = True
        self._open = False
        self._force_close(None)

    def _shutdown(self) -> None:
        self._closing = True
        if self._lost:
            return
        tls = self._tls
        if tls.state is State.OPEN or tls.state is State.PEER_CLOSED:
            self._adapter._remember_session()
            self._send_raw(tls.close())
        if tls.state is State.CLOSING:  # wait for the peer's close_notify
            if self._paused:  # pause_reading() stops delivery, not the shutdown's reading
                self._paused = False
                self._resume_lower()
            self._cancel_timer()
            self._timer = self._loop.call_later(self._shutdown_timeout, self._shutdown_timed_out)
            if tls.pending_input:
                self._receive_closing(b"")
            return
        self._close_lower(None)

    def _shutdown_timed_out(self) -> None:
        self._timer = None
        self._force_close(TimeoutError("SSL shutdown timed out"))

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        if isinstance(exc, OSError):
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({"message": message, "exception": exc,
                                               "transport": self, "protocol": self._protocol})
        self._force_close(exc)

    def _force_close(self, exc: Optional[BaseException]) -> None:
        """End now: drop what is unsent, close the lower layer, report connection_lost."""
        self._closing = True
        self._open = False
        if self._lost:
            return
        self._cancel_timer()
        self._abort_lower()
        self._connection_lost(exc)

    def _connection_lost(self, exc: Optional[BaseException]) -> None:
        """Schedule the protocol's connection_lost (once)."""
        if self._lost:
            return
        self._lost = True
        self._closing = True
        self._open = False
        self._cancel_timer()
        task, self._pause_task = self._pause_task, None
        if task is not None and task is not asyncio.current_task(self._loop):
            task.cancel()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc or ConnectionResetError("Connection lost"))
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc: Optional[BaseException]) -> None:
        try:
            if self._connected:
                self._protocol.connection_lost(exc)
        finally:
            # As asyncio's transports: the protocol often keeps its transport, and that cycle
            # would keep the context (and the connection) alive until the cyclic GC.
            self._protocol = None
            self._connected = False
            self._tls.release_buffers()
            server, self._server = self._server, None
            if server is not None:
                _detach(server, self)

    # ---- reading control ----

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._paused or self._closing:
            return
        self._paused = True
        self._pause_lower()

    def resume_reading(self) -> None:
        if not self._paused or self._closing:
            return
        self._paused = False
        self._resume_lower()
        self._loop.call_soon(self._deliver_kept)

    def _deliver_kept(self) -> None:
        """After resume_reading(): what arrived while paused (plaintext kept in the TLS object,
        ciphertext it holds, the peer's close_notify)."""
        tls = self._tls
        if self._open and not self._paused and tls.pending:
            self._received(b"")  # the plaintext kept
        if self._open and not self._paused and (tls.pending_input or tls.eof):
            self._received(b"")  # a partial record stays held: no loop

    # ---- protocol ----

    def set_protocol(self, protocol) -> None:
        self._protocol = protocol
        self._buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self):
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._extra:
            return self._extra[name]
        if name in _HANDSHAKE_INFO and "ssl_object" in self._extra:
            # Made on first use, not on every handshake (a certificate as a dict costs more
            # than the rest of a small connection's Python work); kept, as sslproto keeps it.
            value = self._extra[name] = getattr(self._sslobj, _HANDSHAKE_INFO[name])()
            return value
        return self._lower_extra(name, default)

    def __repr__(self) -> str:
        state = "closing" if self._closing else "open" if self._open else "handshaking"
        return f"<{type(self).__name__} {state} {self._tls.state.value}>"

    # ---- the lower layer (subclasses) ----

    def _send_raw(self, data) -> None:
        raise NotImplementedError

    def _close_lower(self, exc: Optional[BaseException]) -> None:
        """Close after what is unsent has gone, then connection_lost(exc)."""
        raise NotImplementedError

    def _abort_lower(self) -> None:
        raise NotImplementedError

    def _pause_lower(self) -> None:
        raise NotImplementedError

    def _resume_lower(self) -> None:
        raise NotImplementedError

    def _lower_extra(self, name: str, default: Any) -> Any:
        return default


# asyncio.Server counts its connections (for wait_closed); from 3.13 it also names them.
_SERVER_NAMES_TRANSPORTS = len(inspect.signature(
    asyncio.base_events.Server._attach).parameters) > 1  # type: ignore[attr-defined]


def _attach(server, transport) -> None:
    if _SERVER_NAMES_TRANSPORTS:
        server._attach(transport)
    else:
        server._attach()


def _detach(server, transport) -> None:
    if _SERVER_NAMES_TRANSPORTS:
        server._detach(transport)
    else:
        server._detach()
