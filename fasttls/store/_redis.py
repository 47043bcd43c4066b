"""RedisStore: sessions in Redis (redis-py, sync and redis.asyncio), shared by a fleet."""
import asyncio
import weakref
from typing import Any, Optional

from fasttls.store._optional import require
from fasttls.store._per_timeout import ClientsByTimeout
from fasttls.store._protocol import effective_timeout

__all__ = ["RedisStore"]


class RedisStore:
    """Sessions under `prefix` + the session ID in hex, with the session's timeout as the key's
    TTL (SET ... EX). `url` is redis-py's (redis://[user:password@]host:port/db, rediss:// for
    TLS to Redis, unix://...); `client_options` go to redis.Redis.from_url and
    redis.asyncio.Redis.from_url (e.g. username/password for ACLs, ssl_ca_certs). `timeout`
    (seconds) bounds every call: connect, read, write; a sync call given a shorter `timeout` (a
    handshake's socket timeout) is bounded by that, on a client of its own made once per such
    bound. Or pass ready `client` / `async_client` (then their own timeouts apply). The asyncio
    client is made per event loop (redis.asyncio connections belong to the loop that opened
    them)."""

    local = False

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: bytes = b"fasttls:s:",
                 timeout: float = 0.5, client: Any = None, async_client: Any = None,
                 **client_options: Any) -> None:
        self._redis = require("redis", "RedisStore", "redis")
        self.url = url
        self.prefix = bytes(prefix)
        self.timeout = timeout
        self._options = dict(socket_timeout=timeout, socket_connect_timeout=timeout,
                             **client_options)
        self._client = client
        self._given = client is not None
        self._by_timeout = ClientsByTimeout(timeout, lambda: self.client, self._client_bounded)
        self._async_given = async_client
        self._async_clients: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()

    def _key(self, key: bytes) -> bytes:
        return self.prefix + bytes(key).hex().encode("ascii")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._redis.Redis.from_url(self.url, **self._options)
        return self._client

    def _client_bounded(self, bound: float) -> Any:
        options = dict(self._options, socket_timeout=bound, socket_connect_timeout=bound)
        return self._redis.Redis.from_url(self.url, **options)

    def _client_within(self, timeout: Optional[float]) -> Any:
        """The client that bounds one sync call by `timeout` too (a ready client: itself)."""
        return self.client if self._given else self._by_timeout.client_for(timeout)

    def _async_client(self) -> Any:
        if self._async_given is not None:
            return self._async_given
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = require("redis.asyncio", "RedisStore", "redis").Redis.from_url(
                self.url, **self._options)
            self._async_clients[loop] = client
        return client

    def get(self, key: bytes, timeout: Optional[float] = None) -> Optional[bytes]:
        return self._client_within(timeout).get(self._key(key))

    def set(self, key: bytes, value: bytes, ttl: int, timeout: Optional[float] = None) -> None:
        self._client_within(timeout).set(self._key(key), bytes(value), ex=max(1, int(ttl)))

    def delete(self, key: bytes, timeout: Optional[float] = None) -> None:
        self._client_within(timeout).delete(self._key(key))

    async def get_async(self, key: bytes) -> Optional[bytes]:
        return await asyncio.wait_for(self._async_client().get(self._key(key)),
                                      effective_timeout(self.timeout, None))

    async def set_async(self, key: bytes, value: bytes, ttl: int) -> None:
        await asyncio.wait_for(
            self._async_client().set(self._key(key), bytes(value), ex=max(1, int(ttl))),
            effective_timeout(self.timeout, None))

    async def delete_async(self, key: bytes) -> None:
        await asyncio.wait_for(self._async_client().delete(self._key(key)),
                               effective_timeout(self.timeout, None))

    def close(self) -> None:
        """Close the synchronous client's connections, as MemcachedStore.close() does (the
        asyncio ones close with their loop or with aclose())."""
        if self._client is not None:
            self._client.close()
        self._by_timeout.close()

    async def aclose(self) -> None:
        """Close this loop's asyncio client."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def __repr__(self) -> str:
        return f"<RedisStore {self.url.split('@')[-1]} prefix={self.prefix!r}>"
