"""TLS: one TLS connection as a sans-IO object (the reference's `newtls`).

Theory of operation
-------------------
Bytes go in and come out; no socket is touched. `handshake()`, `read()` and `write()` each make
exactly one call into the C engine, which feeds the received ciphertext to OpenSSL, does all the
work it allows, and reports "needs more data" as a status rather than an exception (an exception
per want-read is where much of the stdlib's time goes on small messages).

* Everything waiting to be sent is returned by the call that produced it, including on the
  handshake step that completes the handshake: the TLS 1.3 client Finished and the TLS 1.2
  server's final flight (the reference dropped those, deadlocking server-speaks-first protocols).
* Reading can produce bytes to send (a KeyUpdate reply, an alert); they wait in the connection
  (`pending_output`) and leave with the next `write()`, which with no data only flushes.
* Ciphertext that arrives with the last handshake flight (e.g. a server that speaks first) is
  kept and decrypted by the next `read()`.
* A clean close (the peer's close_notify) sets `eof` and makes `read()` return b"" from then on;
  nothing received after close_notify is ever returned. A transport EOF without close_notify is
  truncation: the socket layer (fasttls.helpers) reports it as SSLEOFError.
* A fatal error leaves the connection broken; the alert OpenSSL produced for the peer is on the
  exception (`exc.alert`), to be sent before giving up. Plaintext decrypted before the error was
  authenticated record by record, so `read()` returns it first and raises on the next call.
* Renegotiation is refused (SSL_OP_NO_RENEGOTIATION): TLS 1.2 renegotiation requests get a
  no_renegotiation warning alert; TLS 1.3 has none.

One owner
---------
This object is the only owner of a connection's state (`state`, a `State`) and of its plaintext
buffer: `read(data, size)` returns at most `size` bytes and keeps the rest here, so the socket
helpers and the stdlib adapter (fasttls.stdlib) keep no flags and no buffers of their own, and
nothing already decrypted can be lost between layers (an adapter whose send fails after a read
gives the plaintext back with `unread()`).

Sockets
-------
`recv_from()`, `send_to()` and `handshake_on()` are the same operations over a socket's file
descriptor, the engine making the system calls in the same C call (see "socket I/O inside the
engine" below); the helpers and the drop-in SSLSocket use them. The state and the buffer are
the same ones.
"""
import enum
import errno
import os
import socket
import ssl
import sys
import threading
import weakref
from typing import Any, Optional, Union

from fasttls._binding import ffi, lib
from fasttls._certificate import Certificate
from fasttls._certinfo import certificate_der, certificate_dict
from fasttls._context import Context
from fasttls._errors import (KeylessError, SSLError, SSLZeroReturnError, error_from_conn,
                             error_from_queue, transport_eof)
from fasttls._pause import HandshakePause

__all__ = ["TLS", "Session", "newtls", "socket_timeout_ms"]

_OK = lib.FASTTLS_OK
_CLOSED = lib.FASTTLS_CLOSED
_ERROR = lib.FASTTLS_ERROR
_LOOK = lib.FASTTLS_LOOK
# Bound once: a module global is cheaper to reach than an attribute of `lib` on every call.
_unpack = ffi.unpack
_buffer = ffi.buffer
# The length given to the views of the engine's buffers (see TLS._plain): they are only ever
# sliced to a count the engine just wrote there, so they need no true length.
_WHOLE = sys.maxsize
_engine_read = lib.fasttls_py_read
_engine_write = lib.fasttls_py_write
_from_buffer = ffi.from_buffer
# The socket operations (see "socket I/O inside the engine" below).
_engine_recv = lib.fasttls_recv
_engine_send = lib.fasttls_send
_WANT_READ = lib.FASTTLS_WANT_READ
_WANT_WRITE = lib.FASTTLS_WANT_WRITE
_EOF = lib.FASTTLS_EOF
_IO_ERROR = lib.FASTTLS_IO_ERROR
_TIMEOUT = lib.FASTTLS_TIMEOUT
_WANT_HELLO = lib.FASTTLS_WANT_HELLO
_HELLO_SESSION = lib.FASTTLS_HELLO_SESSION
_HELLO_SNI = lib.FASTTLS_HELLO_SNI
_WANT_SIGN = lib.FASTTLS_WANT_SIGN

# Input: bytes go to C as they are (no copy); other buffers through ffi.from_buffer (no copy).
# _release_input: an operation that raises drops its from_buffer cdata first. The exception's
# traceback keeps the raising frame, and the frame would keep the cdata, which holds an export
# of the caller's memoryview; in that cycle the garbage collector may clear the memoryview
# before the cdata releases it, and the release then touches freed memory (a crash).
Buffer = Union[bytes, bytearray, memoryview]


def _is_ip_address(name: str) -> bool:
    # inet_pton is C and strict (no "1.2.3" shorthand); ipaddress costs ~10 us a connection.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, name)
            return True
        except OSError:
            pass
    return False


