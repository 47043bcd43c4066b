"""fasttls behind the stdlib's `ssl` API: `SSLContext`, `create_default_context`, injection.

Theory of operation
-------------------
The stdlib's own `ssl.SSLSocket` and `ssl.SSLObject` classes are used unchanged: they ask their
context for an engine object (`context._wrap_socket(...)` / `context._wrap_bio(...)`) and call
its `_ssl._SSLSocket` methods (do_handshake, read, write, shutdown, getpeercert, ...).
`fasttls.SSLContext` hands them an `_Engine` driving a fasttls `TLS` instead, so code that checks
`isinstance(sock, ssl.SSLSocket)` or reads `sock._sslobj` (httpcore) keeps working.

* All real state lives in the fasttls `Context` (`self._fasttls`): nothing is loaded into the
  stdlib base context, whose only cost is its creation.
* The property setters never go through the stdlib's, which call
  `super(SSLContext, SSLContext)` through the module global and recurse once `ssl.SSLContext` is
  patched (the bug truststore had).
* Errors are fasttls's classes, which subclass the stdlib's and carry its errno values, so
  `SSLSocket`'s ragged-EOF handling, asyncio, aiohttp, anyio and trio treat them as their own.
* Want-read is `ssl.SSLWantReadError` for memory BIOs and non-blocking sockets, as with `_ssl`.
"""
import _ssl
import socket
import ssl
import sys
import threading
import warnings
import weakref
from collections import OrderedDict
from typing import Optional

from fasttls._binding import ffi, lib
from fasttls._certinfo import certificate_der, certificate_dict
from fasttls._context import Context
from fasttls._errors import SSLEOFError, SSLError
from fasttls._tls import TLS, Session

__all__ = ["SSLContext", "create_default_context", "inject_into_ssl", "extract_from_ssl"]

_StdSSLContext = ssl.SSLContext  # captured before any injection
_std_create_default_context = ssl.create_default_context
RECV_SIZE = 64 * 1024  # one read gathers several records: fewer system calls per byte


def _eof_error() -> SSLEOFError:
    """Truncation, worded as the stdlib words it (anyio and trio match the reason)."""
    error = SSLEOFError(ssl.SSL_ERROR_EOF,
                        "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol")
    error.library, error.reason = "SSL", "UNEXPECTED_EOF_WHILE_READING"
    return error


def _want_read() -> ssl.SSLWantReadError:
    return ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "The operation did not complete (read)")


class _SocketTransport:
    """Ciphertext over the SSLSocket's own file descriptor (its timeout applies)."""

    __slots__ = ("sock", "unsent")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.unsent = b""  # ciphertext a non-blocking socket could not take yet

    def receive(self) -> bytes:
        """Some ciphertext; b"" at EOF. Want-read if a non-blocking socket has nothing."""
        self.flush()
        try:
            return socket.socket.recv(self.sock, RECV_SIZE)
        except BlockingIOError:
            raise _want_read() from None

    def send(self, data: bytes) -> None:
        self.unsent += data
        self.flush()

    def idle(self, tls: TLS) -> None:
        pass  # a blocking socket cannot tell idle from busy without another system call

    def flush(self) -> None:
        while self.unsent:
            try:
                sent = socket.socket.send(self.sock, self.unsent)
            except BlockingIOError:
                return  # kept: leaves with the next operation
            self.unsent = self.unsent[sent:]


