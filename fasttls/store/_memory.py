"""MemoryStore: a session store in this process's memory (tests, one-process servers)."""
import threading
import time
from typing import Dict, Optional, Tuple

__all__ = ["MemoryStore"]


class MemoryStore:
    """A dict with expiry, thread-safe. Shared by contexts of one process only; use RedisStore or
    MemcachedStore for a fleet. At most `max_entries` sessions (the oldest go first)."""

    local = True

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:  # 0 would make set() evict from an empty dict
            raise ValueError(f"MemoryStore needs max_entries >= 1, not {max_entries}")
        self._entries: Dict[bytes, Tuple[bytes, float]] = {}  # insertion order: oldest first
        self._lock = threading.Lock()
        self._max = max_entries

    def get(self, key: bytes, timeout: Optional[float] = None) -> Optional[bytes]:
        with self._lock:
            entry = self._entries.get(bytes(key))
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._entries[bytes(key)]
                return None
            return entry[0]

    def set(self, key: bytes, value: bytes, ttl: int, timeout: Optional[float] = None) -> None:
        with self._lock:
            self._entries.pop(bytes(key), None)
            while len(self._entries) >= self._max:
                del self._entries[next(iter(self._entries))]
            self._entries[bytes(key)] = (bytes(value), time.monotonic() + ttl)

    def delete(self, key: bytes, timeout: Optional[float] = None) -> None:
        with self._lock:
            self._entries.pop(bytes(key), None)

    async def get_async(self, key: bytes) -> Optional[bytes]:
        return self.get(key)

    async def set_async(self, key: bytes, value: bytes, ttl: int) -> None:
        self.set(key, value, ttl)

    async def delete_async(self, key: bytes) -> None:
        self.delete(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> "list[bytes]":
        with self._lock:
            return list(self._entries)
