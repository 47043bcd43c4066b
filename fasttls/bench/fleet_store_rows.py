"""Benchmark row of the fleet with a shared session store (issue 9 section 5): returning clients
through haproxy (TCP, round robin) to 3 server processes on 127.0.0.1, handshakes (connections)
per second.

fasttls side: fasttls.aio servers keeping sessions in one Redis (started by the row), sealed
under a fleet key (`SealedStore(RedisStore(...))`, the recommended deployment). stdlib side:
the same fleet with the stdlib's `ssl` servers, which have no shared cache, so a returning
client resumes only when haproxy sends it back to the server it was on: the baseline a Python
deployment has today. Each side's resumption rate goes to the report's notes.

Both sides use the same clients: the stdlib's `ssl`, 25 of them keeping their sessions, 4
threads, TLS 1.3, every timed connection a returning one."""
import os
import tempfile

from fasttls.bench.harness import BenchError, Row

CLIENTS = 25
THREADS = 4
SERVERS = {"fasttls": "fasttls.aio servers, sealed sessions in one Redis",
           "stdlib": "stdlib ssl servers, no shared session cache (the stdlib has none)"}


def _setup(env, side):
    from fasttls.bench.fleet import Fleet, ReturningClient, Tally, run_round, \
        stdlib_client_context

    workdir = tempfile.mkdtemp(prefix=f"fleet-store-{side}-", dir=env.tmpdir)
    if side == "fasttls":
        fleet = Fleet("redis", workdir, env.certfile, env.keyfile, impl="fasttls",
                      version="1.3", ca_pem=env.cert_pem, seal=True)
    else:
        fleet = Fleet("none", workdir, env.certfile, env.keyfile, impl="stdlib", version="1.3",
                      ca_pem=env.cert_pem)
    fleet.start()
    env.on_close(fleet.stop)
    ctx = stdlib_client_context(env.cert_pem, "1.3")
    clients = [ReturningClient(i, ctx) for i in range(CLIENTS)]
    run_round(clients, fleet.address, fleet.sharing, threads=THREADS)  # first visits, untimed
    total = Tally()

    def run(n):
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
        env.notes[f"fleet_redis {side}"] = (
            f"{SERVERS[side]}: {total.resumption_rate:.1%} of {total.returning} returning "
            f"connections resumed, {total.cross_server} on another server than their session's")
        return tally.connections

    probe = ReturningClient(-1, ctx)
    visit = probe.visit(fleet.address, fleet.sharing)
    if visit.cipher is None:
        raise BenchError("fleet: no cipher negotiated")
    env.check_negotiated(side, "server", visit.cipher[0], visit.cipher[1])
    return run


ROWS = [
    Row("fleet_redis", "fleet of 3 behind haproxy, sealed Redis store", "handshakes/s", 1, 1,
        1.0, _setup, seconds=0.5, repeat=5, requires=("fasttls.aio", "redis"),
        tools=("haproxy", "redis-server")),
]

if os.name == "nt":  # pragma: no cover  (haproxy, signals: a POSIX demonstration)
    ROWS = []
