"""Issue 9 section 5, the ticket part: three fasttls server processes behind haproxy (TCP mode,
round robin) on 127.0.0.1, sharing session-ticket keys from nginx-format key files, and
returning clients (the stdlib `ssl`, and fasttls) that keep their session.

Every claim is a count: at least 95% of returning connections resume (most of them on another
server than the one that issued their ticket); a key rotation mid-run, with traffic flowing,
loses nothing; the only connections that do not resume are those whose ticket was under a key
the rotation dropped, and the sharing mode's model predicts exactly which ones they are. The
control, the same fleet without shared keys, shows what the keys change.

Every process (servers, haproxy) is killed in teardown; every wait and loop is bounded."""
import threading

import pytest
from support.fleet import CLIENTS, THREADS, rounds

from fasttls.bench.fleet import Tally, run_round

VERSIONS = [pytest.param("1.2", id="TLSv1.2"), pytest.param("1.3", id="TLSv1.3")]
ROUND_LIMIT = 200  # bounds the background traffic of the rotation test


def server_side_resumed(fleet):
    return sum(stats["resumed"] for stats in fleet.stats().values())


@pytest.mark.parametrize("library", ["stdlib", "fasttls"])
@pytest.mark.parametrize("version", VERSIONS)
def test_returning_clients_resume_on_any_server(make_clients, start_fleet, version, library):
    clients = make_clients(version, library)
    with start_fleet("tickets", version) as fleet:
        first = rounds(fleet, clients, 1)
        returning = rounds(fleet, clients, 4)
        assert server_side_resumed(fleet) == returning.resumed
        stats = fleet.stats()
    assert first.returning == 0 and first.connections == CLIENTS
    assert returning.returning == 4 * CLIENTS
    assert returning.resumption_rate >= 0.95, returning.summary()
    assert returning.unexpected == 0, returning.mismatches
    # Round robin spread the connections, so many resumptions (two thirds, in expectation)
    # were of another server's ticket.
    assert set(returning.by_server) == {"s0", "s1", "s2"}
    assert returning.cross_server >= returning.returning // 3, returning.summary()
    assert set(returning.versions) == {f"TLSv{version}"}
    for name, server in stats.items():
        assert server["tickets"]["keys"] == 3 and server["tickets"]["unknown"] == 0, name


def test_without_shared_keys_only_the_issuing_server_resumes(make_clients, start_fleet):
    """The control: each server's own random ticket key. Resumption then needs the client to
    come back to the server it was on before, which round robin rarely does."""
    clients = make_clients(None)
    with start_fleet("none") as fleet:
        rounds(fleet, clients, 1)
        returning = rounds(fleet, clients, 4)
    assert returning.cross_server == 0
    assert returning.unexpected == 0, returning.mismatches
    assert returning.resumption_rate < 0.95, returning.summary()
    assert returning.resumed + returning.expected_misses == returning.returning


@pytest.mark.parametrize("version", VERSIONS)
def test_rotation_with_traffic_flowing_loses_no_resumption(make_clients, start_fleet, version):
    """Two two-phase rotations while clients keep connecting (background thread), each after
    every client has been back at least once since the one before: every returning connection
    resumes, across both rotations."""
    clients = make_clients(version)
    with start_fleet("tickets", version) as fleet:
        rounds(fleet, clients, 1)
        total = Tally()
        done_rounds = []
        stop = threading.Event()
        failures = []
        round_done = threading.Condition()

        def traffic():
            try:
                for _ in range(ROUND_LIMIT):
                    if stop.is_set():
                        return
                    tally = run_round(clients, fleet.address, fleet.sharing, threads=THREADS)
                    with round_done:
                        total.merge(tally)
                        done_rounds.append(len(done_rounds))
                        round_done.notify_all()
            except BaseException as exc:
                failures.append(exc)
                with round_done:
                    round_done.notify_all()

        def wait_rounds(n):
            with round_done:
                target = len(done_rounds) + n
                assert round_done.wait_for(lambda: len(done_rounds) >= target or failures,
                                           timeout=60), "the traffic stalled"

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        try:
            wait_rounds(1)
            for _ in range(2):
                fleet.rotate_ticket_keys()
                wait_rounds(2)  # every client back since the rotation (one round may straddle)
        finally:
            stop.set()
            thread.join(60)
        assert not thread.is_alive()
        if failures:
            raise failures[0]
        stats = fleet.stats()
    assert total.unexpected == 0, total.mismatches
    assert total.expected_misses == 0, total.summary()
    assert total.resumed == total.returning >= 3 * CLIENTS
    # The rotations happened, and tickets under the previous keys were renewed.
    assert fleet.sharing.generation == 4
    assert all(server["generation"] == 4 for server in stats.values())
    assert sum(server["tickets"]["previous"] for server in stats.values()) > 0


@pytest.mark.parametrize("version", VERSIONS)
def test_rotation_drops_only_tickets_under_the_rotated_out_key(make_clients, start_fleet,
                                                                version):
    """Clients away for two rotations hold a ticket under a key the second one dropped: they,
    and only they, get a full handshake (no error). Replacing every key at once (not a
    rotation) costs every client one full handshake, then all resume again."""
    clients = make_clients(version)
    regulars, away = clients[: CLIENTS // 2], clients[CLIENTS // 2:]
    with start_fleet("tickets", version) as fleet:
        rounds(fleet, clients, 2)
        fleet.rotate_ticket_keys()
        rounds(fleet, regulars, 1)
        fleet.rotate_ticket_keys()
        back = rounds(fleet, clients, 1)
        again = rounds(fleet, clients, 1)
        fleet.replace_ticket_keys()
        replaced = rounds(fleet, clients, 1)
        after = rounds(fleet, clients, 1)
    for tally in (back, again, replaced, after):
        assert tally.unexpected == 0, tally.mismatches
    assert back.expected_misses == len(away) and back.resumed == len(regulars)
    assert again.resumed == CLIENTS
    assert replaced.expected_misses == CLIENTS and replaced.resumed == 0
    assert after.resumed == CLIENTS