def _peer_name(hostname: str) -> "tuple[str, bool]":
    """(the name to send and check, whether it is an IP address) for a client's hostname.
    Refused as the stdlib refuses them: "" and a leading dot (OpenSSL would take ".example.com"
    as "any subdomain of example.com") with ValueError, a NUL with TypeError."""
    if not hostname or hostname.startswith("."):
        raise ValueError("server_hostname cannot be an empty string or start with a leading dot.")
    if "\0" in hostname:
        raise TypeError("server_hostname must not contain a NUL character")
    name = hostname.strip("[]")
    if _is_ip_address(name):
        return name, True
    name = name.rstrip(".")
    if not name:
        raise ValueError(f"invalid hostname {hostname!r}")
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return name, False


_ALERT_INTERNAL_ERROR = 80


class State(enum.Enum):
    """Where a connection is. Only `TLS` changes it."""

    HANDSHAKING = "handshaking"   # before and during the handshake
    OPEN = "open"                 # data flows both ways
    PEER_CLOSED = "peer closed"   # the peer's close_notify arrived: reads end, writes go on
    CLOSING = "closing"           # we sent close_notify and wait for the peer's
    CLOSED = "closed"             # both close_notify seen, or closed before/without a handshake
    BROKEN = "broken"             # a fatal error: nothing more can be read or written


class Session:
    """A TLS session from a finished client connection, for `newtls(..., session=)`. It may
    only be used with the Context it came from (a session carries the verification result of
    its first handshake: resumed on another Context, it would skip that Context's checks)."""

    __slots__ = ("_ptr", "_context", "__weakref__")

    def __init__(self, ptr, context: Optional[Context] = None) -> None:
        self._ptr = ffi.gc(ptr, lib.SSL_SESSION_free)
        self._context = context

    @property
    def resumable(self) -> bool:
        return bool(lib.SSL_SESSION_is_resumable(self._ptr))

    # The stdlib's SSLSession attributes.

    @property
    def id(self) -> bytes:
        length = ffi.new("unsigned int *")
        raw = lib.SSL_SESSION_get_id(self._ptr, length)
        return ffi.unpack(ffi.cast("char *", raw), length[0])

    @property
    def time(self) -> int:
        """When the session was made, in seconds since the epoch."""
        return lib.SSL_SESSION_get_time(self._ptr)

    @property
    def timeout(self) -> int:
        """Its lifetime in seconds."""
        return lib.SSL_SESSION_get_timeout(self._ptr)

    @property
    def has_ticket(self) -> bool:
        return bool(lib.SSL_SESSION_has_ticket(self._ptr))

    @property
    def ticket_lifetime_hint(self) -> int:
        return lib.SSL_SESSION_get_ticket_lifetime_hint(self._ptr)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Session):
            return NotImplemented
        return self.id == other.id

    def __hash__(self) -> int:
        return hash(self.id)


