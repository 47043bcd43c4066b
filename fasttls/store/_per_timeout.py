"""Clients of a store backend by timeout, so that one call can be bounded tighter than the rest.

Neither redis-py's nor pymemcache's synchronous clients take a timeout per command: a
connection's socket timeout is fixed when its client is made. A caller's shorter bound (a
handshake's socket timeout, `SessionStore.get(key, timeout)`) is therefore honoured with a
client of its own, made once per distinct bound and kept: the bounds callers pass are few in
practice (socket timeouts are settings), and `MAX_CLIENTS` caps them all the same."""
import math
import threading
from typing import Any, Callable, Dict, Optional

from fasttls.store._protocol import effective_timeout

__all__ = ["ClientsByTimeout"]

MAX_CLIENTS = 8  # distinct shorter bounds kept; past it, the shortest kept one serves
_GRANULARITY = 1000  # bounds are rounded down to the millisecond (never looser than asked)


class ClientsByTimeout:
    """`client_for(timeout)`: the store's own client (`default()`) when `timeout` is None or not
    shorter than `own`; else a client made by `make(bound)` for the shorter bound, cached."""

    def __init__(self, own: Optional[float], default: Callable[[], Any],
                 make: Callable[[float], Any]) -> None:
        self.own = own
        self._default, self._make = default, make
        self._clients: Dict[float, Any] = {}
        self._lock = threading.Lock()

    def bound(self, timeout: Optional[float]) -> Optional[float]:
        """The bound one call gets: the shorter of the store's and the caller's, to the
        millisecond below (at least one: 0 would make the socket non-blocking)."""
        bound = effective_timeout(self.own, timeout)
        if bound is None or bound == self.own:
            return bound
        return max(1, math.floor(bound * _GRANULARITY)) / _GRANULARITY

    def client_for(self, timeout: Optional[float]) -> Any:
        bound = self.bound(timeout)
        if bound is None or bound == self.own:
            return self._default()
        with self._lock:
            client = self._clients.get(bound)
            if client is None:
                if len(self._clients) >= MAX_CLIENTS:
                    shortest = min(self._clients)
                    if shortest <= bound:  # tighter than asked, never looser
                        return self._clients[shortest]
                    # Dropped, not closed: another thread may be in a call on it (its
                    # connections close when it is collected).
                    del self._clients[max(self._clients)]
                client = self._clients[bound] = self._make(bound)
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            self._close(client)

    @staticmethod
    def _close(client: Any) -> None:
        try:
            client.close()
        except Exception:  # closing a client whose server is gone: nothing left to do
            pass
