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
from fasttls._certinfo import certificate_der, certificate_dict
from fasttls._errors import error_from_queue

__all__ = ["Context", "newctx"]

PathOrPEM = Union[str, bytes, "os.PathLike[str]"]
Password = Union[str, bytes, Callable[[], Union[str, bytes]], None]

_VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
# ssl.TLSVersion's values are the protocol numbers OpenSSL uses, except the two sentinels, which
# mean what CPython's set_min_max_proto_version makes of them: as a minimum, MINIMUM_SUPPORTED is
# "no limit" (OpenSSL's 0) and MAXIMUM_SUPPORTED the newest version (TLS 1.3 only); as a maximum,
# MAXIMUM_SUPPORTED is "no limit" and MINIMUM_SUPPORTED the oldest version OpenSSL was built with.
_MIN, _MAX = ssl.TLSVersion.MINIMUM_SUPPORTED, ssl.TLSVersion.MAXIMUM_SUPPORTED
_VERSION_LIMITS = {
    "minimum": {_MIN: 0, _MAX: lib.TLS1_3_VERSION},
    "maximum": {_MAX: 0, _MIN: lib.fasttls_lowest_version()},
}
_KNOWN_VERSIONS = frozenset(v for v in ssl.TLSVersion if v not in (_MIN, _MAX))

# OpenSSL takes lengths as C ints: anything longer is refused here, with the limit, rather than
# narrowed (BIO_new_mem_buf would even read a length that wraps to -1 as "up to the first NUL").
_INT_MAX = 2**31 - 1
# RFC 7301: the ALPN extension's protocol list has a 16-bit length.
_ALPN_LIST_MAX = 65535
# Key exchange groups of Mozilla's "intermediate" profile, set by the engine on every new
# context (OpenSSL's own default adds X448 and P-521, which that profile leaves out).
DEFAULT_GROUPS = ("X25519", "P-256", "P-384")


def _check_length(what: str, data: bytes, limit: Optional[int] = None) -> None:
    if limit is None:
        limit = _INT_MAX
    if len(data) > limit:
        raise OverflowError(f"{what} is {len(data)} bytes; OpenSSL takes at most {limit}")


def _read_pem(source: PathOrPEM, paths_only: bool = False) -> bytes:
    """The bytes of a file path (str or PathLike), or PEM given as bytes. With `paths_only`,
    bytes are a file name too (as the stdlib's load_cert_chain takes them)."""
    if not paths_only and isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if paths_only and isinstance(source, (bytearray, memoryview)):
        raise TypeError(f"a file path is a str, bytes or os.PathLike, not {type(source).__name__}")
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
        password = password.encode("utf-8")
    elif isinstance(password, (bytes, bytearray)):
        password = bytes(password)
    else:
        raise TypeError("password should be a str, bytes or a callable returning one")
    # OpenSSL hands its password callback a buffer of PEM_BUFSIZE bytes; the stdlib's message.
    if len(password) > lib.PEM_BUFSIZE:
        raise ValueError(f"password cannot be longer than {lib.PEM_BUFSIZE} bytes")
    return password


