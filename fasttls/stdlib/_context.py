"""`fasttls.SSLContext`: the stdlib's `ssl.SSLContext` API over a fasttls `Context`.

* All real state lives in the fasttls `Context` (`self._fasttls`): nothing is loaded into the
  stdlib base context, whose only cost is its creation.
* The property setters never go through the stdlib's, which call
  `super(SSLContext, SSLContext)` through the module global and recurse once `ssl.SSLContext` is
  patched (the bug truststore had).
* Errors are fasttls's classes, which subclass the stdlib's and carry its errno values, so
  `SSLSocket`'s ragged-EOF handling, asyncio, aiohttp, anyio and trio treat them as their own.
"""
import _ssl
import ssl
import sys
import warnings
from typing import Optional

from fasttls._binding import ffi, lib
from fasttls._certinfo import certificate_der, certificate_dict
from fasttls._context import Context
from fasttls._errors import SSLError
from fasttls._tls import TLS

from ._adapter import SessionCache, SSLObjectAdapter
from ._transports import BIOTransport, SocketTransport

__all__ = ["SSLContext", "create_default_context"]

_StdSSLContext = ssl.SSLContext  # captured before any injection


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


class _RaiseWhenCollected:
    """An exception Python itself reports as unraisable: raised from __del__, it goes through
    the interpreter's own PyErr_WriteUnraisable, hence to sys.unraisablehook (which insists on
    the interpreter's own argument type, so it cannot be called directly)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def __del__(self) -> None:
        raise self.exc


def _report_unraisable(exc: BaseException) -> None:
    _RaiseWhenCollected(exc)  # collected at once (no other reference)


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
        self._sessions = SessionCache()
        self._sni_callback = None
        self._post_handshake_auth = False
        self.client_session_cache = True
        return self

    # ---- engine objects for ssl.SSLSocket / ssl.SSLObject ----

    def _wrap_socket(self, sock, server_side, server_hostname=None, *, owner=None, session=None):
        return SSLObjectAdapter(self, SocketTransport(sock), server_side, server_hostname, owner,
                                session)

    def _wrap_bio(self, incoming, outgoing, server_side, server_hostname=None, *, owner=None,
                  session=None):
        return SSLObjectAdapter(self, BIOTransport(incoming, outgoing), server_side,
                                server_hostname, owner, session)

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
        """The stdlib's semantics: the callback returns None (go on; a context it set on the
        SSL object is in use already) or an alert number to refuse the client. An exception,
        or a value of another type, is reported to sys.unraisablehook and refuses the client
        (handshake_failure, internal_error); the server's handshake fails with an SSLError."""
        adapter = tls.owner
        ssl_object = adapter.owner if adapter is not None else None
        try:
            result = self._sni_callback(ssl_object, server_name, self)
        except Exception as exc:
            _report_unraisable(exc)
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        if result is None or (isinstance(result, int) and not isinstance(result, bool)):
            return result
        _report_unraisable(TypeError(f"sni_callback returned {type(result).__name__}, "
                                     "expected None or an alert number"))
        return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR

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