class TLS:
    """One TLS connection, client or server, over bytes. See the module docstring."""

    __slots__ = ("_conn", "_context", "_server", "_hostname", "_state", "_started", "_done",
                 "_readable", "_writable", "_buffer", "_offset", "_pending_error",
                 "_eof_returned", "_callback_error", "_post_handshake_auth", "_owner", "transport",
                 "_release", "_plain", "_out", "_read_output", "_pause", "_sign_error",
                 "_sign_thread", "__weakref__")

    def __init__(self, method: str, ctx: Context, hostname: Optional[str] = None,
                 session: Optional[Session] = None) -> None:
        if method not in ("client", "server"):
            raise ValueError(f'method must be "client" or "server", not {method!r}')
        if not isinstance(ctx, Context):
            raise TypeError("ctx must be a fasttls Context (from newctx())")
        self._server = method == "server"
        if not self._server:
            ctx._prepare_client()
        # The struct's memory is Python's (freed after every finalizer has run); the SSL object
        # is released by a finalizer of its own, after which operations fail cleanly (see
        # fasttls_conn_init).
        conn = ffi.new("fasttls_conn *")
        if lib.fasttls_conn_init(conn, ctx._ctx, self._server) != 1:  # under ctx's read lock
            raise error_from_queue("cannot create a TLS connection")
        self._conn = conn
        self._release = ffi.gc(conn, lib.fasttls_conn_release)
        self._callback_error: Optional[BaseException] = None
        self._sign_error: Optional[BaseException] = None  # a failed SigningRequest's
        self._sign_thread: Optional[int] = None  # where a signing pause must be continued
        self._pause: Optional[HandshakePause] = None
        self._context = ctx  # the SSL holds the SSL_CTX; this keeps the Python side too
        self._hostname: Optional[str] = None
        self._state = State.HANDSHAKING
        self._started = False  # the first handshake step was taken
        self._done = False  # the handshake completed (stays True if the connection breaks later)
        # Plaintext decrypted but not yet returned: one buffer, read from `_offset` on.
        self._buffer = b""
        self._offset = 0
        self._pending_error: Optional[SSLError] = None  # raised once the buffer is drained
        self._eof_returned = False
        # The fast paths test one flag each; `_set_state` and the buffer keep them true to the
        # state: `_readable` means "open, nothing buffered, no error waiting, no ciphertext
        # held": a read has nothing to look at but new ciphertext (the stdlib adapter's idle
        # memory-BIO read relies on that to raise want-read without calling the engine).
        self._readable = self._writable = False
        # Views of the engine's plaintext and output buffers, at the addresses it last gave (it
        # reports a move as FASTTLS_LOOK): the fast paths read no field of the connection, and
        # slicing a view (`view[:n]`, bytes) costs less than ffi.unpack.
        self._plain: Any = b""
        self._out: Any = b""
        # A read produced bytes to send (a KeyUpdate reply): `pending_output` without a look at
        # the engine, for the stdlib adapter's fast read. write() and _take_output clear it.
        self._read_output = False
        self._owner: Any = None  # see `owner`
        self.transport: Any = None  # the socket the helpers use for this connection
        self._post_handshake_auth = False
        self._apply_verify_mode()
        if hostname is not None:
            self.set_hostname(hostname)
        if session is not None:
            self.set_session(session)

    @property
    def owner(self) -> Any:
        """Free for the application (the stdlib adapter keeps itself here). Held weakly, as the
        stdlib's SSLObject holds its owner: an object that owns this connection and is named
        here is not kept alive by the cycle (a context would otherwise live until the cyclic
        garbage collector runs)."""
        return self._owner() if self._owner is not None else None

    @owner.setter
    def owner(self, value: Any) -> None:
        self._owner = weakref.ref(value) if value is not None else None

    def set_hostname(self, hostname: Optional[str]) -> None:
        """The server's name: sent as SNI (if a DNS name) and checked against its certificate.
        Only before the handshake starts."""
        if self._started:
            raise ValueError("set_hostname() must come before the handshake starts")
        if self._server or hostname is None:
            self._hostname = None if self._server else hostname
            return
        if isinstance(hostname, bytes):
            hostname = hostname.decode("ascii")
        name, is_ip = _peer_name(hostname)
        check = self._context._hostname_check_level()
        if not lib.fasttls_conn_set_peer_name(self._conn, name.encode(), is_ip, check, True):
            lib.ERR_clear_error()  # a failure here must not surface on a later call
            raise ValueError(f"invalid hostname {hostname!r}")
        self._hostname = hostname

    def set_session(self, session: Session) -> None:
        """Resume `session` (client side, before the handshake). It must come from this
        connection's Context (ValueError otherwise, as with the stdlib)."""
        # The stdlib's checks, in its order and words.
        if not isinstance(session, Session):
            raise TypeError("Value is not a SSLSession.")
        if session._context is not self._context:
            raise ValueError("Session refers to a different SSLContext.")
        if self._server:
            raise ValueError("Cannot set session for server-side SSLSocket.")
        if self._started:
            raise ValueError("Cannot set session after handshake.")
        if not lib.fasttls_conn_set_session(self._conn, session._ptr):  # leaves no error queued
            raise SSLError(ssl.SSL_ERROR_SSL, "cannot use this session")

    @property
    def context(self) -> Context:
        return self._context

    def set_context(self, ctx: Context) -> None:
        """Serve (or connect) from another Context: its certificate, trust store, verify mode
        and hostname check. Before the handshake, or from a server's sni_callback; after the
        handshake it only changes which Context later sessions belong to (as the stdlib)."""
        if not isinstance(ctx, Context):
            raise TypeError("ctx must be a fasttls Context (from newctx())")
        if ctx is self._context:
            return
        if not self._server:
            ctx._prepare_client()
        if self._server and ctx._signer is not None:
            self._context._check_keyless_compatible("an sni_callback switching to a keyless "
                                                    "context")
        if not lib.fasttls_conn_switch_ctx(self._conn, ctx._ctx):  # locks `ctx` itself
            lib.ERR_clear_error()
            raise SSLError(ssl.SSL_ERROR_SSL, "cannot switch the connection to another context")
        self._context = ctx
        self._apply_verify_mode()
        if not self._server and self._hostname is not None and not self._started:
            hostname, self._hostname = self._hostname, None
            self.set_hostname(hostname)  # the new context's hostname check

    def _apply_verify_mode(self) -> None:
        mode = self._context._openssl_verify_mode(self._server)
        if self._post_handshake_auth and self._server and mode & lib.SSL_VERIFY_PEER:
            # As the stdlib (bpo-37428): only with SSL_VERIFY_PEER; the certificate is then
            # asked for by verify_client_post_handshake(), not during the handshake.
            mode |= lib.SSL_VERIFY_POST_HANDSHAKE
        lib.fasttls_conn_set_verify(self._conn, mode)

    def enable_post_handshake_auth(self) -> None:
        """TLS 1.3 post-handshake client authentication, before the handshake: a client offers
        it; a server that verifies clients asks for their certificate only when
        `verify_client_post_handshake()` is called."""
        if self._started:
            raise ValueError("post-handshake authentication must be enabled before the handshake")
        self._post_handshake_auth = True
        if self._server:
            self._apply_verify_mode()
        elif not lib.fasttls_conn_enable_pha(self._conn):
            raise SSLError(ssl.SSL_ERROR_SSL, "the TLS connection was already released")

    def verify_client_post_handshake(self) -> bytes:
        """Server, TLS 1.3: ask the client for its certificate now. Returns the
        CertificateRequest to send; the answer is verified by a later `read()`. An SSLError
        (not TLS 1.3, the client did not offer it, not a server) leaves the connection usable."""
        if lib.fasttls_conn_verify_client_post_handshake(self._conn) == _ERROR:
            raise error_from_conn(self._conn, self._hostname)
        return self._take_output()

    @property
    def state(self) -> State:
        return self._state

    def _set_state(self, state: State) -> None:
        self._state = state
        self._writable = state is State.OPEN or state is State.PEER_CLOSED
        self._readable = ((state is State.OPEN or state is State.CLOSING)
                          and self._offset >= len(self._buffer) and self._pending_error is None)

    # ---- the four operations ----

    def handshake(self, data: Buffer = b"") -> bytes:
        """Feed received bytes, advance the handshake, return all bytes to send."""
        if self._state is not State.HANDSHAKING:
            self._check_handshake_over()
            return self._take_output()
        self._before_step()
        if type(data) is not bytes:
            data = ffi.from_buffer(data)
        status = lib.fasttls_handshake(self._conn, data, len(data))
        del data  # see _release_input
        while status == _WANT_HELLO and self._conn.hello_wants & _HELLO_SNI:
            self._run_sni_callback()
            status = lib.fasttls_handshake(self._conn, b"", 0)
        if status == _ERROR:
            raise self._handshake_failure()
        if status == _OK:
            self._handshake_done()
            if self._conn.held_len:
                self._readable = False  # ciphertext came with the last flight: see _read_buffered
        elif status == _WANT_HELLO:
            self._pause = self._paused()
        elif status == _WANT_SIGN:
            self._pause = self._signing_request()
        return self._take_output()

    @property
    def pause(self) -> Optional[HandshakePause]:
        """What the handshake waits for, the application's work rather than the peer's (a server's
        session lookup in a shared store: a `fasttls.store.SessionLookup`; a keyless signature:
        a `fasttls.SigningRequest`), or None. The last handshake call returned with the
        handshake still running (`handshake()` with whatever is to be sent, `handshake_on()`
        False); resolve it (`resolve(timeout)` or `await resolve_async()`, see fasttls._pause)
        and call the handshake again, on the same thread for a SigningRequest."""
        return self._pause

    def _paused(self) -> Optional[HandshakePause]:
        """The pause for the engine's FASTTLS_WANT_HELLO: what the client-hello callback asks."""
        wants = self._conn.hello_wants
        if wants & _HELLO_SESSION:
            from fasttls.store._lookup import SessionLookup  # only servers with a store get here
            return SessionLookup(self, self._context._session_store)
        raise SSLError(ssl.SSL_ERROR_SSL, f"the handshake paused for unknown work {wants:#x}")

    def _signing_request(self) -> HandshakePause:
        from fasttls._signing import SigningRequest  # only keyless servers get here
        self._sign_thread = threading.get_ident()
        return SigningRequest(self, self._context._signer)

    def _run_sni_callback(self) -> None:
        """FASTTLS_HELLO_SNI: the context's sni_callback, between two handshake calls (never
        inside one: see fasttls_hello.c). Its answer goes to the engine: go on (maybe from the
        Context it chose), or fail with an alert; its exception is kept for handshake()."""
        conn = self._conn
        alert = 0
        callback = self._context.sni_callback
        name = ffi.string(conn.hello_name).decode("ascii", "replace") or None
        try:
            chosen = callback(self, name) if callback is not None else None
            if isinstance(chosen, int) and not isinstance(chosen, bool):
                alert = chosen if 0 < chosen < 256 else _ALERT_INTERNAL_ERROR  # refused
            elif chosen is not None:
                if not isinstance(chosen, Context):
                    raise TypeError(f"sni_callback must return a Context, an alert number or "
                                    f"None, not {chosen!r}")
                self.set_context(chosen)  # all of its settings, its verify mode included
        except BaseException as exc:  # re-raised by the handshake call, with the alert
            self._callback_error = exc
            alert = _ALERT_INTERNAL_ERROR
        lib.fasttls_conn_sni_done(conn, alert)

    def _handshake_done(self) -> None:
        self._done = True
        self._set_state(State.OPEN)
        if self._context._session_store is not None:
            self._context._session_store_saver.save(self)

    def finished(self) -> bool:
        """The handshake completed (also after the connection closed or broke later)."""
        return self._done

    def read(self, data: Buffer = b"", size: int = -1) -> bytes:
        """Feed received ciphertext; return the plaintext available now: all of it, or at most
        `size` bytes (the rest stays here for the next call: see `pending`). b"" if none yet,
        or after the peer's close_notify (see `eof`)."""
        if not self._readable:
            return self._read_buffered(data, size)
        if type(data) is not bytes:
            data = _from_buffer(data)
        n = _engine_read(self._conn, data, len(data))
        if n > 0:
            if size < 0 or n <= size:
                return self._plain[:n]
            self._buffer = self._plain[:n]
            self._readable = False
            return self._take(size)
        if n == 0:
            return b""
        if n == _LOOK:
            n = self._look()
            if n > 0:
                self._buffer = self._plain[:n]
                self._readable = False
                return self._take(size)
            return b""
        del data  # see _release_input
        return self._read_ended(n, size)

    def _look(self) -> int:
        """After FASTTLS_LOOK from a read: the plaintext count, the buffer's new address."""
        conn = self._conn
        self._plain = _buffer(conn.plain, _WHOLE)
        if conn.out_len:
            self._read_output = True
        return conn.plain_len

    def _read_ended(self, status: int, size: int) -> bytes:
        """close_notify or a failure: what was decrypted before it is returned first."""
        conn = self._conn
        self._buffer += _unpack(conn.plain, conn.plain_len) if conn.plain_len else b""
        if status == _CLOSED:
            self._set_state(State.CLOSED if self._state is State.CLOSING else State.PEER_CLOSED)
        else:
            error = self._failure()
            if self._offset >= len(self._buffer):
                raise error
            self._pending_error = error
        return self._take(size)

    def _read_buffered(self, data: Buffer, size: int) -> bytes:
        """The slow path: buffered plaintext, an error waiting, or not open for reading."""
        if data and (self._state is State.OPEN or self._state is State.CLOSING) and (
                self._pending_error is None):
            # New ciphertext behind buffered plaintext: decrypt it too, keep the order.
            if type(data) is not bytes:
                data = _from_buffer(data)
            n = _engine_read(self._conn, data, len(data))
            if n == _LOOK:
                n = self._look()
            if n > 0:
                self._buffer = self._buffer[self._offset:] + self._plain[:n]
                self._offset = 0
            elif n < 0:
                del data  # see _release_input
                self._buffer = self._buffer[self._offset:]
                self._offset = 0
                self._read_ended(n, 0)
        if self._offset < len(self._buffer):
            return self._take(size)
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        state = self._state
        if state is State.BROKEN:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection failed earlier and is unusable")
        if state is State.HANDSHAKING:
            raise SSLError(ssl.SSL_ERROR_SSL, "read() before the handshake finished")
        if state is State.OPEN or state is State.CLOSING:
            self._readable = True  # the buffer was drained by size=0 or unread(b"")
            return self.read(b"", size) if data == b"" and self.pending_input else b""
        self._eof_returned = True
        return b""  # after close_notify: whatever follows is not data

    def _take(self, size: int) -> bytes:
        """Up to `size` bytes (all if negative) of the buffered plaintext."""
        buffer, start = self._buffer, self._offset
        if size < 0 or start + size >= len(buffer):
            chunk = buffer[start:] if start else buffer
            self._buffer, self._offset = b"", 0
            self._set_state(self._state)  # readable again if nothing else is waiting
            return chunk
        self._offset = start + size
        return buffer[start:start + size]

    def unread(self, plaintext: bytes) -> None:
        """Give back plaintext that `read()` returned but could not be delivered (e.g. sending a
        KeyUpdate reply failed after it): the next `read()` returns it first."""
        if plaintext:
            self._buffer = plaintext + self._buffer[self._offset:]
            self._offset = 0
            self._readable = False

    @property
    def pending(self) -> int:
        """Plaintext bytes decrypted and waiting in this object (after a `read(size=...)`)."""
        return len(self._buffer) - self._offset

    @property
    def eof(self) -> bool:
        """The peer sent close_notify (plaintext before it may still be `pending`)."""
        return self._state is State.PEER_CLOSED or (self._state is State.CLOSED and self._done
                                                    and self._peer_closed())

    @property
    def eof_returned(self) -> bool:
        """`read()` has returned the b"" that stands for the peer's close_notify."""
        return self._eof_returned

    def _peer_closed(self) -> bool:
        ssl_object = self._conn.ssl
        return ssl_object != ffi.NULL and bool(
            lib.SSL_get_shutdown(ssl_object) & lib.SSL_RECEIVED_SHUTDOWN)

    def write(self, data: Buffer = b"") -> bytes:
        """Encrypt `data`; return the ciphertext to send, preceded by anything pending.
        With no data, just flush what is pending."""
        if not self._writable:
            if data:
                self._refuse_write()
            return self._take_output()
        if type(data) is not bytes:
            data = _from_buffer(data)
        n = _engine_write(self._conn, data, len(data))
        self._read_output = False  # whatever reading left waiting leaves with this
        if n > 0:
            return self._out[:n]
        if n == 0:
            return b""
        if n == _LOOK:
            self._out = _buffer(self._conn.out, _WHOLE)
            return self._take_output()
        del data  # see _release_input
        raise self._failure()

    def _refuse_write(self):
        if self._pending_error is not None:
            # The failure a read found behind its plaintext (the peer's fatal alert) is what
            # a write reports too, as with the stdlib.
            error, self._pending_error = self._pending_error, None
            raise error
        state = self._state
        if state is State.CLOSING or state is State.CLOSED:
            raise SSLZeroReturnError(ssl.SSL_ERROR_ZERO_RETURN, "write() after close()")
        if state is State.BROKEN:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection failed earlier and is unusable")
        raise SSLError(ssl.SSL_ERROR_SSL, "write() before the handshake finished")

    def close(self) -> bytes:
        """The close_notify alert to send (b"" if the handshake never finished or the
        connection failed). Safe to call more than once. Reading goes on until the peer's
        close_notify (`eof`)."""
        state = self._state
        if state is State.OPEN or state is State.PEER_CLOSED:
            self._set_state(State.CLOSING if state is State.OPEN else State.CLOSED)
            if lib.fasttls_shutdown(self._conn) == _ERROR:
                self._failure()
            return self._take_output()
        if state is State.HANDSHAKING:
            self._set_state(State.CLOSED)
        return b""

    def __enter__(self) -> "TLS":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- internals ----

    def _before_step(self) -> None:
        """Before a handshake step: the first one's checks; a signing pause (an OpenSSL job)
        continues only on the thread that started it (the engine refuses too, as a failure)."""
        if self._sign_thread is not None:
            if self._sign_thread != threading.get_ident():
                raise SSLError(ssl.SSL_ERROR_SSL, "a keyless handshake must be continued on "
                               "the thread that started it")
            self._sign_thread = None
        self._pause = None  # resolved (else the engine pauses again, with a new one)
        if not self._started:
            self._check_start()
            self._started = True

    def _check_start(self) -> None:
        ctx = self._context
        if not self._server and (ctx._ocsp_stapling or ctx._require_ocsp_staple):
            lib.fasttls_conn_request_ocsp(self._conn)  # the context as it is now
        if (not self._server and self._hostname is None and ctx.check_hostname
                and ctx._openssl_verify_mode(False) != lib.SSL_VERIFY_NONE):
            raise ValueError("check_hostname requires server_hostname: pass newtls(..., "
                             "hostname=) or set ctx.check_hostname = False (insecure)")

    def _take_output(self) -> bytes:
        conn = self._conn
        self._read_output = False
        n = conn.out_len
        if not n:
            return b""
        out = _unpack(conn.out, n)
        conn.out_len = 0
        return out

    def _check_handshake_over(self) -> None:
        """A handshake call out of the handshake: fine once it completed, else an SSLError."""
        if self._state is State.BROKEN:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection failed earlier and is unusable")
        if not self._done:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection was closed before its handshake")

    def _handshake_failure(self) -> BaseException:
        """What a failed handshake step raises: the error, or an sni_callback's own exception
        carrying the alert still to be sent."""
        error = self._failure()
        if self._sign_error is not None:
            sign_error, self._sign_error = self._sign_error, None
            failure = KeylessError(f"the handshake failed: {sign_error.args[-1]}",
                                   getattr(sign_error, "reason", None) or "SIGNER_ERROR")
            failure.alert = error.alert
            failure.__cause__ = sign_error
            return failure
        if self._callback_error is None:
            return error
        callback_error, self._callback_error = self._callback_error, None
        callback_error.alert = error.alert  # type: ignore[attr-defined]
        return callback_error

    def _failure(self) -> SSLError:
        self._set_state(State.BROKEN)
        if self._conn.ssl == ffi.NULL:
            return SSLError(ssl.SSL_ERROR_SSL, "the connection was already released")
        error = error_from_conn(self._conn, self._hostname)
        error.alert = self._take_output()
        if self._server and self._context._session_store is not None:
            self._context._session_store_saver.evict(self)  # as OpenSSL's own cache does
        return error

    @property
    def pending_input(self) -> bool:
        """Received ciphertext is waiting (e.g. data that came with the last handshake
        flight): `read()` with no new data will decrypt it."""
        return self._conn.held_len > 0

    @property
    def pending_output(self) -> bool:
        """Bytes are waiting to be sent: `write()` returns them."""
        return self._conn.out_len > 0

    def release_buffers(self) -> None:
        """Free the record buffers of an idle connection; they come back when needed."""
        lib.fasttls_conn_release_buffers(self._conn)

    # ---- socket I/O inside the engine ----
    #
    # The same operations over a socket's file descriptor, the system calls made by the engine
    # in the same C call as the TLS work (GIL released): one crossing per operation, no receive
    # buffer allocated per call. timeout_ms: 0 never blocks, -1 waits forever, else the most
    # the whole call may wait (a socket's gettimeout() in ms). The state, the plaintext buffer
    # and the pending error are those of read()/write()/handshake(); the two sets may be mixed
    # on one connection. Ciphertext the socket did not take waits in the engine (`unsent`) and
    # leaves first with the next send_to(). A failure's alert is sent by the engine if the
    # socket takes it at once, and is on the exception (exc.alert) all the same, as with the
    # memory operations: callers must not send it again.

    def recv_from(self, fd: int, timeout_ms: int = 0, size: int = -1) -> Optional[bytes]:
        """Receive and decrypt: plaintext (at most `size` bytes if size > 0, the rest kept as
        read() keeps it); None if nothing complete arrived (only with timeout_ms == 0: it would
        block); b"" once the peer's close_notify came. A transport EOF without close_notify
        raises SSLEOFError, a system call's failure OSError, an expired timeout
        socket.timeout; TLS failures raise as read() does."""
        if not self._readable:
            return self._recv_slow(fd, timeout_ms, size)
        conn = self._conn
        n = _engine_recv(conn, fd, timeout_ms)
        if n > 0:
            if size < 0 or n <= size:
                return _unpack(conn.plain, n)
            self._buffer = _unpack(conn.plain, n)
            self._readable = False
            return self._take(size)
        return self._recv_ended(n, fd, timeout_ms, size)

    def _recv_slow(self, fd: int, timeout_ms: int, size: int) -> Optional[bytes]:
        """Buffered plaintext first, then an error waiting; the end; or not open for reading."""
        if self._offset >= len(self._buffer) and self._pending_error is None and (
                self._state is State.OPEN or self._state is State.CLOSING):
            self._readable = True  # the buffer was drained by unread(b"") or size=0
            return self.recv_from(fd, timeout_ms, size)
        return self._read_buffered(b"", size)

    def _recv_ended(self, status: int, fd: int, timeout_ms: int, size: int) -> Optional[bytes]:
        if status == _WANT_READ:
            return None
        if status == _CLOSED or status == _ERROR:
            chunk = self._read_ended(status, size)
            if not chunk and status == _CLOSED:
                self._eof_returned = True
            return chunk
        if status == _EOF:
            raise transport_eof()
        conn = self._conn
        if conn.plain_len:  # decrypted before sending its KeyUpdate reply failed: kept
            self.unread(_unpack(conn.plain, conn.plain_len))
        if status == _IO_ERROR and conn.io_errno == errno.EINTR:
            return self.recv_from(fd, timeout_ms, size)  # signal handlers ran (PEP 475)
        raise self._io_failure(status, "read")

    def send_to(self, fd: int, data: Buffer = b"", timeout_ms: int = 0) -> int:
        """Encrypt `data` (none: only flush) behind what is still unsent and send: the
        ciphertext bytes the socket did not take yet (0: everything went). Raises as write()
        does, and as recv_from() for the socket."""
        if not self._writable:
            if data:
                self._refuse_write()
            data = b""
        elif type(data) is not bytes:
            data = _from_buffer(data)
        n = _engine_send(self._conn, fd, data, len(data), timeout_ms)
        if n >= 0:
            return n
        if n == _IO_ERROR and self._conn.io_errno == errno.EINTR:
            return self.send_to(fd, b"", timeout_ms)  # what it encrypted waits in the engine
        if n == _ERROR:
            raise self._failure()
        raise self._io_failure(n, "write")

    @property
    def unsent(self) -> int:
        """Ciphertext bytes waiting in the engine for the socket (send_to() sends them first)."""
        return self._conn.out_len

    def handshake_on(self, fd: int, timeout_ms: int = 0) -> bool:
        """Run the handshake over `fd`: True once done; False if the socket would block (only
        with timeout_ms == 0; `wants_write` says which way) or the handshake waits for the
        application (`pause` is set: resolve it, then call this again). Raises as handshake()
        does, and as recv_from() for the socket (a transport EOF: SSLEOFError)."""
        if self._state is not State.HANDSHAKING:
            self._check_handshake_over()
            return True
        self._before_step()
        while True:
            status = lib.fasttls_handshake_fd(self._conn, fd, timeout_ms)
            if status == _OK:
                self._handshake_done()
                return True
            if status == _WANT_READ or status == _WANT_WRITE:
                return False
            if status == _WANT_HELLO and self._conn.hello_wants & _HELLO_SNI:
                self._run_sni_callback()
                continue
            if status == _WANT_HELLO:
                self._pause = self._paused()
                return False
            if status == _WANT_SIGN:
                self._pause = self._signing_request()
                return False
            if status == _ERROR:
                raise self._handshake_failure()
            if status == _EOF:
                raise transport_eof()
            if status != _IO_ERROR or self._conn.io_errno != errno.EINTR:
                raise self._io_failure(status, "handshake")

    @property
    def wants_write(self) -> bool:
        """After handshake_on() returned False: True if it waits for the socket to take its
        flight (poll for writing), False if for the peer's (poll for reading)."""
        return self._conn.out_len > 0

    def enable_duplex(self) -> "EngineLock":
        """Let one reader thread (recv_from) and one writer thread (send_to) use this
        connection at once: those two take the engine's lock themselves, only around the TLS
        work, never while waiting on the socket. Every other call that runs the engine (read,
        write, close, verify_client_post_handshake, ...) must then hold the returned lock."""
        if not lib.fasttls_conn_enable_duplex(self._conn):
            raise MemoryError("cannot create the connection's lock")
        return EngineLock(self._conn)

    def _io_failure(self, status: int, operation: str) -> OSError:
        if status == _TIMEOUT:
            return socket.timeout(f"The {operation} operation timed out")
        if status == _IO_ERROR:
            code = self._conn.io_errno
            return OSError(code, os.strerror(code))
        return SSLError(ssl.SSL_ERROR_SSL, f"unexpected engine status {status}")

    # ---- information ----

    def _ssl(self):
        """The SSL object, for the information calls; ValueError once released."""
        ssl_object = self._conn.ssl
        if ssl_object == ffi.NULL:
            raise ValueError("the TLS connection was already released")
        return ssl_object

    def version(self) -> Optional[str]:
        return ffi.string(lib.SSL_get_version(self._ssl())).decode() if self._done else None

    def cipher(self):
        """(name, protocol version, secret bits), like the stdlib's, or None."""
        c = lib.SSL_get_current_cipher(self._ssl()) if self._done else ffi.NULL
        if c == ffi.NULL:
            return None
        return (ffi.string(lib.SSL_CIPHER_get_name(c)).decode(),
                ffi.string(lib.SSL_CIPHER_get_version(c)).decode(),
                lib.SSL_CIPHER_get_bits(c, ffi.NULL))

    def selected_alpn_protocol(self) -> Optional[str]:
        data = ffi.new("const unsigned char **")
        length = ffi.new("unsigned int *")
        lib.SSL_get0_alpn_selected(self._ssl(), data, length)
        if not length[0]:
            return None
        return ffi.unpack(ffi.cast("char *", data[0]), length[0]).decode("ascii", "replace")

    def verified_chain(self) -> "Optional[list[Certificate]]":
        """The peer's chain as verified, leaf to trust anchor; None if it was not verified."""
        return self._chain(True)

    def unverified_chain(self) -> "Optional[list[Certificate]]":
        """The chain as the peer sent it, leaf first; None if it sent none."""
        return self._chain(False)

    def _chain(self, verified: bool) -> "Optional[list[Certificate]]":
        chain: "list[Certificate]" = []
        while True:
            x509 = lib.fasttls_conn_chain_cert(self._conn, verified, len(chain))
            if x509 == ffi.NULL:
                return chain or None
            chain.append(Certificate(ffi.gc(x509, lib.X509_free)))

    def shared_ciphers(self) -> "Optional[list[tuple[str, str, int]]]":
        """Server side: the suites both ends offered, as the stdlib's; None on a client."""
        out = ffi.new("const SSL_CIPHER *[]", 256)
        n = lib.fasttls_conn_shared_ciphers(self._conn, out, 256)
        if n < 0:
            return None
        return [(ffi.string(lib.SSL_CIPHER_get_name(c)).decode(),
                 ffi.string(lib.SSL_CIPHER_get_version(c)).decode(),
                 lib.SSL_CIPHER_get_bits(c, ffi.NULL)) for c in out[0:n]]

    def tls_unique(self) -> Optional[bytes]:
        """The RFC 5929 tls-unique channel binding (the first Finished message), or None."""
        buf = ffi.new("unsigned char[]", 64)
        n = lib.fasttls_conn_tls_unique(self._conn, self._server, buf, 64)
        return ffi.unpack(buf, n) if n else None

    def session_reused(self) -> bool:
        return bool(lib.SSL_session_reused(self._ssl()))

    def ocsp_response(self) -> Optional[bytes]:
        """Client side: the DER OCSP response the server stapled, or None (not asked for: see
        Context.ocsp_stapling; none sent; a resumed session; a server connection)."""
        der = ffi.new("const unsigned char **")
        n = lib.fasttls_conn_ocsp_response(self._conn, der)
        return _unpack(ffi.cast("char *", der[0]), n) if n > 0 else None

    @property
    def session(self) -> Optional[Session]:
        ptr = lib.SSL_get1_session(self._ssl())
        return Session(ptr, self._context) if ptr != ffi.NULL else None

    @property
    def server_side(self) -> bool:
        return self._server

    @property
    def server_hostname(self) -> Optional[str]:
        return self._hostname

    def getpeercert(self, binary_form: bool = False):
        """The peer's certificate: a dict like the stdlib's ({} if it was not verified), or DER
        bytes with binary_form=True; None before the handshake or if the peer sent none."""
        if not self._done:
            return None
        x509 = lib.fasttls_peer_certificate(self._ssl())
        if x509 == ffi.NULL:
            return None
        x509 = ffi.gc(x509, lib.X509_free)
        if binary_form:
            return certificate_der(x509)
        if self._context._openssl_verify_mode(self._server) == lib.SSL_VERIFY_NONE:
            return {}
        return certificate_dict(x509)


