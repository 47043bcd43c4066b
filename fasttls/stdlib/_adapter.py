"""The `_ssl._SSLSocket` interface (what ssl.SSLSocket and ssl.SSLObject keep in `_sslobj`)
over a fasttls `TLS` connection.

Theory of operation
-------------------
The stdlib's own `ssl.SSLSocket` and `ssl.SSLObject` classes are used unchanged: they ask their
context for an engine object (`context._wrap_socket(...)` / `context._wrap_bio(...)`) and call
its methods (do_handshake, read, write, shutdown, getpeercert, ...). This adapter is thin: the
connection's state and its plaintext buffer live in the `TLS` object; the adapter moves
ciphertext between it and the transport, and keeps the client session cache.

Threads. An SSLObject over memory BIOs is used by one thread at a time, as the stdlib's (asyncio,
trio, anyio): `SSLObjectAdapter` takes no locks on its paths. One SSLSocket is used full duplex
by websocket and MQTT clients: one thread in recv(), another in sendall(); `SSLSocketAdapter`
makes that safe. OpenSSL's SSL object and the engine's output buffer are not safe for two
threads at once, and cffi releases the GIL in every engine call, so:
* `_engine` (a lock) is held for every engine call, never while waiting on the socket;
* `_output` is held from taking ciphertext out of the engine until the socket took it, so
  records leave in the order they were made. A reader whose decryption produced output (a
  KeyUpdate reply) sends it only if no writer is sending; otherwise the writer sends it after
  its own (see `_flush_pending`), so a reader never waits behind a blocked writer (that would
  deadlock a full-duplex echo);
* two threads in the same direction are a bug in the application: detected, and raised as an
  SSLError naming it, instead of interleaving records.
"""
import _ssl
import socket
import ssl
import threading
import weakref
from collections import OrderedDict
from typing import Any, Optional

from fasttls._errors import SSLError, SSLZeroReturnError, transport_eof
from fasttls._tls import TLS, Session, State, handshake_over_socket, socket_timeout_ms

from ._transports import BIOTransport, SocketTransport, want_read, want_write

_protocol_of = _ssl._SSLContext.protocol.__get__  # type: ignore[attr-defined]  # a C getset

# Non-blocking writes are encrypted at most this much at a time, so what a full socket buffer
# leaves unsent (and the adapter must keep) is one chunk, not the caller's whole buffer.
NONBLOCKING_CHUNK = 16 * 1024


# Truncation, worded as the stdlib words it (anyio and trio match the reason).
eof_error = transport_eof


_READING = "another thread is already reading from this connection"
_WRITING = "another thread is already writing to this connection"


def _conflict(message: str) -> SSLError:
    return SSLError(ssl.SSL_ERROR_SSL, message)


class _Claim:
    """Holds a direction's lock for a rare operation (handshake, shutdown), or raises if another
    thread has it: two threads in the same direction are detected, never interleaved (trio's
    ConflictDetector). read() and write() take the locks inline: a Python-level context
    manager costs more than the rest of a small read."""

    __slots__ = ("_lock", "_message")

    def __init__(self, lock: threading.Lock, message: str) -> None:
        self._lock = lock
        self._message = message

    def __enter__(self) -> None:
        if not self._lock.acquire(False):
            raise _conflict(self._message)

    def __exit__(self, *exc_info) -> None:
        self._lock.release()


