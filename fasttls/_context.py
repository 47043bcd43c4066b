"""Context: the configuration shared by many connections, for both roles (like the reference's
`newctx`), over one OpenSSL SSL_CTX.

Secure by default: clients verify the server's chain against the system trust store and its
name; TLS 1.2 is the minimum; no compression, no renegotiation; TLS 1.2 suites are Mozilla's
"intermediate" list (forward secret AEAD only)."""
import _ssl
import errno
import functools
import hashlib
import os
import ssl
import threading
from collections import OrderedDict
from typing import Callable, Iterable, Optional, Union

from fasttls._binding import ffi, lib
from fasttls._errors import error_from_queue

__all__ = ["Context", "newctx"]

PathOrPEM = Union[str, bytes, "os.PathLike[str]"]
Password = Union[str, bytes, Callable[[], Union[str, bytes]], None]

_VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
# ssl.TLSVersion's values are the protocol numbers OpenSSL uses, except the two sentinels,
# which OpenSSL spells 0 ("no limit").
_NO_LIMIT = (ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.MAXIMUM_SUPPORTED)


def _read_pem(source: PathOrPEM) -> bytes:
    """PEM bytes from bytes or from a file path (str or PathLike)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    with open(os.fspath(source), "rb") as f:
        return f.read()


def _cadata_bytes(cadata) -> "tuple[bytes, bool]":
    """(bytes, is_pem) for load_verify_locations' cadata: PEM text, or PEM/DER bytes."""
    if isinstance(cadata, str):
        return cadata.encode("ascii"), True
    data = bytes(cadata)
    return data, data.lstrip().startswith(b"-----BEGIN")


def _store_from_data(data: bytes, pem: bool):
    store = lib.fasttls_store_new(ffi.NULL, ffi.NULL, 0)
    if store != ffi.NULL and lib.fasttls_store_add_ca(store, data, len(data), pem) <= 0:
        lib.X509_STORE_free(store)
        return ffi.NULL
    return store


def _password_bytes(password: Password) -> Optional[bytes]:
    if callable(password):
        password = password()
    if password is None:
        return None
    if isinstance(password, str):
        return password.encode("utf-8")
    if isinstance(password, (bytes, bytearray)):
        return bytes(password)
    raise TypeError("password should be a str, bytes or a callable returning one")


class _StoreCache:
    """Parsed trust stores shared between contexts, keyed by what they were built from.

    Parsing the system CA bundle costs ~18 ms under OpenSSL 3.0, and HTTP clients build a
    context per connection. A file's key includes its size and modification time, so a changed
    file is parsed anew; in-memory CA data is keyed by its digest. A context that changes a
    shared store copies it first (Context._own_store)."""

    LIMIT = 32

    def __init__(self) -> None:
        self._stores: "OrderedDict[tuple, object]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, build):
        with self._lock:
            store = self._stores.get(key)
            if store is not None:
                self._stores.move_to_end(key)
                return store
        raw = build()  # outside the lock: parsing takes milliseconds
        if raw == ffi.NULL:
            return None
        store = ffi.gc(raw, lib.X509_STORE_free)
        with self._lock:
            store = self._stores.setdefault(key, store)
            while len(self._stores) > self.LIMIT:
                self._stores.popitem(last=False)
        return store

    def clear(self) -> None:
        with self._lock:
            self._stores.clear()


STORE_CACHE = _StoreCache()


def _file_key(path) -> Optional[tuple]:
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    # The file itself (symlinks followed) and its version; cheaper than realpath().
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _default_store_key() -> Optional[tuple]:
    """What the default locations are now (environment included), or None if nothing is there."""
    file_env, default_file, dir_env, default_dir = _ssl.get_default_verify_paths()
    cafile = os.environ.get(file_env, default_file)
    capath = os.environ.get(dir_env, default_dir)
    return ("default", _file_key(cafile), capath, _file_key(capath))


