"""The only importer of the compiled module: one-time initialisation and a build check."""
import atexit

from _fasttls import ffi, lib

from fasttls._version import ENGINE_ABI, __version__

__all__ = ["ffi", "lib", "OPENSSL_VERSION", "make_self_signed"]

_built_for = ffi.string(lib.fasttls_build_version()).decode()
if _built_for != __version__:
    raise ImportError(
        f"fasttls: the compiled module was built for fasttls {_built_for}, "
        f"but this is fasttls {__version__}; reinstall fasttls"
    )
if lib.FASTTLS_ABI != ENGINE_ABI:
    raise ImportError(
        f"fasttls: the compiled module has engine ABI {lib.FASTTLS_ABI}, this code expects "
        f"{ENGINE_ABI}; reinstall fasttls (pip install .)"
    )
if not lib.fasttls_init():
    raise ImportError("fasttls: OpenSSL could not be initialised")

# Before OpenSSL's own exit handler runs (it frees what daemon threads may still be using):
# wait up to 2 s for the operations in flight, then park threads that enter (see the engine).
atexit.register(lib.fasttls_quiesce, 2000)

OPENSSL_VERSION = ffi.string(lib.OpenSSL_version(lib.OPENSSL_VERSION)).decode()


def make_self_signed(hostname: str = "localhost") -> "tuple[bytes, bytes]":
    """An ephemeral ECDSA P-256 self-signed certificate and its key, as PEM, made in memory.

    Valid for a week, for `hostname`, 127.0.0.1 and ::1. Meant for benchmarks and tests."""
    cert = ffi.new("char **")
    cert_len = ffi.new("size_t *")
    key = ffi.new("char **")
    key_len = ffi.new("size_t *")
    if not lib.fasttls_make_self_signed(hostname.encode(), cert, cert_len, key, key_len):
        from fasttls._errors import error_from_queue

        raise error_from_queue("cannot make a self-signed certificate")
    try:
        return ffi.unpack(cert[0], cert_len[0]), ffi.unpack(key[0], key_len[0])
    finally:
        lib.fasttls_free(cert[0])
        lib.fasttls_free(key[0])
