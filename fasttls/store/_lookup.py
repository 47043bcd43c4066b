"""SessionLookup: the handshake paused for a session to be fetched from the shared store."""
import logging
import time
import weakref
from typing import Any, Optional

from fasttls._binding import ffi, lib

__all__ = ["SessionLookup"]

log = logging.getLogger("fasttls.store")

# A store that is down fails every lookup: say so at most this often (seconds) per store.
_REPORT_EVERY = 10.0
_last_report: "dict[int, float]" = {}


def report_store_failure(store: Any, what: str, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _last_report.get(id(store), -_REPORT_EVERY) >= _REPORT_EVERY:
        _last_report[id(store)] = now
        log.warning("session store %r: %s failed (%s: %s); full handshakes meanwhile", store,
                    what, type(exc).__name__, exc)


class SessionLookup:
    """A `fasttls._pause.HandshakePause`: a server's handshake waits for the session the client
    offered (`key`: its TLS 1.2 session ID or TLS 1.3 ticket identity) to be fetched from
    `store`. `resolve(timeout)` / `await resolve_async()` fetch it and hand it in; sans-IO code
    may also fetch it itself and call `hand_in(value_or_None)`. Either way the next handshake
    call continues: resuming if the session was found and is valid, else a full handshake.
    A store that fails or times out counts as "not found" (`error` says why)."""

    __slots__ = ("_tls", "store", "key", "error", "found")

    def __init__(self, tls: Any, store: Any) -> None:
        conn = tls._conn
        # Weakly, as SigningRequest does: the connection holds this (TLS.pause), and a strong
        # reference back would make a cycle per lookup, freed only by the garbage collector
        # (on whatever thread runs it). Without its connection, a lookup is moot.
        self._tls: Optional[weakref.ref] = weakref.ref(tls)
        self.store = store
        self.key: bytes = ffi.unpack(ffi.cast("char *", conn.session_key), conn.session_key_len)
        self.error: Optional[BaseException] = None
        self.found = False  # a session was handed in and accepted

    @property
    def resolved(self) -> bool:
        return self._tls is None or self._tls() is None

    def hand_in(self, value: Optional[bytes]) -> None:
        """The store's answer: the value kept under `key`, or None. Only the first answer
        counts."""
        ref, self._tls = self._tls, None
        tls = ref() if ref is not None else None
        if tls is None or tls._conn.ssl == ffi.NULL:
            return
        if value is not None and not isinstance(value, (bytes, bytearray, memoryview)):
            self.error = TypeError(f"the store returned {type(value).__name__}, not bytes")
            value = None
        data = bytes(value) if value else ffi.NULL
        if not lib.fasttls_conn_hand_in_session(tls._conn, data, len(value) if value else 0):
            self.error = ValueError("the stored session is unreadable or not the one asked for")
        else:
            self.found = bool(value)

    def resolve(self, timeout: Optional[float]) -> None:
        value = None
        try:
            value = self.store.get(self.key, timeout)
        except Exception as exc:  # down or slow: a full handshake
            self.error = exc
            report_store_failure(self.store, "lookup", exc)
        self.hand_in(value)

    async def resolve_async(self) -> None:
        value = None
        try:
            value = await self.store.get_async(self.key)
        except Exception as exc:
            self.error = exc
            report_store_failure(self.store, "lookup", exc)
        self.hand_in(value)

    def __repr__(self) -> str:
        state = "resolved" if self.resolved else "pending"
        return f"<SessionLookup {self.key.hex()[:16]}... {state}>"
