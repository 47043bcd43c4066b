"""Private keys held by the key server: loading from PEM, key ids, signing (csrc/fasttls_sign.c).

The key id is SHA-256 of the SubjectPublicKeyInfo DER, so an edge computes it from the
certificate alone (`certificate_key_id`) and the key server from the private key (`PrivateKey`).
"""
import os
import pathlib
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

from fasttls._binding import ffi, lib
from fasttls._errors import error_from_queue
from fasttls.keyless._errors import keyless_error

__all__ = ["PrivateKey", "KeyStore", "certificate_key_id", "SCHEMES"]

PathLike = Union[str, "os.PathLike[str]"]

# TLS SignatureScheme code points the key server signs with, by their RFC 8446 names.
SCHEMES = {
    lib.FASTTLS_SCHEME_ECDSA_SECP256R1_SHA256: "ecdsa_secp256r1_sha256",
    lib.FASTTLS_SCHEME_ECDSA_SECP384R1_SHA384: "ecdsa_secp384r1_sha384",
    lib.FASTTLS_SCHEME_RSA_PSS_RSAE_SHA256: "rsa_pss_rsae_sha256",
    lib.FASTTLS_SCHEME_RSA_PSS_RSAE_SHA384: "rsa_pss_rsae_sha384",
    lib.FASTTLS_SCHEME_RSA_PSS_RSAE_SHA512: "rsa_pss_rsae_sha512",
    lib.FASTTLS_SCHEME_RSA_PKCS1_SHA256: "rsa_pkcs1_sha256",
    lib.FASTTLS_SCHEME_RSA_PKCS1_SHA384: "rsa_pkcs1_sha384",
    lib.FASTTLS_SCHEME_RSA_PKCS1_SHA512: "rsa_pkcs1_sha512",
}
_KEY_TYPES = {lib.FASTTLS_KEY_P256: "ec-p256", lib.FASTTLS_KEY_P384: "ec-p384",
              lib.FASTTLS_KEY_RSA: "rsa"}


def _bytes(data: Union[str, bytes, None]) -> Optional[bytes]:
    return data.encode() if isinstance(data, str) else data


def certificate_key_id(cert_pem: Union[str, bytes]) -> bytes:
    """The key id of the first certificate in `cert_pem`: what an edge sends for it."""
    pem = _bytes(cert_pem) or b""
    out = ffi.new("unsigned char[32]")
    if not lib.fasttls_cert_key_id(pem, len(pem), out):
        raise error_from_queue("cannot read the certificate for its key id")
    return bytes(out)


class PrivateKey:
    """One private key (ECDSA P-256, P-384 or RSA), loaded once, then used by any thread."""

    def __init__(self, pem: Union[str, bytes], password: Union[str, bytes, None] = None,
                 name: str = "") -> None:
        pem_bytes = _bytes(pem) or b""
        pw = _bytes(password)
        handle = lib.fasttls_key_load(pem_bytes, len(pem_bytes),
                                      pw if pw is not None else ffi.NULL, len(pw or b""))
        if handle == ffi.NULL:
            raise error_from_queue(f"cannot load the private key {name}".rstrip())
        self._handle = ffi.gc(handle, lib.fasttls_key_free)
        out = ffi.new("unsigned char[32]")
        if not lib.fasttls_key_id(self._handle, out):
            raise error_from_queue("cannot compute the key id")
        self.key_id = bytes(out)
        self.key_type = _KEY_TYPES[lib.fasttls_key_type(self._handle)]
        self.name = name
        self._max_signature = lib.fasttls_key_max_signature(self._handle)

    @classmethod
    def from_file(cls, path: PathLike, password: Union[str, bytes, None] = None) -> "PrivateKey":
        return cls(pathlib.Path(path).read_bytes(), password, name=os.fspath(path))

    def fits(self, scheme: int) -> bool:
        """Whether `scheme` is one this key can sign with."""
        return bool(lib.fasttls_key_fits_scheme(self._handle, scheme))

    def sign(self, scheme: int, data: bytes) -> bytes:
        """Sign `data` (the whole message; hashed here) for TLS SignatureScheme `scheme`.
        Releases the GIL while it signs. A scheme that does not fit the key: KeylessError with
        reason "bad_scheme"."""
        buf = ffi.new("unsigned char[]", self._max_signature)
        n = lib.fasttls_key_sign(self._handle, scheme, data, len(data), buf, self._max_signature)
        if n == lib.FASTTLS_KEY_BAD_SCHEME:
            name = SCHEMES.get(scheme, f"0x{scheme:04x}")
            raise keyless_error("BAD_SCHEME", f"signature scheme {name} does not fit this "
                                             f"{self.key_type} key")
        if n < 0:
            raise error_from_queue("signing failed")
        return ffi.buffer(buf, n)[:]

    def __repr__(self) -> str:
        return f"<PrivateKey {self.key_type} {self.key_id.hex()[:16]} {self.name}>"


class KeyStore:
    """The key server's keys, by key id: loaded from PEM files and from directories of them."""

    def __init__(self, keys: Iterable[PrivateKey] = ()) -> None:
        self._keys: Dict[bytes, PrivateKey] = {}
        self._added: List[PrivateKey] = []  # given as objects: kept by reloaded()
        self._sources: List[Tuple[PathLike, Union[str, bytes, None]]] = []  # load()'s
        for key in keys:
            self.add(key)

    def add(self, key: PrivateKey) -> None:
        self._keys[key.key_id] = key
        self._added.append(key)

    def load(self, path: PathLike, password: Union[str, bytes, None] = None) -> None:
        """Load a PEM file, or every *.pem / *.key file of a directory."""
        self._load(path, password)
        self._sources.append((path, password))

    def reloaded(self) -> "KeyStore":
        """A new KeyStore read again from the same files and directories (keys added as
        objects kept as they are): new files appear, removed ones go, changed ones change.
        Raises as load() does, naming the file; this store is left unchanged."""
        fresh = KeyStore(self._added)
        for path, password in self._sources:
            fresh.load(path, password)
        return fresh

    def _load(self, path: PathLike, password: Union[str, bytes, None]) -> None:
        p = pathlib.Path(path)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix in (".pem", ".key") and f.is_file())
            if not files:
                raise keyless_error("INTERNAL", f"no *.pem or *.key file in {p}")
            for f in files:
                key = PrivateKey.from_file(f, password)
                self._keys[key.key_id] = key
        else:
            key = PrivateKey.from_file(p, password)
            self._keys[key.key_id] = key

    def get(self, key_id: bytes) -> Optional[PrivateKey]:
        return self._keys.get(key_id)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[PrivateKey]:
        return iter(self._keys.values())
