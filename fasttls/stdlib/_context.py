"""`fasttls.SSLContext`: the stdlib's `ssl.SSLContext` API over a fasttls `Context`.

* All real state lives in the fasttls `Context` (`self._fasttls`), reached only through its
  methods (no OpenSSL call here): nothing is loaded into the stdlib base context, whose only
  cost is its creation.
* The property setters never go through the stdlib's, which call
  `super(SSLContext, SSLContext)` through the module global and recurse once `ssl.SSLContext` is
  patched (the bug truststore had).
* Errors are fasttls's classes, which subclass the stdlib's and carry its errno values, so
  `SSLSocket`'s ragged-EOF handling, asyncio, aiohttp, anyio and trio treat them as their own;
  configuration errors carry the stdlib's message texts.
* Defaults are the stdlib's (verify mode per protocol, options, verify flags, the subject CN
  matched when a certificate has no DNS name, no system CA store unless asked for), with one
  deliberate difference: renegotiation is always refused (see `options`).
"""
import _ssl
import os
import ssl
import sys
import warnings
import weakref
from typing import Any, Callable, Optional

from fasttls._context import Context
from fasttls._errors import SSLError, report_unraisable
from fasttls._tls import TLS

from ._adapter import SessionCache, SSLObject, SSLObjectAdapter, SSLSocket, SSLSocketAdapter
from ._transports import BIOTransport, SocketTransport

__all__ = ["SSLContext", "create_default_context"]

_StdSSLContext = ssl.SSLContext  # captured before any injection

# SSL_OP_LEGACY_SERVER_CONNECT (ssl.OP_LEGACY_SERVER_CONNECT from Python 3.12): connecting to
# servers without RFC 5746 secure renegotiation. OpenSSL 1.1.1 sets it by default, 3.0 does not;
# fasttls never starts with it, whatever OpenSSL the stdlib uses.
_OP_LEGACY_SERVER_CONNECT = 0x4
# Always in force on a fasttls context, whatever `options` is set to, and reported by
# `options` only when the application set it: fasttls never renegotiates (a deliberate
# difference from the stdlib, for security: a TLS 1.2 renegotiation may change the peer's
# identity mid-connection, and TLS 1.3 has none).
_ALWAYS_ON = int(ssl.OP_NO_RENEGOTIATION)
# The stdlib warns when one of these is turned on (its "opt_no" set).
_DEPRECATED_OPTIONS = int(ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3 | ssl.OP_NO_TLSv1 | ssl.OP_NO_TLSv1_1
                          | ssl.OP_NO_TLSv1_2 | ssl.OP_NO_TLSv1_3)