class SSLObjectAdapter:
    """What `context._wrap_socket` / `_wrap_bio` return. See the module docstring."""

    # Slots: thousands of idle connections are a use case (memory per connection is measured).
    __slots__ = ("_sslcontext", "_transport", "_owner", "_tls", "_session_key", "_engine",
                 "_output", "_receiving", "_sending", "_write_in_flight", "_incoming",
                 "_outgoing", "__weakref__")

    def __init__(self, context, transport, server_side: bool, server_hostname, owner,
                 session: Optional[Session]) -> None:
        if isinstance(server_hostname, bytes):
            server_hostname = server_hostname.decode("ascii")
        if server_side and server_hostname:
            raise ValueError("server_hostname can only be specified in client mode")
        # As the stdlib: a context made for one role does not serve the other. (The protocol
        # as the base class keeps it: SSLContext.protocol makes an enum, ~1 us.)
        protocol = _protocol_of(context)
        if server_side and protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise SSLError(ssl.SSL_ERROR_SSL,
                           "Cannot create a server socket with a PROTOCOL_TLS_CLIENT context")
        if not server_side and protocol == ssl.PROTOCOL_TLS_SERVER:
            raise SSLError(ssl.SSL_ERROR_SSL,
                           "Cannot create a client socket with a PROTOCOL_TLS_SERVER context")
        self._sslcontext = context
        self._transport = transport
        # A memory-BIO SSLObject's two BIOs, for the fast paths of read() and write() (None for
        # an SSLSocket's adapter, which goes through its transport).
        self._incoming: Optional[ssl.MemoryBIO] = None
        self._outgoing: Optional[ssl.MemoryBIO] = None
        if type(transport) is BIOTransport:
            self._incoming, self._outgoing = transport.incoming, transport.outgoing
        self._owner = weakref.ref(owner) if owner is not None else None
        self._tls = TLS("server" if server_side else "client", context._fasttls,
                        None if server_side else server_hostname)
        self._tls.owner = self  # held weakly (TLS.owner): no reference cycle
        if context.post_handshake_auth:
            self._tls.enable_post_handshake_auth()
        self._session_key: Any = None
        self._engine = threading.Lock()
        self._output = threading.Lock()
        self._receiving = threading.Lock()  # held by the reading thread (see _Claim)
        self._sending = threading.Lock()
        self._write_in_flight = 0  # plaintext bytes of a write whose ciphertext is still unsent
        if session is not None:
            self.session = session

    # ---- the operations ----

    def do_handshake(self) -> None:
        tls = self._tls
        if tls._done:
            return
        if tls._state is not State.HANDSHAKING:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection was closed before its handshake")
        if self._incoming is not None:
            # A memory-BIO SSLObject is used by one thread at a time, as the stdlib's: no
            # claims (a server pays for every Python frame of its handshakes).
            self._handshake_steps(tls)
            return
        with _Claim(self._receiving, _READING), _Claim(self._sending, _WRITING):
            self._transport.flush()
            self._handshake_steps(tls)

    def _handshake_steps(self, tls: TLS) -> None:
        if not tls._started:
            # A client's first step needs no input (it makes the ClientHello); a server's, and
            # every later one, continues with what the peer sent.
            if tls._server:
                data = self._receive()
            else:
                self._resume_from_cache()
                data = b""
        else:
            data = b"" if tls.pending_input else self._receive()
        outgoing = self._outgoing
        while True:
            with self._output:
                with self._engine:
                    try:
                        out = tls.handshake(data)
                    except SSLError as error:
                        self._send_alert(error)
                        raise
                if out:
                    if outgoing is not None:
                        outgoing.write(out)
                    else:
                        try:
                            self._transport.send(out)
                        except (BrokenPipeError, ConnectionResetError):
                            # A TLS 1.3 client that closes right after its Finished never
                            # reads the server's tickets: the handshake is done, and the next
                            # read reports the end (OpenSSL tolerates EPIPE here too).
                            if not tls._done:
                                raise
            pause = tls.pause
            if pause is not None:
                # The handshake waits for the application (a session lookup, a signature):
                # resolved here, blocking up to the work's own bound (a memory-BIO object has
                # no socket timeout; fasttls.aio awaits it instead), then it goes on.
                pause.resolve(None)
                data = b""
                continue
            if tls._done:
                if self._session_key is not None:
                    self._remember_session()
                return
            data = self._receive()

    def _read_after(self, plaintext: bytes, size: int):
        """The rest of a fast read that found something other than plaintext alone: a session
        to remember, bytes to send (a KeyUpdate reply), or no plaintext (read on)."""
        return self._settle(plaintext) or self.read(size)

    def _settle(self, plaintext: bytes) -> bytes:
        """After a decrypt: send what it produced for the peer (the plaintext goes back to the
        TLS object if that fails: decrypted is never dropped) and remember a client's session
        once data flows (TLS 1.3 tickets arrive before the data)."""
        tls = self._tls
        if tls.pending_output:
            try:
                self._flush_pending()
            except BaseException:
                tls.unread(plaintext)
                raise
        if plaintext and self._session_key is not None:
            self._remember_session()
        return plaintext

    def read(self, size: int = 1024, buffer=None):
        """Up to `size` bytes of plaintext (into `buffer` if given: returns the count); b""
        after the peer's close_notify. Any transport, any state (a memory-BIO SSLObject's
        common case goes through `SSLObject.read` first)."""
        if buffer is not None:
            return self._read_into(size, buffer)
        if size <= 0:
            if size < 0:
                raise ValueError("size should not be negative")
            return b""
        tls = self._tls
        if tls.pending:
            return tls.read(b"", size)
        if not tls.finished():
            self.do_handshake()
        transport = self._transport
        while True:  # receive and decrypt until some plaintext (or the end) arrives
            state = tls.state
            if state is not State.OPEN and state is not State.CLOSING:
                tls.read()  # the error waiting, or the end (eof_returned)
                if state is State.CLOSED and tls.finished():
                    # Both close_notify alerts, ours first or second: as the stdlib, reading
                    # past the end then raises (b"" is only for the peer's close_notify alone).
                    raise SSLZeroReturnError(ssl.SSL_ERROR_ZERO_RETURN,
                                             "TLS/SSL connection has been closed (EOF)")
                return b""
            if tls.pending_input:
                data = b""
            else:
                try:
                    data = transport.receive()
                except ssl.SSLWantReadError:
                    transport.idle(tls)
                    raise
                if not data:
                    raise eof_error()
            try:
                plaintext = self._decrypt(data, size)
            except SSLError as error:
                self._send_alert(error)
                raise
            if self._settle(plaintext):
                return plaintext

    def _decrypt(self, data: bytes, size: int) -> bytes:
        return self._tls.read(data, size)

    def _read_into(self, size: int, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if size < 0:
            size = len(view)
        # The base class's read: an SSLSocketAdapter already holds its reading lock here.
        chunk = SSLObjectAdapter.read(self, min(size, len(view)) if size else len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    def write(self, data) -> int:
        """Encrypt `data` and hand the ciphertext to the outgoing BIO (which takes it all)."""
        tls = self._tls
        if not tls.finished():
            self.do_handshake()
        self._transport.send(tls.write(data))  # with anything pending before it
        kind = type(data)
        return len(data) if kind is bytes or kind is bytearray else memoryview(data).nbytes

    def pending(self) -> int:
        """Decrypted bytes waiting to be read. fasttls takes everything that has arrived out of
        the incoming BIO, so a close_notify right behind the data, or data that came with the
        last handshake flight, is no longer in the BIO; uvloop reads only while the BIO or
        pending() is non-empty, so until read() has returned those, they count as pending."""
        tls = self._tls
        waiting = tls.pending
        if not waiting and (tls.pending_input or tls.eof and not tls.eof_returned):
            return 1
        return waiting

    def shutdown(self):
        """Send close_notify, then wait for the peer's (want-read in the meantime). Reads only
        up to the end of the peer's close_notify record: what follows stays in the socket or
        the incoming BIO (unwrap() hands the transport back for plain use)."""
        tls = self._tls
        with _Claim(self._receiving, _READING), _Claim(self._sending, _WRITING):
            transport = self._transport
            with self._output:
                transport.flush()
                if tls.finished() and tls.state in (State.OPEN, State.PEER_CLOSED):
                    self._remember_session()
                    with self._engine:
                        out = tls.close()
                    transport.send(out)
            while tls.finished() and tls.state is State.CLOSING:
                data = transport.receive_record()
                if not data:
                    break  # the peer closed the transport: nothing more to wait for
                with self._engine:
                    tls.read(data)  # data after our close_notify is discarded, as OpenSSL does
        tls.release_buffers()
        return transport.owner_socket()

    # ---- ciphertext in and out ----

    def _receive(self) -> bytes:
        data = self._transport.receive()
        if not data:
            raise eof_error()
        return data

    def _flush_pending(self) -> None:
        """Send what the engine produced outside a write (a KeyUpdate reply)."""
        self._transport.send(self._tls.write())

    def _send_alert(self, error: SSLError) -> None:
        alert = getattr(error, "alert", b"")
        if alert:
            try:
                self._transport.send(alert)
            except (OSError, ssl.SSLWantWriteError):
                pass  # the alert is a courtesy; the error is what matters

    # ---- the client session cache ----

    def _resume_from_cache(self) -> None:
        context = self._sslcontext
        if not context.client_session_cache or self._tls._started:
            return
        self._session_key = self._cache_key()
        session = context._sessions.get(self._session_key)
        if session is not None and session._context is self._tls.context:
            self._tls.set_session(session)

    def _remember_session(self) -> None:
        if self._session_key is None or self._tls.server_side:
            return
        session = self._tls.session
        if session is not None and session.resumable:
            self._sslcontext._sessions.put(self._session_key, session)
            self._session_key = None

    def _cache_key(self):
        """A session is only resumed by a connection that would have verified the same way:
        same server name and address, same verify mode, hostname check and verify flags (the
        cache is the context's; trust stores only grow, so a session verified before a CA was
        added still stands)."""
        peer = None
        if isinstance(self._transport, SocketTransport):
            try:
                peer = socket.socket.getpeername(self._transport.sock)
            except OSError:
                pass
        ctx = self._tls.context
        return (self._tls.server_hostname, peer, ctx._openssl_verify_mode(False),
                ctx._hostname_check_level(), ctx.verify_flags)

    # ---- information ----

    def getpeercert(self, binary_form: bool = False):
        if not self._tls.finished():
            raise ValueError("handshake not done yet")
        return self._tls.getpeercert(binary_form)

    def cipher(self):
        return self._tls.cipher()

    def shared_ciphers(self):
        return self._tls.shared_ciphers()

    def get_verified_chain(self):
        return self._tls.verified_chain()

    def get_unverified_chain(self):
        return self._tls.unverified_chain()

    def version(self):
        return self._tls.version()

    def selected_alpn_protocol(self):
        return self._tls.selected_alpn_protocol()

    def selected_npn_protocol(self):
        return None

    def compression(self):
        return None  # fasttls never compresses (CRIME)

    def ocsp_response(self) -> Optional[bytes]:
        return self._tls.ocsp_response()

    def get_channel_binding(self, cb_type: str = "tls-unique"):
        if cb_type not in ssl.CHANNEL_BINDING_TYPES:
            raise ValueError(f"Unsupported channel binding type {cb_type!r}")
        return self._tls.tls_unique() if self._tls.finished() else None

    def verify_client_post_handshake(self):
        """Ask the client for its certificate now (TLS 1.3): the CertificateRequest leaves at
        once; the answer is verified by the next read."""
        with self._output:
            with self._engine:
                out = self._tls.verify_client_post_handshake()
            if out:
                self._transport.send(out)

    @property
    def context(self):
        return self._sslcontext

    @context.setter
    def context(self, ctx) -> None:
        from ._context import SSLContext

        if not isinstance(ctx, SSLContext):
            raise TypeError("The value must be a SSLContext")
        self._tls.set_context(ctx._fasttls)  # trust store, verify mode, hostname check, cert
        self._sslcontext = ctx

    @property
    def session(self) -> Optional[Session]:
        return self._tls.session

    @session.setter
    def session(self, session: Optional[Session]) -> None:
        if session is not None:
            self._tls.set_session(session)

    @property
    def session_reused(self) -> bool:
        return self._tls.session_reused()

    @property
    def server_side(self) -> bool:
        return self._tls.server_side

    @property
    def server_hostname(self) -> Optional[str]:
        return self._tls.server_hostname

    @property
    def owner(self):
        return self._owner() if self._owner is not None else None


class SSLObject(ssl.SSLObject):
    """The stdlib's SSLObject (what `wrap_bio` of a fasttls SSLContext returns), with read()
    and write() taking the adapter's common case themselves: asyncio, anyio and trio call them
    for every record, and the stdlib's own methods would add a Python frame in front of the
    adapter's. Anything else is the adapter's (`self._sslobj`), as with the stdlib."""

    def read(self, len=1024, buffer=None):
        """When the connection has nothing but new ciphertext to look at (`TLS._readable`):
        the incoming BIO's bytes go to TLS.read, or an idle want-read is raised, and this frame
        and TLS.read are all the Python the read runs."""
        adapter = self._sslobj
        tls = adapter._tls
        incoming = adapter._incoming
        if tls._readable and incoming is not None and buffer is None and len > 0:
            data = incoming.read()
            if data:
                plaintext = tls.read(data, len)
                if plaintext and adapter._session_key is None and not tls._read_output:
                    return plaintext
                return adapter._read_after(plaintext, len)
            if not incoming.eof:
                # Idle: nothing to read until the peer sends. The connection gives back its
                # record buffers (they return on demand); busy connections never get here.
                tls.release_buffers()
                raise want_read()  # a new one each time (see BIOTransport.receive)
        return adapter.read(len, buffer)

    def ocsp_response(self) -> Optional[bytes]:
        """fasttls's addition (the stdlib has none): the DER OCSP response the server stapled,
        or None (see SSLContext.ocsp_stapling)."""
        return self._sslobj.ocsp_response()  # type: ignore[attr-defined]  # not in typeshed

    def write(self, data):
        adapter = self._sslobj
        tls = adapter._tls
        outgoing = adapter._outgoing
        if tls._done and outgoing is not None:
            outgoing.write(tls.write(data))  # with anything pending before it
            kind = type(data)
            return len(data) if kind is bytes or kind is bytearray else memoryview(data).nbytes
        return adapter.write(data)


class SSLSocket(ssl.SSLSocket):
    """The stdlib's SSLSocket (what `wrap_socket` of a fasttls SSLContext returns), unchanged
    but for one method the stdlib has none of."""

    def ocsp_response(self) -> Optional[bytes]:
        """The DER OCSP response the server stapled, or None (also before the handshake, or
        unconnected; see SSLContext.ocsp_stapling)."""
        sslobj = self._sslobj  # type: ignore[attr-defined]  # not in typeshed
        return sslobj.ocsp_response() if sslobj is not None else None


class SSLSocketAdapter(SSLObjectAdapter):
    """The adapter of an SSLSocket: the same, made safe for one reader and one writer thread
    at once (see the module docstring), with bounded non-blocking writes.

    The engine does the socket's system calls itself (TLS.recv_from, send_to, handshake_on),
    in the same C call as the TLS work, with the socket's timeout: one crossing per operation
    and no receive buffer allocated per call. For full duplex the connection's engine lock is
    the engine's own (TLS.enable_duplex): recv_from and send_to take it only around the TLS
    work, never while blocked in recv(), send() or poll(), so a reader blocked on the socket
    never stops a writer, nor the other way round; the rest of the adapter's engine calls
    (`_engine`) hold the same lock. Ciphertext the socket did not take waits in the engine,
    and whichever thread sends next sends it first, so records leave in order."""

    __slots__ = ()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The engine's own lock, used like the base class's threading.Lock (a context manager).
        self._engine = self._tls.enable_duplex()  # type: ignore[assignment]

    def do_handshake(self) -> None:
        tls = self._tls
        if tls.finished():
            return
        if tls.state is not State.HANDSHAKING:
            raise SSLError(ssl.SSL_ERROR_SSL, "the connection was closed before its handshake")
        with _Claim(self._receiving, _READING), _Claim(self._sending, _WRITING):
            if not tls._started and not tls.server_side:
                self._resume_from_cache()
            try:
                done = handshake_over_socket(tls, self._transport.sock)
            except ConnectionResetError:
                raise eof_error() from None  # as an EOF (see SocketTransport.receive)
            if not done:
                raise want_write() if tls.wants_write else want_read()
            self._remember_session()

    def read(self, size: int = 1024, buffer=None):
        """Up to `size` bytes of plaintext (into `buffer` if given: returns the count); b""
        after the peer's close_notify. One engine call receives and decrypts."""
        tls = self._tls
        if not tls.finished():
            self.do_handshake()  # takes both directions itself
        if buffer is not None:
            view = buffer if type(buffer) is bytearray else memoryview(buffer).cast("B")
            if size <= 0 or size > len(view):
                size = len(view)
                if not size:
                    return 0
        elif size <= 0:
            if size < 0:
                raise ValueError("size should not be negative")
            return b""
        receiving = self._receiving
        if not receiving.acquire(False):
            raise _conflict(_READING)
        try:
            sock = self._transport.sock
            # The common blocking socket without a function call (on every read and write).
            timeout = -1 if sock.gettimeout() is None else socket_timeout_ms(sock)
            try:
                plaintext = tls.recv_from(sock.fileno(), timeout, size)
            except ConnectionResetError:
                # As an EOF: the stdlib reports truncation when a TLS 1.3 client resets the
                # connection with its session tickets unread.
                raise eof_error() from None
            if plaintext is None:
                raise want_read()
            if tls.unsent:  # a KeyUpdate reply the socket could not take at once
                try:
                    self._flush_pending()
                except BaseException:
                    tls.unread(plaintext)  # decrypted is never dropped
                    raise
            if plaintext and self._session_key is not None:
                self._remember_session()  # TLS 1.3 tickets arrive before the data
        finally:
            receiving.release()
        if buffer is None:
            return plaintext
        n = len(plaintext)
        view[:n] = plaintext
        return n

    def write(self, data) -> int:
        """Encrypt and send `data`; the count of plaintext bytes sent. A non-blocking socket
        that cannot take the ciphertext raises SSLWantWriteError; the same write, retried,
        first finishes sending what it had encrypted and reports those bytes."""
        tls = self._tls
        if not tls.finished():
            self.do_handshake()
        sending = self._sending
        if not sending.acquire(False):
            raise _conflict(_WRITING)
        try:
            sock = self._transport.sock
            fd = sock.fileno()
            timeout = -1 if sock.gettimeout() is None else socket_timeout_ms(sock)  # see read
            if self._write_in_flight:
                with self._output:
                    if tls.send_to(fd, b"", timeout):
                        raise want_write()  # the socket still cannot take it
                done, self._write_in_flight = self._write_in_flight, 0
                return done
            kind = type(data)
            size = len(data) if kind is bytes or kind is bytearray else memoryview(data).nbytes
            if size > NONBLOCKING_CHUNK and timeout == 0:
                data = memoryview(data).cast("B")[:NONBLOCKING_CHUNK]
                size = NONBLOCKING_CHUNK
            with self._output:
                self._write_in_flight = size
                if tls.send_to(fd, data, timeout):
                    raise want_write()  # non-blocking: the rest waits in the engine
                self._write_in_flight = 0
            return size
        finally:
            sending.release()

    def _flush_pending(self) -> None:
        """Send what the engine produced outside a write (a KeyUpdate reply) and the socket
        did not take at once, unless a writer is sending: it sends this after its own."""
        if self._output.acquire(False):
            try:
                sock = self._transport.sock
                self._tls.send_to(sock.fileno(), b"", socket_timeout_ms(sock))
            finally:
                self._output.release()


class SessionCache:
    """Client sessions by `SSLObjectAdapter._cache_key`: a repeat connection resumes."""

    LIMIT = 256

    def __init__(self) -> None:
        self._sessions: "OrderedDict[tuple, Session]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Optional[Session]:
        with self._lock:
            return self._sessions.pop(key, None)  # single use, as TLS 1.3 tickets are

    def put(self, key, session: Session) -> None:
        with self._lock:
            self._sessions[key] = session
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.LIMIT:
                self._sessions.popitem(last=False)