class _ConfigLock:
    """Held while the SSL_CTX changes. It is the engine's lock (a readers-writer lock in C):
    creating a connection and each handshake step hold it for reading, because OpenSSL frees
    the cipher lists and trust store that a handshake in another thread is reading when a
    context's are replaced, and cffi releases the GIL during every C call."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx) -> None:
        self._ctx = ctx

    def __enter__(self) -> None:
        if not lib.fasttls_ctx_lock(self._ctx):
            raise RuntimeError("cannot lock the TLS context")

    def __exit__(self, *exc_info) -> None:
        lib.fasttls_ctx_unlock(self._ctx)


def _locked(method):
    """Run a method that changes the SSL_CTX under the context's lock (see _ConfigLock)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class Context:
    """TLS settings shared by connections (`newtls`). See docs/API.md for each member.

    Thread-safe: connections may be created from one Context in many threads while its settings
    (certificates included) change; a change applies to connections created afterwards and
    waits for handshake steps in progress. An sni_callback must not change the Context it was
    called for (it runs inside a handshake step of that Context)."""

    __slots__ = ("_ctx", "_lock", "_verify_mode", "_check_hostname", "_check_common_name",
                 "_ca_loaded", "_store_shared", "_keylog_filename", "_alpn_protocols",
                 "_sni_callback", "__weakref__")

    def __init__(self) -> None:
        ctx = lib.fasttls_ctx_new()
        if ctx == ffi.NULL:
            raise error_from_queue("cannot create an OpenSSL context")
        self._ctx = ffi.gc(ctx, lib.SSL_CTX_free)
        self._lock = _ConfigLock(self._ctx)
        self._sni_callback = None
        self._verify_mode: Optional[ssl.VerifyMode] = None
        self._check_hostname = True
        self._check_common_name = False
        self._ca_loaded = False
        self._store_shared: Optional[str] = None  # None, "file" or "default": see _own_store
        self._keylog_filename: Optional[str] = None
        self._alpn_protocols: "list[str]" = []
        if os.environ.get("SSLKEYLOGFILE"):
            self.keylog_filename = os.environ["SSLKEYLOGFILE"]

    # ---- certificates and keys ----

    @_locked
    def set_cert(self, cert: PathOrPEM, key: Optional[PathOrPEM] = None,
                 password: Password = None) -> None:
        """Use a certificate chain (leaf first) and its private key: file paths or PEM bytes.
        `key=None` takes the key from `cert`. `password` decrypts an encrypted key. Calling it
        again replaces the certificate for connections created afterwards (reload)."""
        chain = _read_pem(cert)
        key_pem = chain if key is None else _read_pem(key)
        secret = _password_bytes(password)
        result = lib.fasttls_ctx_use_identity(self._ctx, chain, len(chain), key_pem,
                                              len(key_pem),
                                              secret if secret is not None else ffi.NULL,
                                              len(secret or b""))
        if result == 0:
            raise error_from_queue("cannot load the certificate chain")
        if result < 0:
            reason = "wrong password or bad key" if secret is not None else (
                "no key, a bad key, or an encrypted key without a password")
            raise error_from_queue(f"cannot load the private key ({reason}), or it does not "
                                   "match the certificate")

    @_locked
    def load_verify_locations(self, cafile: Optional[PathOrPEM] = None,
                              capath: Optional[PathOrPEM] = None,
                              cadata: Union[str, bytes, None] = None) -> None:
        """Trust these CA certificates: a PEM file, an OpenSSL hashed directory, or PEM text /
        DER bytes in memory. A first load of a file or of in-memory data alone is served from
        a shared cache of parsed stores."""
        if cafile is None and capath is None and cadata is None:
            raise TypeError("cafile, capath and cadata cannot be all omitted")
        for path in (cafile, capath):
            if path is not None and not os.path.exists(path):  # as the stdlib reports it
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        data, pem = _cadata_bytes(cadata) if cadata is not None else (None, False)
        if not self._ca_loaded and capath is None and (cafile is None) != (data is None):
            if cafile is not None:
                key = _file_key(cafile)
                if key is not None and self._use_cached_store(
                        ("file",) + key, lambda: lib.fasttls_store_new(os.fsencode(cafile),
                                                                       ffi.NULL, 0)):
                    return
            else:
                key = ("cadata", hashlib.sha256(data).digest(), pem)
                if self._use_cached_store(key, lambda: _store_from_data(data, pem)):
                    return
        self._own_store()
        if cafile is not None or capath is not None:
            file_arg = os.fsencode(cafile) if cafile is not None else ffi.NULL
            path_arg = os.fsencode(capath) if capath is not None else ffi.NULL
            if not lib.SSL_CTX_load_verify_locations(self._ctx, file_arg, path_arg):
                raise error_from_queue(f"cannot load CA certificates from {cafile or capath!r}")
        if data is not None:
            store = lib.SSL_CTX_get_cert_store(self._ctx)
            if lib.fasttls_store_add_ca(store, data, len(data), pem) <= 0:
                raise error_from_queue("cadata holds no valid CA certificate")
        self._ca_loaded = True

    @_locked
    def load_default_certs(self) -> None:
        """Trust the system's CA store (OpenSSL's default paths, SSL_CERT_FILE/SSL_CERT_DIR),
        parsed once per process and shared (a changed bundle is parsed again)."""
        if not self._ca_loaded and self._use_cached_store(
                _default_store_key(), lambda: lib.fasttls_store_new(ffi.NULL, ffi.NULL, 1),
                kind="default"):
            return
        self._own_store()
        if not lib.SSL_CTX_set_default_verify_paths(self._ctx):
            raise error_from_queue("cannot load the system CA store")
        self._ca_loaded = True

    def _use_cached_store(self, key, build, kind="file") -> bool:
        store = STORE_CACHE.get(key, build)
        if store is None:
            lib.ERR_clear_error()
            return False  # let the uncached path raise its usual error
        lib.SSL_CTX_set1_cert_store(self._ctx, store)
        self._store_shared = kind
        self._ca_loaded = True
        return True

    def _own_store(self) -> None:
        """Copy a shared store before changing it: other contexts use it too."""
        if self._store_shared is None:
            return
        shared = lib.SSL_CTX_get_cert_store(self._ctx)
        copy = lib.fasttls_store_copy(shared, self._store_shared == "default")
        if copy == ffi.NULL:
            raise error_from_queue("cannot copy the shared CA store")
        lib.SSL_CTX_set1_cert_store(self._ctx, ffi.gc(copy, lib.X509_STORE_free))
        self._store_shared = None

    # ---- algorithms and protocols ----

    @_locked
    def set_ciphers(self, ciphers: str) -> None:
        """OpenSSL cipher string for TLS 1.2 and below."""
        if not lib.SSL_CTX_set_cipher_list(self._ctx, ciphers.encode("ascii")):
            raise error_from_queue(f"no cipher can be selected from {ciphers!r}")

    @_locked
    def set_ciphersuites(self, suites: str) -> None:
        """TLS 1.3 cipher suites, colon separated, e.g. "TLS_AES_128_GCM_SHA256"."""
        if not suites or not lib.SSL_CTX_set_ciphersuites(self._ctx, suites.encode("ascii")):
            raise error_from_queue(f"no TLS 1.3 cipher suite can be selected from {suites!r}")

    @_locked
    def set_alpn_protocols(self, protocols: Iterable[str]) -> None:
        """Protocols to offer (client) or accept in this order of preference (server)."""
        protocols = list(protocols)
        wire = bytearray()
        for name in protocols:
            encoded = name.encode("ascii") if isinstance(name, str) else bytes(name)
            if not 0 < len(encoded) < 256:
                raise ValueError(f"ALPN protocol names are 1 to 255 bytes: {name!r}")
            wire += bytes([len(encoded)]) + encoded
        if not lib.fasttls_ctx_set_alpn(self._ctx, bytes(wire), len(wire)):
            raise error_from_queue("cannot set the ALPN protocols")
        self._alpn_protocols = protocols

    @property
    def alpn_protocols(self) -> "list[str]":
        return list(self._alpn_protocols)

    @alpn_protocols.setter
    def alpn_protocols(self, protocols: Iterable[str]) -> None:
        self.set_alpn_protocols(protocols)

    @property
    def minimum_version(self) -> ssl.TLSVersion:
        v = lib.SSL_CTX_get_min_proto_version(self._ctx)
        return ssl.TLSVersion(v) if v else ssl.TLSVersion.MINIMUM_SUPPORTED

    @minimum_version.setter
    def minimum_version(self, version: ssl.TLSVersion) -> None:
        self._set_version(lib.SSL_CTX_set_min_proto_version, version)

    @property
    def maximum_version(self) -> ssl.TLSVersion:
        v = lib.SSL_CTX_get_max_proto_version(self._ctx)
        return ssl.TLSVersion(v) if v else ssl.TLSVersion.MAXIMUM_SUPPORTED

    @maximum_version.setter
    def maximum_version(self, version: ssl.TLSVersion) -> None:
        self._set_version(lib.SSL_CTX_set_max_proto_version, version)

    @_locked
    def _set_version(self, setter, version) -> None:
        version = ssl.TLSVersion(version)
        if version == ssl.TLSVersion.SSLv3:
            raise ValueError("SSLv3 is not supported")
        if not setter(self._ctx, 0 if version in _NO_LIMIT else int(version)):
            raise error_from_queue(f"unsupported TLS version {version!r}")

    # ---- verification ----

    @property
    def verify_mode(self) -> Optional[ssl.VerifyMode]:
        """None (the default) means: clients require a valid server certificate, servers do not
        ask for a client certificate. Any other value applies to both roles."""
        return self._verify_mode

    @verify_mode.setter
    def verify_mode(self, mode) -> None:
        if mode is not None:
            mode = _VERIFY_MODES[mode] if isinstance(mode, str) else ssl.VerifyMode(mode)
        if mode == ssl.CERT_NONE and self._check_hostname:
            raise ValueError("Cannot set verify_mode to CERT_NONE when check_hostname is "
                             "enabled; set check_hostname = False first (insecure)")
        self._verify_mode = mode

    @property
    def check_hostname(self) -> bool:
        return self._check_hostname

    @check_hostname.setter
    def check_hostname(self, value: bool) -> None:
        self._check_hostname = bool(value)
        if self._check_hostname and self._verify_mode == ssl.CERT_NONE:
            self._verify_mode = ssl.CERT_REQUIRED

    @property
    def hostname_checks_common_name(self) -> bool:
        """Fall back to the subject's commonName when a certificate has no DNS names (default
        False, like the stdlib: RFC 6125 deprecates it)."""
        return self._check_common_name

    @hostname_checks_common_name.setter
    def hostname_checks_common_name(self, value: bool) -> None:
        self._check_common_name = bool(value)

    def _hostname_check_level(self) -> int:
        """For the engine: 0 no check, 1 DNS names and IPs, 2 also the commonName."""
        if not self._check_hostname or self._openssl_verify_mode(False) == lib.SSL_VERIFY_NONE:
            return 0
        return 2 if self._check_common_name else 1

    def _openssl_verify_mode(self, server: bool) -> int:
        mode = self._verify_mode
        if mode is None:
            mode = ssl.CERT_NONE if server else ssl.CERT_REQUIRED
        if mode == ssl.CERT_NONE:
            return lib.SSL_VERIFY_NONE
        if server and mode == ssl.CERT_REQUIRED:
            return lib.SSL_VERIFY_PEER | lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        return lib.SSL_VERIFY_PEER

    def _prepare_client(self) -> None:
        """Secure by default: a verifying client with no CA loaded gets the system store."""
        if not self._ca_loaded and self._verify_mode != ssl.CERT_NONE:
            self.load_default_certs()

    # ---- server name indication ----

    @property
    def sni_callback(self):
        """Server side: `callback(tls, server_name)`, called during the handshake with the name
        the client asked for (None if it sent none). Return another Context to serve the
        connection from it (its certificate and key), or None to keep this one. An exception
        aborts the handshake (internal_error alert) and is raised from `handshake()`."""
        return self._sni_callback

    @sni_callback.setter
    @_locked
    def sni_callback(self, callback) -> None:
        if callback is not None and not callable(callback):
            raise TypeError("sni_callback must be callable or None")
        self._sni_callback = callback
        lib.fasttls_ctx_enable_sni_callback(self._ctx, callback is not None)

    # ---- diagnostics ----

    @property
    def keylog_filename(self) -> Optional[str]:
        return self._keylog_filename

    @keylog_filename.setter
    @_locked
    def keylog_filename(self, path) -> None:
        """Append TLS secrets there in NSS key-log format (for Wireshark). Never in production."""
        raw = os.fsencode(path) if path is not None else ffi.NULL
        if path is not None:
            with open(path, "a"):  # fail now, clearly, if it cannot be written
                pass
        if not lib.fasttls_ctx_set_keylog(self._ctx, raw):
            raise MemoryError("cannot set keylog_filename")
        self._keylog_filename = os.fspath(path) if path is not None else None


