"""SessionStore: what a shared session store implements."""
from typing import Optional, Protocol

__all__ = ["SessionStore"]


class SessionStore(Protocol):
    """Keys are session IDs (up to 32 bytes); values are serialised sessions (or sealed ones).
    Every method may raise any exception for a store that is down or slow: the callers turn
    that into "not found" (lookups) or a session not kept (writes), never a failed handshake.

    `timeout` (seconds, None: the store's own) bounds one call; a store caps it with its own
    timeout. `local` is true for a store that answers without I/O (MemoryStore): new sessions
    are then written at once rather than from a background writer."""

    local: bool

    def get(self, key: bytes, timeout: Optional[float] = None) -> Optional[bytes]:
        """The value, or None if there is none (or it expired)."""

    def set(self, key: bytes, value: bytes, ttl: int, timeout: Optional[float] = None) -> None:
        """Keep `value` for `ttl` seconds (the session's timeout), replacing any other."""

    def delete(self, key: bytes, timeout: Optional[float] = None) -> None:
        """Forget the key (no error if it is not there)."""

    async def get_async(self, key: bytes) -> Optional[bytes]:
        """get(), awaited without blocking the event loop (bounded by the store's timeout)."""

    async def set_async(self, key: bytes, value: bytes, ttl: int) -> None:
        """set(), awaited."""

    async def delete_async(self, key: bytes) -> None:
        """delete(), awaited."""


def effective_timeout(own: Optional[float], given: Optional[float]) -> Optional[float]:
    """The shorter of a store's own timeout and a caller's (None: no limit)."""
    if own is None:
        return given
    if given is None:
        return own
    return min(own, given)
