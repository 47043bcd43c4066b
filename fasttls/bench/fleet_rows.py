"""Benchmark rows of the fleet (issue 9 section 5): returning clients through haproxy (TCP, round
robin) to 3 server processes on 127.0.0.1, handshakes (connections) per second. One row per way
the fasttls servers share resumption state:

- `fleet_tickets`: fasttls.aio servers sharing session-ticket keys from key files;
- `fleet_redis`: fasttls.aio servers keeping sessions in one Redis (started by the row), sealed
  under a fleet key (`SealedStore(RedisStore(...))`, the recommended deployment).

The stdlib side of both is the same fleet with the stdlib's `ssl` servers (asyncio's sslproto),
which can share neither ticket keys nor a session cache, so a returning client resumes only when
haproxy sends it back to the server it was on. That is the baseline a Python deployment has
today, and it keeps the table's "stdlib" column the stdlib's; the price is that the ratio mixes
the engine's speed with the effect of the sharing, so each side's resumption rate is written to
the report's notes, and the fasttls fleet without sharing (mode "none") is one command away: see
docs/API.md, "Fleet".

Both sides use the same clients: the stdlib's `ssl`, 25 of them keeping their sessions, 4
threads, TLS 1.3, every timed connection a returning one."""
import os
import tempfile
from functools import partial
from typing import Any, Callable, Dict, NamedTuple

from fasttls.bench.harness import BenchError, Row

CLIENTS = 25
THREADS = 4
STDLIB_FLEET = dict(mode="none", impl="stdlib")


class Sharing(NamedTuple):
    """What one row's fasttls fleet shares, and how its notes name each side."""

    row: str
    fleet: Dict[str, Any]          # Fleet() options of the fasttls side
    servers: Dict[str, str]        # per side, what serves (the notes)
    held: str                      # what a returning client holds: "ticket", "session"


TICKETS = Sharing("fleet_tickets", dict(mode="tickets", impl="fasttls"),
                  {"fasttls": "fasttls.aio servers, shared ticket keys",
                   "stdlib": "stdlib ssl servers, no shared keys (the stdlib has none)"},
                  "ticket")
REDIS = Sharing("fleet_redis", dict(mode="redis", impl="fasttls", seal=True),
                {"fasttls": "fasttls.aio servers, sealed sessions in one Redis",
                 "stdlib": "stdlib ssl servers, no shared session cache (the stdlib has none)"},
                "session")


def _setup(env: Any, side: str, sharing: Sharing) -> Callable[[int], int]:
    from fasttls.bench.fleet import Fleet, ReturningClient, Tally, run_round, \
        stdlib_client_context

    workdir = tempfile.mkdtemp(prefix=f"{sharing.row.replace('_', '-')}-{side}-",
                               dir=env.tmpdir)
    options = dict(sharing.fleet if side == "fasttls" else STDLIB_FLEET)
    fleet = Fleet(options.pop("mode"), workdir, env.certfile, env.keyfile, version="1.3",
                  ca_pem=env.cert_pem, **options).start()
    env.on_close(fleet.stop)
    ctx = stdlib_client_context(env.cert_pem, "1.3")
    clients = [ReturningClient(i, ctx) for i in range(CLIENTS)]
    run_round(clients, fleet.address, fleet.sharing, threads=THREADS)  # first visits, untimed
    total = Tally()

    def run(n: int) -> int:
        tally = Tally()
        remaining = n
        while remaining > 0:
            batch = clients[:min(remaining, CLIENTS)]
            tally.merge(run_round(batch, fleet.address, fleet.sharing, threads=THREADS))
            remaining -= len(batch)
        if tally.unexpected:
            raise BenchError(f"fleet {side}: {tally.unexpected} connections resumed or not "
                             f"against the model: {tally.mismatches[:3]}")
        total.merge(tally)
        env.notes[f"{sharing.row} {side}"] = (
            f"{sharing.servers[side]}: {total.resumption_rate:.1%} of {total.returning} "
            f"returning connections resumed, {total.cross_server} on another server than "
            f"their {sharing.held}'s")
        return tally.connections

    # One checked connection: the suite the whole benchmark runs on.
    probe = ReturningClient(-1, ctx)
    visit = probe.visit(fleet.address, fleet.sharing)
    if visit.cipher is None:
        raise BenchError("fleet: no cipher negotiated")
    env.check_negotiated(side, "server", visit.cipher[0], visit.cipher[1])
    return run


ROWS = [
    Row(TICKETS.row, "fleet of 3 behind haproxy, returning clients", "handshakes/s", 1, 1,
        1.0, partial(_setup, sharing=TICKETS), seconds=0.5, repeat=5, requires="fasttls.aio",
        tools=("haproxy",)),
    Row(REDIS.row, "fleet of 3 behind haproxy, sealed Redis store", "handshakes/s", 1, 1,
        1.0, partial(_setup, sharing=REDIS), seconds=0.5, repeat=5,
        requires=("fasttls.aio", "redis"), tools=("haproxy", "redis-server")),
]

if os.name == "nt":  # pragma: no cover  (haproxy, signals: a POSIX demonstration)
    ROWS = []