# newctx keywords that are not attributes but arguments of a setter, grouped by setter.
_GROUPED_OPTIONS = {
    "set_cert": ("certfile", "keyfile", "password"),
    "load_verify_locations": ("cafile", "capath", "cadata"),
}
_SETTER_OPTIONS = {"ciphers": "set_ciphers", "ciphersuites": "set_ciphersuites"}
_ATTRIBUTE_OPTIONS = ("check_hostname", "hostname_checks_common_name", "verify_mode", "minimum_version", "maximum_version",
                      "alpn_protocols", "keylog_filename", "sni_callback")


def newctx(**options) -> Context:
    """A new Context, configured by keyword: any attribute of Context, `ciphers`,
    `ciphersuites`, `cafile`/`capath`/`cadata` and `certfile`/`keyfile`/`password`."""
    ctx = Context()
    known = set(_ATTRIBUTE_OPTIONS) | set(_SETTER_OPTIONS)
    known.update(*_GROUPED_OPTIONS.values())
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"newctx() got unexpected keyword arguments: {', '.join(unknown)}")
    # check_hostname first: turning it off is what permits verify_mode=CERT_NONE.
    for name in _ATTRIBUTE_OPTIONS:
        if name in options:
            setattr(ctx, name, options[name])
    for name, setter in _SETTER_OPTIONS.items():
        if name in options:
            getattr(ctx, setter)(options[name])
    cert = {k: options[k] for k in _GROUPED_OPTIONS["set_cert"] if k in options}
    if cert:
        if "certfile" not in cert:
            raise TypeError("keyfile and password need certfile")
        ctx.set_cert(cert["certfile"], cert.get("keyfile"), cert.get("password"))
    ca = {k: options[k] for k in _GROUPED_OPTIONS["load_verify_locations"] if k in options}
    if ca:
        ctx.load_verify_locations(**ca)
    return ctx

