"""ClientsByTimeout, the client cache behind RedisStore's and MemcachedStore's per-call
timeouts: which bound a call gets, and that the clients it keeps stay few."""
from fasttls.store._per_timeout import MAX_CLIENTS, ClientsByTimeout


class Made:
    def __init__(self, bound):
        self.bound = bound


def clients(own):
    default = Made(own)
    return default, ClientsByTimeout(own, lambda: default, Made)


def test_the_stores_own_client_unless_the_call_is_bounded_tighter():
    default, by_timeout = clients(0.5)
    assert by_timeout.client_for(None) is default
    assert by_timeout.client_for(0.5) is default
    assert by_timeout.client_for(30.0) is default  # the store's own bound caps the caller's
    tight = by_timeout.client_for(0.2)
    assert tight is not default and tight.bound == 0.2
    assert by_timeout.client_for(0.2) is tight  # made once per bound


def test_a_store_without_a_bound_takes_the_callers():
    default, by_timeout = clients(None)
    assert by_timeout.client_for(None) is default
    assert by_timeout.client_for(5.0).bound == 5.0


def test_bounds_round_down_to_the_millisecond_and_never_to_zero():
    _, by_timeout = clients(0.5)
    assert by_timeout.bound(0.2509) == 0.25
    assert by_timeout.bound(0.0001) == 0.001  # 0 would be a non-blocking socket
    assert by_timeout.client_for(0.2509) is by_timeout.client_for(0.2501)


def test_the_clients_kept_are_capped_and_never_looser_than_asked():
    _, by_timeout = clients(10.0)
    made = [by_timeout.client_for(1.0 + i) for i in range(MAX_CLIENTS)]
    assert len({id(c) for c in made}) == MAX_CLIENTS
    # Full: a bound looser than the tightest kept gets that one ...
    assert by_timeout.client_for(9.5) is made[0]
    # ... a tighter one replaces the loosest kept.
    tighter = by_timeout.client_for(0.5)
    assert tighter.bound == 0.5
    assert by_timeout.client_for(0.5) is tighter
    assert len(by_timeout._clients) == MAX_CLIENTS
    assert by_timeout.client_for(8.0).bound == 0.5  # 8.0's client was the one dropped
