"""Issue 9 section 5, the session-store part: three fasttls server processes behind haproxy
(TCP mode, round robin) on 127.0.0.1 keeping sessions in one Redis (fasttls.store), in the
clear or sealed under fleet keys, and returning clients (the stdlib `ssl`, and fasttls).

Every claim is a count: at least 95% of returning connections resume (most of them on another
server than the one that made their session); a two-phase rotation of the sealing keys loses
nothing but what the mode's model predicts (TLS 1.2 sessions still sealed under a key the
second rotation dropped). Every process (servers, haproxy, redis-server) is killed in teardown;
every wait and loop is bounded."""
import pytest
from support.fleet import CLIENTS, rounds
from support.requires import require_program
from support.stores import require_module

from fasttls.bench.fleet import Tally


@pytest.fixture
def redis_server():
    require_module("redis")
    return require_program("redis-server")


@pytest.fixture
def start_redis_fleet(start_fleet, redis_server):
    """start_redis_fleet(version, **options): a fleet of mode "redis" on the test's
    redis-server."""
    def start(version, **options):
        return start_fleet("redis", version, redis_server=redis_server, **options)

    return start


def stored_sessions(fleet):
    import redis
    client = redis.Redis(port=fleet.sharing.port)
    try:
        return [client.get(key) for key in client.keys(b"fasttls:s:*")]
    finally:
        client.close()


@pytest.mark.parametrize("version,seal,library", [
    pytest.param("1.2", False, "stdlib", id="TLSv1.2-clear-stdlib"),
    pytest.param("1.3", True, "stdlib", id="TLSv1.3-sealed-stdlib"),
    pytest.param("1.3", False, "fasttls", id="TLSv1.3-clear-fasttls"),
])
def test_returning_clients_resume_on_any_server(make_clients, start_redis_fleet, version, seal,
                                                library):
    clients = make_clients(version, library)
    with start_redis_fleet(version, seal=seal) as fleet:
        first = rounds(fleet, clients, 1)
        returning = rounds(fleet, clients, 4)
        resumed_by_servers = sum(s["resumed"] for s in fleet.stats().values())
        values = stored_sessions(fleet)
    print(returning.summary())
    assert first.returning == 0 and first.connections == CLIENTS
    assert returning.returning == 4 * CLIENTS
    assert returning.resumption_rate >= 0.95, returning.summary()
    assert returning.unexpected == 0, returning.mismatches
    assert resumed_by_servers == returning.resumed
    assert set(returning.by_server) == {"s0", "s1", "s2"}
    assert returning.cross_server >= returning.returning // 3, returning.summary()
    assert set(returning.versions) == {f"TLSv{version}"}
    assert len(values) >= CLIENTS
    if seal:
        assert all(v[0] == 1 for v in values)  # sealed blobs (format 1), nothing in the clear


@pytest.mark.parametrize("version", [pytest.param("1.2", id="TLSv1.2"),
                                     pytest.param("1.3", id="TLSv1.3")])
def test_sealing_key_rotation_loses_only_what_the_model_predicts(make_clients,
                                                                 start_redis_fleet, version):
    """Two two-phase rotations, each after every client came back: TLS 1.3 loses nothing
    (each resumption stores sessions under the current key); TLS 1.2 sessions are stored once,
    so those still under the key the second rotation dropped get a full handshake, exactly
    the ones the model names."""
    clients = make_clients(version)
    with start_redis_fleet(version, seal=True) as fleet:
        rounds(fleet, clients, 1)
        total = Tally()
        for _ in range(2):
            total.merge(rounds(fleet, clients, 1))
            fleet.rotate_ticket_keys()  # the harness's two-phase rotation: the sealing keys
        total.merge(rounds(fleet, clients, 2))
    assert total.unexpected == 0, total.mismatches
    assert total.returning == 4 * CLIENTS
    if version == "1.3":
        assert total.resumed == total.returning, total.summary()
    else:
        assert total.resumed + total.expected_misses == total.returning
        assert total.expected_misses == CLIENTS  # every session was sealed under the first key
