"""SessionSaver: new sessions go to the store after the handshake, without holding it up.

The engine serialises each session OpenSSL makes onto the connection (fasttls_hello.c); when the
handshake step that completes the handshake returns, the TLS object gives them here. A local
store (MemoryStore) takes them at once. Otherwise, inside a running event loop each write is a
task of its own (fasttls.aio: fire and forget); elsewhere (sans-IO, the helpers, the drop-in
socket) a writer thread takes them from a queue. Both are bounded (`max_pending`): past it, new
sessions are dropped (counted in `dropped`: those clients get a full handshake next time), so a
stalled store never grows memory. A failed write is counted in `failed` and reported."""
import asyncio
import collections
import threading
from typing import Any, Deque, List, Optional, Set, Tuple

from fasttls._binding import ffi, lib
from fasttls.store._lookup import report_store_failure

__all__ = ["SessionSaver", "take_new_sessions"]

Entry = Tuple[bytes, bytes, int]
# An idle writer thread ends after this long (seconds); the next session starts another.
_IDLE_EXIT = 5.0


def take_new_sessions(conn) -> List[Entry]:
    """(session ID, serialised session, TTL in seconds) for each session the engine kept on the
    connection since the last call; the engine's copies are wiped."""
    id_p = ffi.new("const unsigned char **")
    id_len = ffi.new("size_t *")
    der_p = ffi.new("const unsigned char **")
    der_len = ffi.new("size_t *")
    timeout = ffi.new("long *")
    entries: List[Entry] = []
    while lib.fasttls_conn_new_session(conn, len(entries), id_p, id_len, der_p, der_len, timeout):
        entries.append((ffi.unpack(ffi.cast("char *", id_p[0]), id_len[0]),
                        ffi.unpack(ffi.cast("char *", der_p[0]), der_len[0]),
                        max(1, int(timeout[0]))))
    if entries:
        lib.fasttls_conn_clear_new_sessions(conn)
    return entries


class SessionSaver:
    def __init__(self, store: Any, max_pending: int = 1024) -> None:
        self.store = store
        self.max_pending = max_pending
        self.dropped = 0
        self.failed = 0
        self._local = bool(getattr(store, "local", False))
        self._queue: Deque[Entry] = collections.deque()
        self._cond = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._writing = 0
        self._closed = False
        self._tasks: Set["asyncio.Task[None]"] = set()

    def save(self, tls: Any) -> None:
        entries = take_new_sessions(tls._conn)
        if not entries:
            return
        if self._local:
            for entry in entries:
                self._write(entry)
            return
        try:
            loop: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            for entry in entries:
                if len(self._tasks) >= self.max_pending:
                    self.dropped += 1
                    continue
                task = loop.create_task(self._write_async(entry))
                self._tasks.add(task)  # a strong reference until it is done
                task.add_done_callback(self._tasks.discard)
            return
        with self._cond:
            for entry in entries:
                if len(self._queue) >= self.max_pending:
                    self.dropped += 1
                else:
                    self._queue.append(entry)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="fasttls-session-writer",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _write(self, entry: Entry) -> None:
        try:
            self.store.set(*entry)
        except Exception as exc:  # the session is not kept: a full handshake next time
            self.failed += 1
            report_store_failure(self.store, "write", exc)

    async def _write_async(self, entry: Entry) -> None:
        try:
            await self.store.set_async(*entry)
        except Exception as exc:
            self.failed += 1
            report_store_failure(self.store, "write", exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closed:
                    self._cond.wait(_IDLE_EXIT)
                if not self._queue:
                    self._thread = None
                    self._cond.notify_all()
                    return
                entry = self._queue.popleft()
                self._writing += 1
            try:
                self._write(entry)
            finally:
                with self._cond:
                    self._writing -= 1
                    self._cond.notify_all()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until the writer thread has written everything queued; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._writing, timeout)

    async def flush_async(self) -> None:
        """Wait for the write tasks started so far."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        """Write what is queued, then let the writer thread end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
