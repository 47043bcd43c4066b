"""fasttls.store: server-side TLS sessions kept in a store shared by a fleet.

`Context.set_session_store(store)` makes a server context look sessions up in `store` and put
the sessions it makes there, so a returning client resumes on whichever server of the fleet it
reaches: TLS 1.2 by session ID, TLS 1.3 by stateful tickets (whose identity is the session ID).
The lookup never runs inside the handshake: the engine pauses it (`TLS.pause`, a
`SessionLookup`), the driver looks the session up (blocking with the socket's timeout in the
helpers and the drop-in socket, awaiting in fasttls.aio) and the handshake continues. A store
that is down or slow means a full handshake, never a failure seen by the client.

Stores: `MemoryStore` (one process; tests), `RedisStore`, `MemcachedStore` (optional
dependencies: the `store` extra), and `SealedStore`, which encrypts the blobs (they hold the
sessions' master secrets) under a fleet key. See docs/API.md, "Session store", for deployment.
"""
from fasttls.store._lookup import SessionLookup
from fasttls.store._memory import MemoryStore
from fasttls.store._protocol import SessionStore
from fasttls.store._sealed import SealedStore, SealingKey

__all__ = ["SessionStore", "SessionLookup", "MemoryStore", "RedisStore", "MemcachedStore",
           "SealedStore", "SealingKey"]


def __getattr__(name: str):
    # The backends import their client libraries: only when asked for.
    if name == "RedisStore":
        from fasttls.store._redis import RedisStore
        return RedisStore
    if name == "MemcachedStore":
        from fasttls.store._memcached import MemcachedStore
        return MemcachedStore
    raise AttributeError(f"module 'fasttls.store' has no attribute {name!r}")