class EngineLock:
    """The engine's lock of a full-duplex connection (TLS.enable_duplex), as a context
    manager. Waiting for it releases the GIL (a cffi call), so a thread holding it inside the
    engine can always finish."""

    __slots__ = ("_conn",)

    def __init__(self, conn) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        lib.fasttls_conn_lock(self._conn)

    def __exit__(self, *exc_info) -> None:
        lib.fasttls_conn_unlock(self._conn)


def socket_timeout_ms(sock: socket.socket) -> int:
    """A socket's timeout as the socket operations take it: -1 for none (blocking), 0 for a
    non-blocking socket, else milliseconds (rounded up: 0 would mean "never wait")."""
    timeout = sock.gettimeout()
    if timeout is None:
        return -1
    if timeout <= 0:
        return 0
    return min(int(timeout * 1000) + 1, 0x7FFFFFFF)


def handshake_over_socket(tls: TLS, sock: socket.socket) -> bool:
    """The handshake over a socket with its timeout (`handshake_on`), every pause resolved
    here, blocking: up to the socket's timeout, or for a blocking or non-blocking socket up to
    the work's own bound (the store's or signer's timeout). True once done; False if a
    non-blocking socket would block (`tls.wants_write` says which way). The one blocking
    driver of the pause, for the helpers and the drop-in SSLSocket."""
    fd = sock.fileno()
    while not tls.handshake_on(fd, socket_timeout_ms(sock)):
        pause = tls.pause
        if pause is None:
            return False
        timeout = sock.gettimeout()
        pause.resolve(timeout if timeout else None)
    return True


def newtls(method: str, ctx: Context, hostname: Optional[str] = None,
           session: Optional[Session] = None) -> TLS:
    """A new connection: `method` is "client" or "server". See TLS."""
    return TLS(method, ctx, hostname, session)