class _BIOTransport:
    """Ciphertext through the caller's two ssl.MemoryBIO objects."""

    __slots__ = ("incoming", "outgoing")

    def __init__(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
        self.incoming = incoming
        self.outgoing = outgoing

    def receive(self) -> bytes:
        data = self.incoming.read()
        if data or self.incoming.eof:
            return data
        raise _want_read()

    def idle(self, tls: TLS) -> None:
        """Nothing more to read until the peer sends: the connection is idle, so it gives back
        its record buffers (they return on demand); busy connections never get here."""
        tls.release_buffers()

    def send(self, data: bytes) -> None:
        self.outgoing.write(data)


class _Engine:
    """The `_ssl._SSLSocket` interface over a fasttls TLS connection (what ssl.SSLSocket and
    ssl.SSLObject keep in `_sslobj`). Used by one thread at a time, like the stdlib's."""

    # Slots: thousands of idle connections are a use case (memory per connection is measured).
    __slots__ = ("_context", "_transport", "_owner", "_tls", "_explicit_session", "_session_key",
                 "_awaiting_input", "_plaintext", "_offset", "_closing",
                 "_closing_reported")

    def __init__(self, context: "SSLContext", transport, server_side: bool,
                 server_hostname, owner, session: Optional[Session]) -> None:
        if isinstance(server_hostname, bytes):
            server_hostname = server_hostname.decode("ascii")
        if session is not None and not isinstance(session, Session):
            raise TypeError("session must come from a fasttls connection")
        self._context = context
        self._transport = transport
        self._owner = weakref.ref(owner) if owner is not None else None
        self._tls = TLS("server" if server_side else "client", context._fasttls,
                        None if server_side else server_hostname, session)
        self._tls.owner = self
        self._explicit_session = session is not None
        self._session_key = None
        self._awaiting_input = False   # the handshake sent its flight and waits for the peer
        self._plaintext = b""
        self._offset = 0
        self._closing = False
        self._closing_reported = False

    # ---- the operations ----

    def do_handshake(self) -> None:
        tls = self._tls
        if tls.finished():
            return
        if not self._awaiting_input and not tls._started and not tls.server_side:
            self._resume_from_cache()
        while True:
            data = self._receive() if self._awaiting_input else b""
            self._awaiting_input = False
            try:
                out = tls.handshake(data)
            except SSLError as error:
                self._send_alert(error)
                raise
            if out:
                self._transport.send(out)
            if tls.finished():
                self._remember_session()
                return
            self._awaiting_input = True

    def read(self, size: int = 1024, buffer=None):
        """Up to `size` bytes of plaintext; b"" after the peer's close_notify. asyncio and
        SSLSocket call this for every record, so the common path makes few calls."""
        if buffer is not None:
            return self._read_into(size, buffer)
        if self._offset < len(self._plaintext):
            return self._take(size)
        if size <= 0:
            if size < 0:
                raise ValueError("size should not be negative")
            return b""
        tls = self._tls
        if not tls.finished():
            self.do_handshake()
        while True:
            if tls.eof:
                self._closing_reported = True
                return b""
            if self._tls.pending_input:
                data = b""
            else:
                try:
                    data = self._transport.receive()
                except ssl.SSLWantReadError:
                    self._transport.idle(tls)
                    raise
                if not data:
                    raise _eof_error()
            try:
                plaintext = tls.read(data)
            except SSLError as error:
                self._send_alert(error)
                raise
            if tls.pending_output:
                self._transport.send(tls.write())
            if plaintext:
                if self._session_key is not None:
                    self._remember_session()  # TLS 1.3 tickets arrive before the first data
                if size >= len(plaintext):
                    return plaintext  # the whole decrypted run: no copy
                self._plaintext, self._offset = plaintext, 0
                return self._take(size)

    def _read_into(self, size: int, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if size < 0:
            raise ValueError("size should not be negative")
        chunk = self.read(min(size, len(view)) if size else len(view))
        view[:len(chunk)] = chunk
        return len(chunk)

    def write(self, data) -> int:
        if not self._tls.finished():
            self.do_handshake()
        self._transport.send(self._tls.write(data))
        return len(data) if type(data) is bytes else memoryview(data).nbytes

    def pending(self) -> int:
        """Decrypted bytes waiting to be read. fasttls takes everything that has arrived out of
        the incoming BIO, so a close_notify right behind the data, or data that came with the
        last handshake flight, is no longer in the BIO; uvloop reads only while the BIO or
        pending() is non-empty, so until read() has returned those, they count as pending."""
        waiting = len(self._plaintext) - self._offset
        if not waiting and (self._tls.pending_input
                            or self._tls.eof and not self._closing_reported):
            return 1
        return waiting

    def shutdown(self):
        """Send close_notify, then wait for the peer's (want-read in the meantime)."""
        tls = self._tls
        if not self._closing:
            self._closing = True
            if tls.finished():
                self._remember_session()
                self._transport.send(tls.close())
        while tls.finished() and not tls.eof:
            data = self._transport.receive()
            if not data:
                break  # the peer closed the transport: nothing more to wait for
            tls.read(data)  # data after our close_notify is discarded, as OpenSSL does
        tls.release_buffers()
        transport = self._transport
        return transport.sock if isinstance(transport, _SocketTransport) else None

    def _take(self, size: int) -> bytes:
        """Up to `size` bytes of the buffered plaintext (there is some)."""
        start = self._offset
        chunk = self._plaintext[start:start + size]
        self._offset = start + len(chunk)
        if self._offset >= len(self._plaintext):
            self._plaintext, self._offset = b"", 0
        return chunk

    def _receive(self) -> bytes:
        data = self._transport.receive()
        if not data:
            raise _eof_error()
        return data

    def _send_alert(self, error: SSLError) -> None:
        alert = getattr(error, "alert", b"")
        if alert:
            try:
                self._transport.send(alert)
            except OSError:
                pass  # the alert is a courtesy; the error is what matters

    # ---- the client session cache ----

    def _resume_from_cache(self) -> None:
        if self._explicit_session or not self._context.client_session_cache:
            return
        self._session_key = self._cache_key()
        session = self._context._sessions.get(self._session_key)
        if session is not None:
            lib.SSL_set_session(self._tls._ssl(), session._ptr)

    def _remember_session(self) -> None:
        if self._session_key is None or self._tls.server_side:
            return
        session = self._tls.session
        if session is not None and session.resumable:
            self._context._sessions.put(self._session_key, session)
            self._session_key = None

    def _cache_key(self):
        peer = None
        if isinstance(self._transport, _SocketTransport):
            try:
                peer = socket.socket.getpeername(self._transport.sock)
            except OSError:
                pass
        return (self._tls.server_hostname, peer)

    # ---- information ----

    def getpeercert(self, binary_form: bool = False):
        if not self._tls.finished():
            raise ValueError("handshake not done yet")
        return self._tls.getpeercert(binary_form)

    def cipher(self):
        return self._tls.cipher()

    def shared_ciphers(self):
        cipher = self._tls.cipher()
        return [cipher] if cipher else None

    def version(self):
        return self._tls.version()

    def selected_alpn_protocol(self):
        return self._tls.selected_alpn_protocol()

    def selected_npn_protocol(self):
        return None

    def compression(self):
        return None  # fasttls never compresses (CRIME)

    def get_channel_binding(self, cb_type: str = "tls-unique"):
        if cb_type not in ssl.CHANNEL_BINDING_TYPES:
            raise ValueError(f"Unsupported channel binding type {cb_type!r}")
        if not self._tls.finished():
            return None
        buf = ffi.new("unsigned char[]", 64)
        n = lib.fasttls_conn_tls_unique(self._tls._conn, self._tls.server_side, buf, 64)
        return ffi.buffer(buf, n)[:] if n else None

    def verify_client_post_handshake(self):
        raise SSLError(ssl.SSL_ERROR_SSL, "post-handshake authentication is not supported")

    @property
    def context(self) -> "SSLContext":
        return self._context

    @context.setter
    def context(self, ctx: "SSLContext") -> None:
        if not isinstance(ctx, SSLContext):
            raise TypeError("The value must be a fasttls.SSLContext")
        self._context = ctx  # applied by the SNI adapter when set inside sni_callback

    @property
    def session(self) -> Optional[Session]:
        return self._tls.session

    @session.setter
    def session(self, session: Optional[Session]) -> None:
        if self._tls.finished() or self._tls.server_side:
            raise ValueError("Cannot set session after handshake, or on the server side.")
        if session is not None:
            if not isinstance(session, Session):
                raise TypeError("session must come from a fasttls connection")
            lib.SSL_set_session(self._tls._ssl(), session._ptr)
            self._explicit_session = True

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


class _SessionCache:
    """Client sessions by (server name, peer address): a repeat connection resumes."""

    LIMIT = 256

    def __init__(self) -> None:
        self._sessions: "OrderedDict[tuple, Session]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key) -> Optional[Session]:
        with self._lock:
            session = self._sessions.pop(key, None)  # single use, as TLS 1.3 tickets are
            return session

    def put(self, key, session: Session) -> None:
        with self._lock:
            self._sessions[key] = session
            self._sessions.move_to_end(key)
            while len(self._sessions) > self.LIMIT:
                self._sessions.popitem(last=False)


def _versions_of(protocol) -> "tuple[Optional[ssl.TLSVersion], Optional[ssl.TLSVersion]]":
    """Version limits implied by a legacy fixed-version PROTOCOL_* constant."""
    fixed = {
        getattr(ssl, "PROTOCOL_TLSv1", None): ssl.TLSVersion.TLSv1,
        getattr(ssl, "PROTOCOL_TLSv1_1", None): ssl.TLSVersion.TLSv1_1,
        getattr(ssl, "PROTOCOL_TLSv1_2", None): ssl.TLSVersion.TLSv1_2,
    }
    version = fixed.get(protocol)
    return version, version


def _also_for_stdlib_contexts(prop: property) -> property:
    """`prop`, but on a context that is not a fasttls one, the C descriptor of `_ssl._SSLContext`.

    While injected, `ssl.SSLContext` is `_InjectedSSLContext`, a subclass of fasttls's. The
    stdlib's own setters (still those of contexts made before injection, or of subclasses of the
    original class) set through `super(SSLContext, SSLContext).<name>`, a module-global lookup
    that now lands here; delegating to the C descriptor, not to the stdlib property again, is
    what keeps them from recursing (the bug truststore had)."""
    name = prop.fget.__name__
    base = getattr(_ssl._SSLContext, name)

    def fget(self):
        return prop.fget(self) if isinstance(self, SSLContext) else base.__get__(self)

    def fset(self, value):
        if isinstance(self, SSLContext):
            prop.fset(self, value)
        else:
            base.__set__(self, value)

    return property(fget, fset, doc=prop.__doc__)


class SSLContext(_StdSSLContext):
    """`ssl.SSLContext`, with fasttls doing the work. Same constructor, attributes and methods.

    `client_session_cache` (default True): client connections made through this context resume
    the last session with the same server name and address."""

    def __new__(cls, protocol=None, *args, **kwargs):
        if protocol is None:
            warnings.warn("ssl.SSLContext() without protocol argument is deprecated.",
                          category=DeprecationWarning, stacklevel=2)
            protocol = ssl.PROTOCOL_TLS
        self = _ssl._SSLContext.__new__(cls, protocol)
        ctx = Context()
        if protocol == ssl.PROTOCOL_TLS_CLIENT:
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        minimum, maximum = _versions_of(protocol)
        if minimum is not None:
            ctx.minimum_version, ctx.maximum_version = minimum, maximum
        self._fasttls = ctx
        self._sessions = _SessionCache()
        self._sni_callback = None
        self._post_handshake_auth = False
        self.client_session_cache = True
        return self

    # ---- engine objects for ssl.SSLSocket / ssl.SSLObject ----

    def _wrap_socket(self, sock, server_side, server_hostname=None, *, owner=None, session=None):
        return _Engine(self, _SocketTransport(sock), server_side, server_hostname, owner, session)

    def _wrap_bio(self, incoming, outgoing, server_side, server_hostname=None, *, owner=None,
                  session=None):
        return _Engine(self, _BIOTransport(incoming, outgoing), server_side, server_hostname,
                       owner, session)

    # ---- verification ----

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return ssl.VerifyMode(self._fasttls.verify_mode)

    @verify_mode.setter
    def verify_mode(self, value) -> None:
        self._fasttls.verify_mode = ssl.VerifyMode(value)

    @property
    def check_hostname(self) -> bool:
        return self._fasttls.check_hostname

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        self._fasttls.check_hostname = value

    @property
    def hostname_checks_common_name(self) -> bool:
        return self._fasttls.hostname_checks_common_name

    @hostname_checks_common_name.setter
    def hostname_checks_common_name(self, value: bool) -> None:
        self._fasttls.hostname_checks_common_name = value

    @property
    def verify_flags(self) -> ssl.VerifyFlags:
        param = lib.SSL_CTX_get0_param(self._fasttls._ctx)
        return ssl.VerifyFlags(lib.X509_VERIFY_PARAM_get_flags(param))

    @verify_flags.setter
    def verify_flags(self, value) -> None:
        param = lib.SSL_CTX_get0_param(self._fasttls._ctx)
        new, old = int(value), lib.X509_VERIFY_PARAM_get_flags(param)
        with self._fasttls._lock:
            if (old & ~new and not lib.X509_VERIFY_PARAM_clear_flags(param, old & ~new)) or (
                    new & ~old and not lib.X509_VERIFY_PARAM_set_flags(param, new & ~old)):
                raise ValueError(f"cannot set verify_flags to {value!r}")

    @property
    def post_handshake_auth(self) -> bool:
        return self._post_handshake_auth

    @post_handshake_auth.setter
    def post_handshake_auth(self, value: bool) -> None:
        self._post_handshake_auth = bool(value)  # accepted; fasttls never requests it

    def load_verify_locations(self, cafile=None, capath=None, cadata=None) -> None:
        self._fasttls.load_verify_locations(cafile, capath, cadata)

    def load_default_certs(self, purpose=ssl.Purpose.SERVER_AUTH) -> None:
        if not isinstance(purpose, ssl._ASN1Object):
            raise TypeError(purpose)
        self._fasttls.load_default_certs()

    def set_default_verify_paths(self) -> None:
        self._fasttls.load_default_certs()

    def cert_store_stats(self) -> dict:
        certs = cas = 0
        is_ca = ffi.new("int *")
        while True:
            x509 = lib.fasttls_store_cert(self._fasttls._ctx, certs, is_ca)
            if x509 == ffi.NULL:
                break
            lib.X509_free(x509)
            certs += 1
            cas += bool(is_ca[0])
        return {"x509": certs, "crl": lib.fasttls_store_crl_count(self._fasttls._ctx),
                "x509_ca": cas}

    def get_ca_certs(self, binary_form: bool = False) -> list:
        found, i = [], 0
        is_ca = ffi.new("int *")
        while True:
            x509 = lib.fasttls_store_cert(self._fasttls._ctx, i, is_ca)
            if x509 == ffi.NULL:
                return found
            x509 = ffi.gc(x509, lib.X509_free)
            if is_ca[0]:
                found.append(certificate_der(x509) if binary_form else certificate_dict(x509))
            i += 1

    # ---- certificates, algorithms, protocols ----

    def load_cert_chain(self, certfile, keyfile=None, password=None) -> None:
        self._fasttls.set_cert(certfile, keyfile, password)

    def load_dh_params(self, path) -> None:
        """Accepted for compatibility: fasttls picks finite-field DH groups automatically
        (SSL_CTX_set_dh_auto, RFC 7919 sizes), which is what these files were for."""
        with open(path, "rb"):
            pass  # a missing file is still an error, as with the stdlib

    def set_ciphers(self, ciphers: str) -> None:
        self._fasttls.set_ciphers(ciphers)

    def get_ciphers(self) -> list:
        ctx = self._fasttls._ctx
        text = ffi.new("char[]", 256)
        ciphers = []
        for i in range(lib.fasttls_ctx_cipher_count(ctx)):
            c = lib.fasttls_ctx_cipher(ctx, i)
            alg_bits = ffi.new("int *")
            ciphers.append({
                "id": lib.SSL_CIPHER_get_id(c),
                "name": ffi.string(lib.SSL_CIPHER_get_name(c)).decode(),
                "protocol": ffi.string(lib.SSL_CIPHER_get_version(c)).decode(),
                "description": ffi.string(lib.SSL_CIPHER_description(c, text, 256)).decode(),
                "strength_bits": lib.SSL_CIPHER_get_bits(c, alg_bits),
                "alg_bits": alg_bits[0],
                "aead": bool(lib.SSL_CIPHER_is_aead(c)),
            })
        return ciphers

    def set_alpn_protocols(self, alpn_protocols) -> None:
        self._fasttls.set_alpn_protocols(alpn_protocols)

    def set_npn_protocols(self, npn_protocols) -> None:
        warnings.warn("ssl NPN is deprecated, use ALPN instead", DeprecationWarning, stacklevel=2)

    def set_ecdh_curve(self, name) -> None:
        raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
        with self._fasttls._lock:
            if not lib.SSL_CTX_set1_groups_list(self._fasttls._ctx, raw):
                lib.ERR_clear_error()
                raise ValueError(f"unknown elliptic curve name {name!r}")

    @property
    def minimum_version(self) -> ssl.TLSVersion:
        return self._fasttls.minimum_version

    @minimum_version.setter
    def minimum_version(self, value) -> None:
        self._fasttls.minimum_version = value

    @property
    def maximum_version(self) -> ssl.TLSVersion:
        return self._fasttls.maximum_version

    @maximum_version.setter
    def maximum_version(self, value) -> None:
        self._fasttls.maximum_version = value

    @property
    def options(self) -> ssl.Options:
        return ssl.Options(lib.SSL_CTX_get_options(self._fasttls._ctx))

    @options.setter
    def options(self, value) -> None:
        ctx, new = self._fasttls._ctx, int(value)
        with self._fasttls._lock:
            old = lib.SSL_CTX_get_options(ctx)
            lib.SSL_CTX_clear_options(ctx, old & ~new)
            lib.SSL_CTX_set_options(ctx, new & ~old)

    @property
    def num_tickets(self) -> int:
        return lib.SSL_CTX_get_num_tickets(self._fasttls._ctx)

    @num_tickets.setter
    def num_tickets(self, value: int) -> None:
        if value < 0:
            raise ValueError("value must be non-negative")
        with self._fasttls._lock:
            lib.SSL_CTX_set_num_tickets(self._fasttls._ctx, value)

    @property
    def keylog_filename(self):
        return self._fasttls.keylog_filename

    @keylog_filename.setter
    def keylog_filename(self, path) -> None:
        self._fasttls.keylog_filename = path

    @property
    def sni_callback(self):
        return self._sni_callback

    @sni_callback.setter
    def sni_callback(self, callback) -> None:
        """`callback(ssl_object, server_name, context)`, as with the stdlib: it may set
        `ssl_object.context` to another fasttls.SSLContext."""
        if callback is not None and not callable(callback):
            raise TypeError("not a callable object")
        self._sni_callback = callback
        self._fasttls.sni_callback = None if callback is None else self._run_sni_callback

    def _run_sni_callback(self, tls: TLS, server_name):
        engine = tls.owner
        ssl_object = engine.owner if engine is not None else None
        alert = self._sni_callback(ssl_object, server_name, self)
        if alert is not None:
            raise SSLError(ssl.SSL_ERROR_SSL, f"sni_callback refused {server_name!r} "
                                              f"(alert {alert})")
        chosen = engine._context if engine is not None else self
        return chosen._fasttls if chosen is not self else None

    @property
    def _msg_callback(self):
        return _ssl._SSLContext._msg_callback.__get__(self)

    @_msg_callback.setter
    def _msg_callback(self, callback) -> None:
        _ssl._SSLContext._msg_callback.__set__(self, callback)  # the unused base context's

    def session_stats(self) -> dict:
        ctx = self._fasttls._ctx
        return {name: getattr(lib, "SSL_CTX_sess_" + name)(ctx) for name in (
            "number", "connect", "connect_good", "connect_renegotiate", "accept", "accept_good",
            "accept_renegotiate", "hits", "misses", "timeouts", "cache_full")}


for _name in ("verify_mode", "verify_flags", "minimum_version", "maximum_version", "options",
              "_msg_callback"):
    setattr(SSLContext, _name, _also_for_stdlib_contexts(getattr(SSLContext, _name)))
del _name


class _AnySSLContext(type):
    """isinstance/issubclass against the injected class accept every SSL context: fasttls's,
    and the stdlib's made before injection (aiohttp's import-time contexts, say), as code that
    checks `isinstance(ctx, ssl.SSLContext)` expects."""

    def __instancecheck__(cls, instance) -> bool:
        return isinstance(instance, _StdSSLContext)

    def __subclasscheck__(cls, subclass) -> bool:
        return issubclass(subclass, _StdSSLContext)


class _InjectedSSLContext(SSLContext, metaclass=_AnySSLContext):
    """What `ssl.SSLContext` is while injected (see _also_for_stdlib_contexts)."""

    __qualname__ = __name__ = "SSLContext"


def create_default_context(purpose=ssl.Purpose.SERVER_AUTH, *, cafile=None, capath=None,
                           cadata=None) -> SSLContext:
    """`ssl.create_default_context`, giving a fasttls.SSLContext (the system CA store comes
    from a shared cache: no 18 ms parse per context)."""
    if not isinstance(purpose, ssl._ASN1Object):
        raise TypeError(purpose)
    if purpose == ssl.Purpose.SERVER_AUTH:
        context = SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    elif purpose == ssl.Purpose.CLIENT_AUTH:
        context = SSLContext(ssl.PROTOCOL_TLS_SERVER)
    else:
        raise ValueError(purpose)
    if sys.version_info >= (3, 13):  # the stdlib's 3.13 defaults
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    if cafile or capath or cadata:
        context.load_verify_locations(cafile, capath, cadata)
    elif context.verify_mode != ssl.CERT_NONE:
        context.load_default_certs(purpose)
    return context


# ---- injection ----

_injected: dict = {}
_inject_lock = threading.Lock()


def _patch_points():
    """(module, attribute, replacement) for every place that hands out stdlib contexts."""
    points = [(ssl, "SSLContext", _InjectedSSLContext),
              (ssl, "create_default_context", create_default_context)]
    if ssl._create_default_https_context is _std_create_default_context:
        points.append((ssl, "_create_default_https_context", create_default_context))
    try:
        import urllib3.util.ssl_ as urllib3_ssl  # captured ssl.SSLContext at its import
    except ImportError:
        urllib3_ssl = None
    if urllib3_ssl is not None and getattr(urllib3_ssl, "SSLContext", None) is _StdSSLContext:
        points.append((urllib3_ssl, "SSLContext", _InjectedSSLContext))
    return points


def inject_into_ssl() -> None:
    """Make code that builds its own contexts get fasttls: `ssl.SSLContext`,
    `ssl.create_default_context`, http.client's default context and urllib3's SSLContext.
    Modules that captured `ssl.SSLContext` before this call (other than urllib3) keep the
    stdlib's; see the README."""
    with _inject_lock:
        if _injected:
            return
        for module, name, replacement in _patch_points():
            _injected[(module, name)] = getattr(module, name)
            setattr(module, name, replacement)


def extract_from_ssl() -> None:
    """Undo inject_into_ssl(): restore exactly what was there."""
    with _inject_lock:
        for (module, name), original in _injected.items():
            setattr(module, name, original)
        _injected.clear()