def _nid_name(nid: int) -> Optional[str]:
    """OpenSSL's long name of an object ("aes-256-gcm", "kx-ecdhe"), as get_ciphers shows it."""
    if nid == lib.NID_undef:
        return None
    name = lib.OBJ_nid2ln(nid)
    return ffi.string(name).decode() if name != ffi.NULL else None


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
            lib.ERR_clear_error()
            raise RuntimeError("cannot lock the TLS context")
        # A change starts from an empty error queue, so the error it reports is its own (code
        # outside fasttls, the stdlib's _ssl included, may leave errors in this thread's queue).
        lib.ERR_clear_error()

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
    waits for handshake steps in progress, including those of connections an sni_callback
    switched to this Context. An sni_callback must not change the Context it was called for
    (it runs inside a handshake step of that Context), nor one it already switched to."""

    __slots__ = ("_ctx", "_lock", "_verify_mode", "_check_hostname", "_check_common_name",
                 "_ca_loaded", "_store_shared", "_keylog_filename", "_alpn_protocols",
                 "_sni_callback", "_groups", "__weakref__")

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
        self._groups: "list[str]" = list(DEFAULT_GROUPS)
        if os.environ.get("SSLKEYLOGFILE"):
            self.keylog_filename = os.environ["SSLKEYLOGFILE"]

    # ---- certificates and keys ----

    @_locked
    def set_cert(self, cert: PathOrPEM, key: Optional[PathOrPEM] = None,
                 password: Password = None, *, paths_only: bool = False) -> None:
        """Use a certificate chain (leaf first) and its private key: file paths or PEM bytes.
        `key=None` takes the key from `cert`. `password` decrypts an encrypted key (at most
        1024 bytes). Calling it again replaces the certificate for connections created
        afterwards (reload): every identity loaded before, of any key type, is dropped (see
        add_cert to serve several). `paths_only=True` reads `bytes` as a file name, like the
        stdlib's load_cert_chain, instead of as PEM data."""
        self._use_identity(cert, key, password, paths_only, lib.FASTTLS_IDENTITY_REPLACE)

    @_locked
    def add_cert(self, cert: PathOrPEM, key: Optional[PathOrPEM] = None,
                 password: Password = None, *, paths_only: bool = False) -> None:
        """Like set_cert, but beside the identities already loaded: one certificate per key
        type (RSA, ECDSA, Ed25519, ...), and OpenSSL serves each client the one its signature
        algorithms accept (an ECDSA certificate to a client that offers only ECDSA, say). A
        certificate of a key type already loaded replaces that one only. This is what the
        stdlib's repeated load_cert_chain calls do."""
        self._use_identity(cert, key, password, paths_only, lib.FASTTLS_IDENTITY_ADD)

    def _use_identity(self, cert, key, password, paths_only, how) -> None:
        chain = _read_pem(cert, paths_only)
        key_pem = chain if key is None else _read_pem(key, paths_only)
        _check_length("the certificate chain", chain)
        _check_length("the private key", key_pem)
        secret = _password_bytes(password)
        result = lib.fasttls_ctx_use_identity(self._ctx, chain, len(chain), key_pem,
                                              len(key_pem),
                                              secret if secret is not None else ffi.NULL,
                                              len(secret or b""), how)
        if result == 0:
            raise error_from_queue("cannot load the certificate chain")
        if result < 0:
            reason = "wrong password or bad key" if secret is not None else (
                "no key, a bad key, or an encrypted key without a password")
            raise error_from_queue(f"cannot load the private key ({reason}), or it does not "
                                   "match the certificate")

    @_locked
    def load_dh_params(self, path: Union[str, bytes, "os.PathLike[str]"]) -> None:
        """Finite-field Diffie-Hellman parameters for TLS 1.2 DHE suites, from a PEM file ("DH
        PARAMETERS", e.g. from `openssl dhparam`), instead of the RFC 7919 groups chosen
        automatically by default. `path` is a file name (str, bytes or PathLike), as in the
        stdlib. FileNotFoundError if it does not exist; ssl.SSLError if it holds no DH
        parameters or they are too small for the security level (2048 bits)."""
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError(f"path should be a str, bytes or os.PathLike, not {type(path).__name__}")
        data = _read_pem(path, paths_only=True)
        _check_length("the DH parameters file", data)
        result = lib.fasttls_ctx_load_dh_params(self._ctx, data, len(data))
        if result == 0:
            raise error_from_queue(f"no DH parameters in {os.fsdecode(path)!r}")
        if result < 0:
            raise error_from_queue(f"the DH parameters in {os.fsdecode(path)!r} are refused")

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
        if data is not None and pem:
            _check_length("cadata", data)
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
        if len(wire) > _ALPN_LIST_MAX:
            raise ValueError(f"the ALPN protocol list is {len(wire)} bytes in TLS encoding; "
                             f"TLS allows at most {_ALPN_LIST_MAX}")
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
        """The oldest version allowed (default TLSv1_2). Every value means what it means in the
        stdlib: MINIMUM_SUPPORTED is no limit of fasttls's own (the security level still allows
        nothing older than TLS 1.2 under OpenSSL 3), MAXIMUM_SUPPORTED is TLS 1.3 only. Reads
        back as the stdlib's does: MINIMUM_SUPPORTED when there is no limit."""
        v = lib.SSL_CTX_get_min_proto_version(self._ctx)
        return ssl.TLSVersion(v) if v else _MIN

    @minimum_version.setter
    def minimum_version(self, version: ssl.TLSVersion) -> None:
        self._set_version("minimum", version)

    @property
    def maximum_version(self) -> ssl.TLSVersion:
        """The newest version allowed (default: no limit, read back as MAXIMUM_SUPPORTED).
        MINIMUM_SUPPORTED means the oldest version this OpenSSL was built with, as in the
        stdlib (which no handshake can use at fasttls's security level)."""
        v = lib.SSL_CTX_get_max_proto_version(self._ctx)
        return ssl.TLSVersion(v) if v else _MAX

    @maximum_version.setter
    def maximum_version(self, version: ssl.TLSVersion) -> None:
        self._set_version("maximum", version)

    @_locked
    def _set_version(self, which: str, version) -> None:
        if not isinstance(version, int):
            raise TypeError(f"{which}_version must be an ssl.TLSVersion, not "
                            f"{type(version).__name__}")
        if version in _VERSION_LIMITS[which]:
            number = _VERSION_LIMITS[which][version]
        elif version in _KNOWN_VERSIONS:
            number = int(version)
        else:
            raise ValueError(f"Unsupported TLS/SSL version 0x{int(version):x}")  # the stdlib's
        setter = (lib.SSL_CTX_set_min_proto_version if which == "minimum"
                  else lib.SSL_CTX_set_max_proto_version)
        if not setter(self._ctx, number):
            raise error_from_queue(f"unsupported TLS version {ssl.TLSVersion(version)!r}")

    # ---- key exchange ----

    @property
    def groups(self) -> "list[str]":
        """The key exchange groups offered (client) and accepted (server), in order of
        preference. Default: X25519, P-256, P-384 (Mozilla's "intermediate" profile)."""
        return list(self._groups)

    @groups.setter
    def groups(self, groups: Union[str, Iterable[str]]) -> None:
        self.set_groups(groups)

    @_locked
    def set_groups(self, groups: Union[str, Iterable[str]]) -> None:
        """Set the key exchange groups: OpenSSL names, as a list or one colon-separated string,
        e.g. ["X25519", "P-256"], "x448:P-521" or ["ffdhe2048"] (finite-field groups for TLS
        1.3, RFC 7919). ValueError for an empty list or a name OpenSSL does not know; nothing
        changes then."""
        names = groups.split(":") if isinstance(groups, str) else list(groups)
        if not names or not all(isinstance(n, str) and n and ":" not in n for n in names):
            raise ValueError(f"groups must be non-empty group names, not {groups!r}")
        if not lib.SSL_CTX_set1_groups_list(self._ctx, ":".join(names).encode("ascii")):
            lib.ERR_clear_error()
            raise ValueError(f"unknown key exchange group in {groups!r}")
        self._groups = names

    def set_ecdh_curve(self, name: Union[str, bytes]) -> None:
        """The stdlib's set_ecdh_curve: key exchange with this one curve (or group) only, e.g.
        "prime256v1". ValueError if OpenSSL does not know it."""
        raw = name.decode("ascii") if isinstance(name, bytes) else name
        if not isinstance(raw, str):
            raise TypeError(f"name must be a str or bytes, not {type(name).__name__}")
        try:
            self.set_groups([raw])
        except ValueError:
            raise ValueError(f"unknown elliptic curve name {name!r}") from None

    # ---- OpenSSL settings, as the stdlib exposes them ----

    @property
    def options(self) -> int:
        """OpenSSL's SSL_OP_* bits for this context (ssl.Options values)."""
        return lib.SSL_CTX_get_options(self._ctx)

    @options.setter
    @_locked
    def options(self, value: int) -> None:
        new = int(value)
        old = lib.SSL_CTX_get_options(self._ctx)
        lib.SSL_CTX_clear_options(self._ctx, old & ~new)
        lib.SSL_CTX_set_options(self._ctx, new & ~old)

    @property
    def verify_flags(self) -> int:
        """OpenSSL's X509_V_FLAG_* bits for chain verification (ssl.VerifyFlags values)."""
        return lib.X509_VERIFY_PARAM_get_flags(lib.SSL_CTX_get0_param(self._ctx))

    @verify_flags.setter
    @_locked
    def verify_flags(self, value: int) -> None:
        param = lib.SSL_CTX_get0_param(self._ctx)
        new, old = int(value), lib.X509_VERIFY_PARAM_get_flags(param)
        if (old & ~new and not lib.X509_VERIFY_PARAM_clear_flags(param, old & ~new)) or (
                new & ~old and not lib.X509_VERIFY_PARAM_set_flags(param, new & ~old)):
            lib.ERR_clear_error()
            raise ValueError(f"cannot set verify_flags to {value!r}")

    @property
    def num_tickets(self) -> int:
        """TLS 1.3 session tickets a server sends after each handshake (OpenSSL's default 2)."""
        return lib.SSL_CTX_get_num_tickets(self._ctx)

    @num_tickets.setter
    @_locked
    def num_tickets(self, value: int) -> None:
        if value < 0:
            raise ValueError("value must be non-negative")
        if not lib.SSL_CTX_set_num_tickets(self._ctx, value):
            raise error_from_queue(f"cannot set num_tickets to {value!r}")

    def session_stats(self) -> "dict[str, int]":
        """OpenSSL's session cache counters, under the stdlib's names."""
        ctx = self._ctx
        return {name: getattr(lib, "SSL_CTX_sess_" + name)(ctx) for name in (
            "number", "connect", "connect_good", "connect_renegotiate", "accept", "accept_good",
            "accept_renegotiate", "hits", "misses", "timeouts", "cache_full")}

    def get_ciphers(self) -> "list[dict]":
        """The cipher suites enabled, in order of preference, as the stdlib lists them."""
        text = ffi.new("char[]", 256)
        alg_bits = ffi.new("int *")
        ciphers = []
        with self._lock:  # set_ciphers frees the list being read
            for i in range(lib.fasttls_ctx_cipher_count(self._ctx)):
                c = lib.fasttls_ctx_cipher(self._ctx, i)
                description = ffi.string(lib.SSL_CIPHER_description(c, text, 256)).decode()
                ciphers.append({
                    "id": lib.SSL_CIPHER_get_id(c),
                    "name": ffi.string(lib.SSL_CIPHER_get_name(c)).decode(),
                    "protocol": ffi.string(lib.SSL_CIPHER_get_version(c)).decode(),
                    "description": description.rstrip("\n"),
                    "strength_bits": lib.SSL_CIPHER_get_bits(c, alg_bits),
                    "alg_bits": alg_bits[0],
                    "aead": bool(lib.SSL_CIPHER_is_aead(c)),
                    "symmetric": _nid_name(lib.SSL_CIPHER_get_cipher_nid(c)),
                    "digest": _nid_name(lib.SSL_CIPHER_get_digest_nid(c)),
                    "kea": _nid_name(lib.SSL_CIPHER_get_kx_nid(c)),
                    "auth": _nid_name(lib.SSL_CIPHER_get_auth_nid(c)),
                })
        return ciphers

    def _store_certs(self) -> "list[tuple]":
        """(X509, is_ca) for each certificate of the trust store, each X509 freed when dropped.
        Under the lock: load_verify_locations may replace (and free) the store meanwhile."""
        is_ca = ffi.new("int *")
        found = []
        with self._lock:
            while True:
                x509 = lib.fasttls_store_cert(self._ctx, len(found), is_ca)
                if x509 == ffi.NULL:
                    return found
                found.append((ffi.gc(x509, lib.X509_free), bool(is_ca[0])))

    def cert_store_stats(self) -> "dict[str, int]":
        """Counts of the trust store's certificates, CA certificates and CRLs, as the stdlib's."""
        certs = cas = 0
        for _, is_ca in self._store_certs():
            certs += 1
            cas += is_ca
        with self._lock:
            crls = lib.fasttls_store_crl_count(self._ctx)
        return {"x509": certs, "crl": crls, "x509_ca": cas}

    def get_ca_certs(self, binary_form: bool = False) -> list:
        """The CA certificates of the trust store: dicts like getpeercert()'s, or DER bytes."""
        return [certificate_der(x509) if binary_form else certificate_dict(x509)
                for x509, is_ca in self._store_certs() if is_ca]

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
        connection from it (all of its settings: certificate, trust store, verify mode), None
        to keep this one, or an alert number (e.g. `ssl.ALERT_DESCRIPTION_ACCESS_DENIED`) to
        refuse the client with that alert. An exception aborts the handshake (internal_error
        alert) and is raised from `handshake()`."""
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
_SETTER_OPTIONS = {"ciphers": "set_ciphers", "ciphersuites": "set_ciphersuites",
                   "groups": "set_groups"}
_ATTRIBUTE_OPTIONS = ("check_hostname", "hostname_checks_common_name", "verify_mode", "minimum_version", "maximum_version",
                      "alpn_protocols", "keylog_filename", "sni_callback")


def newctx(**options) -> Context:
    """A new Context, configured by keyword: any attribute of Context, `ciphers`,
    `ciphersuites`, `groups` (see set_groups), `cafile`/`capath`/`cadata` and
    `certfile`/`keyfile`/`password`."""
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

