"""MemcachedStore: sessions in memcached (pymemcache), shared by a fleet."""
import asyncio
from typing import Any, Optional, Tuple, Union

from fasttls.store._optional import require
from fasttls.store._per_timeout import ClientsByTimeout

__all__ = ["MemcachedStore"]

# memcached reads an expiry over 30 days as an absolute Unix time.
_RELATIVE_TTL_MAX = 30 * 24 * 3600


class MemcachedStore:
    """Sessions under `prefix` + the session ID in hex (memcached keys are ASCII), with the
    session's timeout as the item's expiry. `server` is (host, port) or "host:port"; the client
    is pymemcache's PooledClient (thread-safe), every call bounded by `timeout` seconds (a sync
    call given a shorter `timeout` by that, on a pool of its own made once per such bound; a
    ready `client`: its own timeouts); `client_options` go to it (e.g. tls_context for TLS to
    memcached). The asyncio methods run the same calls in the loop's default executor, so they
    never block the loop."""

    local = False

    def __init__(self, server: Union[str, Tuple[str, int]] = ("127.0.0.1", 11211), *,
                 prefix: bytes = b"fasttls:s:", timeout: float = 0.5, client: Any = None,
                 **client_options: Any) -> None:
        self._base = require("pymemcache.client.base", "MemcachedStore", "pymemcache")
        if isinstance(server, str):
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"MemcachedStore server {server!r}: expected 'host:port'")
            server = (host.strip("[]"), int(port))  # "[::1]:11211": pymemcache wants "::1"
        self.server = server
        self.prefix = bytes(prefix)
        self.timeout = timeout
        self._options = client_options
        self._given = client is not None
        if client is None:
            client = self._client_bounded(timeout)
        self.client = client
        self._by_timeout = ClientsByTimeout(timeout, lambda: self.client, self._client_bounded)

    def _client_bounded(self, bound: Optional[float]) -> Any:
        return self._base.PooledClient(self.server, connect_timeout=bound, timeout=bound,
                                       **self._options)

    def _client_within(self, timeout: Optional[float]) -> Any:
        """The client that bounds one sync call by `timeout` too (a ready client: itself)."""
        return self.client if self._given else self._by_timeout.client_for(timeout)

    def _key(self, key: bytes) -> bytes:
        return self.prefix + bytes(key).hex().encode("ascii")

    def get(self, key: bytes, timeout: Optional[float] = None) -> Optional[bytes]:
        value = self._client_within(timeout).get(self._key(key))
        return None if value is None else bytes(value)

    def set(self, key: bytes, value: bytes, ttl: int, timeout: Optional[float] = None) -> None:
        ttl = min(max(1, int(ttl)), _RELATIVE_TTL_MAX)
        client = self._client_within(timeout)
        if not client.set(self._key(key), bytes(value), expire=ttl, noreply=False):
            raise OSError(f"memcached did not store the session (value of {len(value)} bytes)")

    def delete(self, key: bytes, timeout: Optional[float] = None) -> None:
        self._client_within(timeout).delete(self._key(key), noreply=False)

    async def get_async(self, key: bytes) -> Optional[bytes]:
        return await asyncio.get_running_loop().run_in_executor(None, self.get, key)

    async def set_async(self, key: bytes, value: bytes, ttl: int) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.set, key, value, ttl)

    async def delete_async(self, key: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.delete, key)

    def close(self) -> None:
        self.client.close()
        self._by_timeout.close()

    def __repr__(self) -> str:
        return f"<MemcachedStore {self.server[0]}:{self.server[1]} prefix={self.prefix!r}>"