_DEPRECATED_VERSIONS = (ssl.TLSVersion.SSLv3, ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
_FLEXIBLE_PROTOCOLS = (ssl.PROTOCOL_TLS, ssl.PROTOCOL_TLS_CLIENT, ssl.PROTOCOL_TLS_SERVER)


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
    assert prop.fget is not None and prop.fset is not None
    getter: Callable[[Any], Any] = prop.fget
    setter: Callable[[Any, Any], None] = prop.fset
    base = getattr(_ssl._SSLContext, getter.__name__)

    def fget(self):
        return getter(self) if isinstance(self, SSLContext) else base.__get__(self)

    def fset(self, value):
        if isinstance(self, SSLContext):
            setter(self, value)
        else:
            base.__set__(self, value)

    return property(fget, fset, doc=prop.__doc__)


def _stdlib_error(cause: SSLError, message: str, library: Optional[str],
                  reason: Optional[str]) -> SSLError:
    """`cause` (a fasttls configuration error) with the stdlib's message text; fasttls's own,
    more precise text stays in the traceback as __cause__."""
    exc = SSLError(cause.errno, message)
    exc.library, exc.reason = library, reason
    exc.lib_code, exc.reason_code = cause.lib_code, cause.reason_code
    exc.__cause__ = cause
    return exc


class SSLContext(_StdSSLContext):
    """`ssl.SSLContext`, with fasttls doing the work. Same constructor, attributes and methods.

    `client_session_cache` (default True): client connections made through this context resume
    the last session with the same server name and address."""

    # wrap_bio's objects: ssl.SSLObject with the adapter's fast paths in front (see SSLObject).
    sslobject_class = SSLObject
    # wrap_socket's: ssl.SSLSocket plus ocsp_response().
    sslsocket_class = SSLSocket

    _fasttls: Context
    _sessions: SessionCache
    _sni_callback: Optional[Callable[..., Any]]
    _post_handshake_auth: bool
    _msg_callback_function: Optional[Callable[..., Any]]
    client_session_cache: bool

    def __new__(cls, protocol=None, *args, **kwargs):
        if protocol is None:
            warnings.warn("ssl.SSLContext() without protocol argument is deprecated.",
                          category=DeprecationWarning, stacklevel=2)
            protocol = ssl.PROTOCOL_TLS
        self = _ssl._SSLContext.__new__(cls, protocol)
        ctx = Context()
        # As a stdlib context: trust only what is loaded (create_default_context and
        # load_default_certs load the system store), check the subject CN of a certificate
        # without DNS names, TRUSTED_FIRST (the engine's default too), the stdlib's options.
        ctx._system_store_by_default = False
        if protocol == ssl.PROTOCOL_TLS_CLIENT:
            ctx.verify_mode = ssl.CERT_REQUIRED
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        # The stdlib's own default options for this protocol: those of the base context.
        ctx.hostname_checks_common_name = True
        stdlib_options = int(_ssl._SSLContext.options.__get__(self))
        ctx.options = (stdlib_options & ~_OP_LEGACY_SERVER_CONNECT) | _ALWAYS_ON
        minimum, maximum = _versions_of(protocol)
        if minimum is not None:
            ctx.minimum_version, ctx.maximum_version = minimum, maximum
        self._fasttls = ctx
        self._sessions = SessionCache()
        self._sni_callback = None
        self._post_handshake_auth = False
        self._msg_callback_function = None
        self.client_session_cache = True
        return self

    @classmethod
    def _around(cls, native: Context, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> "SSLContext":
        """A drop-in context whose settings are `native`'s own (not a copy: both see every
        change), for code that takes a native Context where an ssl.SSLContext is needed (e.g.
        fasttls.keyless.KeylessClient on fasttls.aio). The stdlib-only state (session cache,
        sni_callback, msg_callback) is the view's own."""
        view = cls(protocol)
        view._fasttls = native
        return view

    # ---- engine objects for ssl.SSLSocket / ssl.SSLObject ----

    def _wrap_socket(self, sock, server_side, server_hostname=None, *, owner=None, session=None):
        return self._watched(SSLSocketAdapter(self, SocketTransport(sock), server_side,
                                              server_hostname, owner, session))

    def _wrap_bio(self, incoming, outgoing, server_side, server_hostname=None, *, owner=None,
                  session=None):
        return self._watched(SSLObjectAdapter(self, BIOTransport(incoming, outgoing),
                                              server_side, server_hostname, owner, session))

    def _watched(self, adapter: SSLObjectAdapter) -> SSLObjectAdapter:
        """`adapter`, its messages reported to _msg_callback if there is one."""
        if self._msg_callback_function is not None:
            self._fasttls._watch_messages(adapter._tls, _MessageHook(self, adapter))
        return adapter

    # ---- verification ----

    @property  # type: ignore[override]  # the stdlib's own property returns ssl.VerifyMode too
    def verify_mode(self) -> ssl.VerifyMode:
        mode = self._fasttls.verify_mode
        assert mode is not None  # always set by __new__ and the setter
        return ssl.VerifyMode(mode)

    @verify_mode.setter
    def verify_mode(self, value) -> None:
        if not isinstance(value, int):
            raise TypeError(f"verify_mode must be an int (ssl.VerifyMode), not "
                            f"{type(value).__name__}")
        if value not in tuple(ssl.VerifyMode):
            raise ValueError("invalid value for verify_mode")
        self._fasttls.verify_mode = ssl.VerifyMode(value)

    @property
    def check_hostname(self) -> bool:
        return self._fasttls.check_hostname

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        self._fasttls.check_hostname = value

    @property
    def hostname_checks_common_name(self) -> bool:
        """True by default, as in the stdlib: a certificate with no DNS name in subjectAltName
        matches the hostname through its subject commonName (the native API's default is
        False: RFC 6125 deprecates the fallback). False: only subjectAltName is matched."""
        return self._fasttls.hostname_checks_common_name

    @hostname_checks_common_name.setter
    def hostname_checks_common_name(self, value: bool) -> None:
        self._fasttls.hostname_checks_common_name = value

    @property  # type: ignore[override]  # the stdlib's own property returns ssl.VerifyFlags too
    def verify_flags(self) -> ssl.VerifyFlags:
        return ssl.VerifyFlags(self._fasttls.verify_flags)

    @verify_flags.setter
    def verify_flags(self, value) -> None:
        self._fasttls.verify_flags = value

    @property
    def post_handshake_auth(self) -> bool:
        return self._post_handshake_auth

    @post_handshake_auth.setter
    def post_handshake_auth(self, value: bool) -> None:
        self._post_handshake_auth = bool(value)  # applied to connections made afterwards

    def load_verify_locations(self, cafile=None, capath=None, cadata=None) -> None:
        if cadata is not None and not isinstance(cadata, (str, bytes, bytearray, memoryview)):
            raise TypeError("cadata should be an ASCII string or a bytes-like object")
        self._fasttls.load_verify_locations(cafile, capath, cadata)

    def load_default_certs(self, purpose=ssl.Purpose.SERVER_AUTH) -> None:
        if not isinstance(purpose, ssl._ASN1Object):
            raise TypeError(purpose)
        self._fasttls.load_default_certs()

    def set_default_verify_paths(self) -> None:
        self._fasttls.load_default_certs()

    def cert_store_stats(self) -> dict:
        return self._fasttls.cert_store_stats()

    def get_ca_certs(self, binary_form: bool = False) -> list:
        return self._fasttls.get_ca_certs(binary_form)

    # ---- certificates, algorithms, protocols ----

    def load_cert_chain(self, certfile, keyfile=None, password=None) -> None:
        """As the stdlib's: paths (str, bytes or PathLike); each call adds the identity beside
        those of other key types (RSA and ECDSA served together), replacing the one of its own
        type. An unreadable file is the stdlib's "PEM lib" error; a key that does not match the
        certificate, "key values mismatch"."""
        if password is not None and not callable(password) and not isinstance(
                password, (str, bytes, bytearray)):
            raise TypeError("password should be a string or callable")
        try:
            self._fasttls.add_cert(certfile, keyfile, password, paths_only=True)
        except SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise
            # The stdlib reports any unreadable certificate or key as SSL's "PEM lib".
            raise _stdlib_error(exc, f"[SSL: PEM_LIB] PEM lib: {exc}", "SSL", "PEM_LIB") from exc

    def load_keyless_cert_chain(self, certfile, signer) -> None:
        """fasttls's own (the stdlib has none): serve the certificate chain in `certfile` (a
        path) with a private key that is not in this process, signed by `signer` (a
        fasttls.Signer, e.g. fasttls.keyless.KeylessClient). The drop-in socket asks it with
        the socket's timeout, fasttls.aio awaits it. See Context.set_keyless_cert."""
        self._fasttls.set_keyless_cert(certfile, signer, paths_only=True)

    def load_dh_params(self, path) -> None:
        self._fasttls.load_dh_params(path)

    def set_ciphers(self, ciphers: str) -> None:
        try:
            self._fasttls.set_ciphers(ciphers)
        except SSLError as exc:
            raise _stdlib_error(exc, "No cipher can be selected.", exc.library,
                                exc.reason) from exc

    def get_ciphers(self) -> list:
        return self._fasttls.get_ciphers()

    def set_alpn_protocols(self, alpn_protocols) -> None:
        self._fasttls.set_alpn_protocols(alpn_protocols)

    def set_npn_protocols(self, npn_protocols) -> None:
        warnings.warn("ssl NPN is deprecated, use ALPN instead", DeprecationWarning, stacklevel=2)

    def set_ecdh_curve(self, name, /) -> None:
        self._fasttls.set_ecdh_curve(name)

    def _check_version(self, value) -> None:
        """The stdlib's rules for minimum_version/maximum_version."""
        if self.protocol not in _FLEXIBLE_PROTOCOLS:
            raise ValueError("The context's protocol doesn't support modification of highest "
                             "and lowest version.")
        if value in _DEPRECATED_VERSIONS:
            warnings.warn(f"ssl.TLSVersion.{ssl.TLSVersion(value).name} is deprecated",
                          DeprecationWarning, stacklevel=4)

    @property  # type: ignore[override]  # the stdlib's own property returns ssl.TLSVersion too
    def minimum_version(self) -> ssl.TLSVersion:
        return self._fasttls.minimum_version

    @minimum_version.setter
    def minimum_version(self, value) -> None:
        self._check_version(value)
        self._fasttls.minimum_version = value
        if value == ssl.TLSVersion.SSLv3:  # as the stdlib's setter
            self.options &= ~ssl.OP_NO_SSLv3

    @property  # type: ignore[override]  # the stdlib's own property returns ssl.TLSVersion too
    def maximum_version(self) -> ssl.TLSVersion:
        return self._fasttls.maximum_version

    @maximum_version.setter
    def maximum_version(self, value) -> None:
        self._check_version(value)
        self._fasttls.maximum_version = value

    @property  # type: ignore[override]  # the stdlib's own property returns ssl.Options too
    def options(self) -> ssl.Options:
        """The options in force: the stdlib's defaults, plus OP_NO_RENEGOTIATION, which is
        always set (fasttls never renegotiates: a documented security choice) and reported as
        it is, never hidden."""
        return ssl.Options(self._fasttls.options)

    @options.setter
    def options(self, value) -> None:
        if not isinstance(value, int):
            raise TypeError(f"options must be an int, not {type(value).__name__}")
        if not 0 <= value < 2**64:  # OpenSSL's uint64_t, as the stdlib checks it
            raise OverflowError("options must be a 64-bit unsigned integer")
        new = int(value)
        if new & ~int(self.options) & _DEPRECATED_OPTIONS:
            warnings.warn("ssl.OP_NO_SSL*/ssl.OP_NO_TLS* options are deprecated",
                          DeprecationWarning, stacklevel=3)
        self._fasttls.options = new | _ALWAYS_ON

    @property
    def num_tickets(self) -> int:
        return self._fasttls.num_tickets

    @num_tickets.setter
    def num_tickets(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError(f"num_tickets must be an int, not {type(value).__name__}")
        if value < 0:
            raise ValueError("value must be non-negative")
        if self.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError("SSLContext is not a server context.")
        self._fasttls.num_tickets = value

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
        """The stdlib's semantics: the callback returns None (go on; a context it set on the
        SSL object is in use already) or an alert number to refuse the client. An exception,
        or a value of another type, is reported to sys.unraisablehook and refuses the client
        (handshake_failure, internal_error); the server's handshake fails with an SSLError."""
        adapter = tls.owner
        ssl_object = adapter.owner if adapter is not None else None
        assert self._sni_callback is not None
        try:
            result = self._sni_callback(ssl_object, server_name, self)
        except Exception as exc:
            report_unraisable(exc)
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        if result is None or (isinstance(result, int) and not isinstance(result, bool)):
            return result
        report_unraisable(TypeError(f"sni_callback returned {type(result).__name__}, "
                                    "expected None or an alert number"))
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR

    # ---- OCSP stapling (fasttls's additions; see Context) ----

    def set_ocsp_response(self, der: Optional[bytes]) -> None:
        """Server side: staple this DER OCSP response (None: none); see fasttls.OCSPStapler."""
        self._fasttls.set_ocsp_response(der)

    @property
    def ocsp_stapling(self) -> bool:
        """Client side: ask for the server's OCSP staple (SSLSocket/SSLObject.ocsp_response())."""
        return self._fasttls.ocsp_stapling

    @ocsp_stapling.setter
    def ocsp_stapling(self, value: bool) -> None:
        self._fasttls.ocsp_stapling = value

    @property
    def require_ocsp_staple(self) -> bool:
        """Client side: fail the handshake unless the server staples a good OCSP response."""
        return self._fasttls.require_ocsp_staple

    @require_ocsp_staple.setter
    def require_ocsp_staple(self, value: bool) -> None:
        self._fasttls.require_ocsp_staple = value

    @property
    def _msg_callback(self):
        """The stdlib's private debugging hook: `callback(conn, direction, version,
        content_type, msg_type, data)` for every TLS message and record header of connections
        created afterwards, as the stdlib calls it. An exception it raises goes to
        sys.unraisablehook (the stdlib raises it from the socket call). It runs inside the
        engine call: it must not use the connection or change the context."""
        return self._msg_callback_function

    @_msg_callback.setter
    def _msg_callback(self, callback) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"{callback} is not callable.")
        self._msg_callback_function = callback
        self._fasttls._enable_message_hook(callback is not None)

    def session_stats(self) -> dict:
        return self._fasttls.session_stats()

    # fasttls's own (no stdlib equivalent): the fleet's shared session store.

    def set_session_store(self, store) -> None:
        """Server side: keep sessions in a `fasttls.store.SessionStore` shared by a fleet (see
        fasttls.Context.set_session_store); None: back to the in-process cache."""
        if self.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError("SSLContext is not a server context.")
        self._fasttls.set_session_store(store)

    @property
    def session_store(self):
        return self._fasttls.session_store

    # Not in the stdlib: fleet-wide session tickets (see fasttls.Context).
    def set_session_ticket_keys(self, keys) -> None:
        """fasttls.Context.set_session_ticket_keys: shared session-ticket keys, nginx's
        80-byte (or 48-byte) format, the current key first."""
        self._fasttls.set_session_ticket_keys(keys)

    def load_session_ticket_keys(self, paths) -> None:
        """fasttls.Context.load_session_ticket_keys: the keys from nginx-format key files, one
        per file, the current key's first; call again to rotate."""
        self._fasttls.load_session_ticket_keys(paths)

    def session_ticket_stats(self) -> dict:
        return self._fasttls.session_ticket_stats()

    if sys.version_info >= (3, 13):  # the stdlib's TLS-PSK API, new in 3.13
        def set_psk_client_callback(self, callback) -> None:
            if self.protocol == ssl.PROTOCOL_TLS_SERVER:
                raise SSLError(ssl.SSL_ERROR_SSL, "Cannot add PSK client callback to a "
                                                  "PROTOCOL_TLS_SERVER context")
            self._fasttls.set_psk_client_callback(callback)

        def set_psk_server_callback(self, callback, identity_hint=None) -> None:
            if self.protocol == ssl.PROTOCOL_TLS_CLIENT:
                raise SSLError(ssl.SSL_ERROR_SSL, "Cannot add PSK server callback to a "
                                                  "PROTOCOL_TLS_CLIENT context")
            self._fasttls.set_psk_server_callback(callback, identity_hint)


for _name in ("verify_mode", "verify_flags", "minimum_version", "maximum_version", "options",
              "_msg_callback"):
    setattr(SSLContext, _name, _also_for_stdlib_contexts(getattr(SSLContext, _name)))
del _name


_SSL3_MT_CHANGE_CIPHER_SPEC = 0x0101  # OpenSSL's pseudo message type, as the stdlib reports it
# The stdlib's private enums of its message callback (not in typeshed).
_ContentType: Any = getattr(ssl, "_TLSContentType")
_AlertType: Any = getattr(ssl, "_TLSAlertType")
_MessageType: Any = getattr(ssl, "_TLSMessageType")


def _as_enum(enum: Any, value: int) -> Any:
    """ssl.py's conversions for the message callback: the enum member, else the number."""
    try:
        return enum(value)
    except ValueError:
        return value


class _MessageHook:
    """One connection's messages to its context's _msg_callback, decoded as the stdlib decodes
    them (_ssl.c's _PySSL_msg_callback, then ssl.py's enums)."""

    __slots__ = ("_context", "_adapter")

    def __init__(self, context: SSLContext, adapter: SSLObjectAdapter) -> None:
        self._context = context
        self._adapter = weakref.ref(adapter)

    def __call__(self, written: bool, version: int, content_type: int, data: bytes) -> None:
        callback = self._context._msg_callback_function
        adapter = self._adapter()
        if callback is None or adapter is None:
            return
        conn = adapter.owner
        msg_type = -1
        if content_type == _ContentType.CHANGE_CIPHER_SPEC:
            msg_type = _SSL3_MT_CHANGE_CIPHER_SPEC
        elif content_type == _ContentType.ALERT and len(data) >= 2:
            msg_type = data[1]  # the description (data[0] is the level)
        elif content_type == _ContentType.HEADER and len(data) >= 3:
            version = data[1] << 8 | data[2]  # the record header names it
            msg_type = data[0]
        elif content_type in (_ContentType.HANDSHAKE,
                              _ContentType.INNER_CONTENT_TYPE) and data:
            msg_type = data[0]
        kind = (_ContentType if content_type == _ContentType.HEADER
                else _AlertType if content_type == _ContentType.ALERT
                else _MessageType)
        try:
            callback(conn if conn is not None else adapter, "write" if written else "read",
                     _as_enum(ssl.TLSVersion, version), _as_enum(_ContentType, content_type),
                     _as_enum(kind, msg_type), data)
        except Exception as exc:
            report_unraisable(exc)


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
    # As the stdlib's (and only here and in ssl._create_stdlib_context, which does it itself).
    keylogfile = os.environ.get("SSLKEYLOGFILE")
    if keylogfile and not sys.flags.ignore_environment:
        context.keylog_filename = keylogfile
    return context
