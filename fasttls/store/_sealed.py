"""SealedStore: session blobs encrypted (AES-256-GCM, in the C engine) under a fleet key.

A stored session holds its master secret: anyone who can read the store (a shared Redis, a
memcached without authentication, its backups, the network in between) could decrypt the
traffic of the clients that resume it, or impersonate the server to them. Sealed, a blob is
useless without the fleet key; it is bound to its store key (moved under another session ID,
it no longer opens) and cannot be altered unnoticed.

Keys rotate: `SealedStore(inner, [current, *previous])` seals with the first and opens blobs
sealed with any (each blob names its key by id); a blob under a key no longer listed is "not
found" (a full handshake). `rotate()` swaps the list at run time."""
import hashlib
import os
from typing import Any, Dict, Iterable, List, Optional, Union

from fasttls._binding import ffi, lib

__all__ = ["SealedStore", "SealingKey"]

FORMAT = 1  # the first byte of a sealed blob
KEY_LENGTH = 32
KEY_ID_MAX = 32
Secret = Union[bytes, bytearray, memoryview]


def _wipe(secret: Any) -> None:
    if isinstance(secret, bytearray):
        secret[:] = bytes(len(secret))


class SealingKey:
    """A 32-byte fleet key, held in C memory of its own and wiped when this object goes; a
    `bytearray` secret is wiped as soon as it is copied there (bytes cannot be). `key_id`
    (1-32 bytes) names it in each blob; by default 8 bytes of a hash of the key (which says
    nothing about the key). Every server of the fleet must hold the same keys."""

    __slots__ = ("_key", "key_id")

    def __init__(self, secret: Secret, key_id: Optional[bytes] = None) -> None:
        try:
            if len(secret) != KEY_LENGTH:
                raise ValueError(f"a sealing key is {KEY_LENGTH} bytes, not {len(secret)}")
            if key_id is None:
                key_id = hashlib.sha256(b"fasttls sealing key id\0" + bytes(secret)).digest()[:8]
            key_id = bytes(key_id)
            if not 0 < len(key_id) <= KEY_ID_MAX:
                raise ValueError(f"a key id is 1 to {KEY_ID_MAX} bytes")
            key = lib.fasttls_seal_key_new(ffi.from_buffer(secret), len(secret))
            if key == ffi.NULL:
                raise MemoryError("cannot hold the sealing key")
        finally:
            _wipe(secret)
        self._key = ffi.gc(key, lib.fasttls_seal_key_free)
        self.key_id = key_id

    @classmethod
    def from_file(cls, path: "Union[str, os.PathLike[str]]",
                  key_id: Optional[bytes] = None) -> "SealingKey":
        """A key from a file of 32 raw bytes or 64 hex digits (what `new_secret().hex()`
        writes); keep it readable by the server only (mode 0600)."""
        with open(path, "rb") as f:
            data = bytearray(f.read())
        try:
            text = bytes(data).strip()
            if len(data) != KEY_LENGTH and len(text) == 2 * KEY_LENGTH:
                secret = bytearray(bytes.fromhex(text.decode("ascii")))
                return cls(secret, key_id)
            return cls(data, key_id)
        finally:
            _wipe(data)

    @staticmethod
    def new_secret() -> bytes:
        """32 random bytes for a new key."""
        return os.urandom(KEY_LENGTH)

    def __repr__(self) -> str:
        return f"<SealingKey id={self.key_id.hex()}>"


class SealedStore:
    """A SessionStore that seals values before `inner` keeps them, and opens them after: see
    the module docstring. Values that do not open (another fleet's, a removed key's, altered
    ones) are "not found": the client gets a full handshake."""

    def __init__(self, inner: Any, keys: Union[SealingKey, Iterable[SealingKey]]) -> None:
        self.inner = inner
        self.local = bool(getattr(inner, "local", False))
        self.rejected = 0  # values that did not open
        self._keys: List[SealingKey] = []
        self._by_id: Dict[bytes, SealingKey] = {}
        self.rotate(keys)

    def rotate(self, keys: Union[SealingKey, Iterable[SealingKey]]) -> None:
        """[current, *previous]: seal with the first from now on, open with any."""
        listed = [keys] if isinstance(keys, SealingKey) else list(keys)
        if not listed or not all(isinstance(k, SealingKey) for k in listed):
            raise TypeError("SealedStore needs one SealingKey or a list of them")
        self._keys, self._by_id = listed, {k.key_id: k for k in listed}

    def seal(self, key: bytes, value: bytes) -> bytes:
        current = self._keys[0]
        header = bytes((FORMAT, len(current.key_id))) + current.key_id
        size = lib.fasttls_sealed_size(len(header), len(value))
        out = ffi.new("unsigned char[]", size)
        n = lib.fasttls_seal(current._key, header, len(header), bytes(key), len(key),
                             ffi.from_buffer(value), len(value), out)
        if n < 0:
            raise MemoryError("cannot seal the session")
        return ffi.unpack(ffi.cast("char *", out), n)

    def open(self, key: bytes, sealed: bytes) -> Optional[bytes]:
        """The value, or None if it does not open under any listed key."""
        if len(sealed) < 2 or sealed[0] != FORMAT:
            return None
        header_len = 2 + sealed[1]
        sealing = self._by_id.get(bytes(sealed[2:header_len]))
        if sealing is None:
            return None
        out = ffi.new("unsigned char[]", max(1, len(sealed)))
        n = lib.fasttls_unseal(sealing._key, sealed, len(sealed), header_len, bytes(key),
                               len(key), out)
        if n < 0:
            return None
        value = ffi.unpack(ffi.cast("char *", out), n)
        ffi.memmove(out, bytes(n), n)  # the session's secrets leave this buffer
        return value

    def _opened(self, key: bytes, sealed: Optional[bytes]) -> Optional[bytes]:
        if sealed is None:
            return None
        value = self.open(key, bytes(sealed))
        if value is None:
            self.rejected += 1
        return value

    def get(self, key: bytes, timeout: Optional[float] = None) -> Optional[bytes]:
        return self._opened(key, self.inner.get(key, timeout))

    def set(self, key: bytes, value: bytes, ttl: int, timeout: Optional[float] = None) -> None:
        self.inner.set(key, self.seal(key, value), ttl, timeout)

    def delete(self, key: bytes, timeout: Optional[float] = None) -> None:
        self.inner.delete(key, timeout)

    async def get_async(self, key: bytes) -> Optional[bytes]:
        return self._opened(key, await self.inner.get_async(key))

    async def set_async(self, key: bytes, value: bytes, ttl: int) -> None:
        await self.inner.set_async(key, self.seal(key, value), ttl)

    async def delete_async(self, key: bytes) -> None:
        await self.inner.delete_async(key)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    def __repr__(self) -> str:
        return f"<SealedStore {self.inner!r} keys={[k.key_id.hex() for k in self._keys]}>"
