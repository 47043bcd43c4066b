"""Benchmark row of the fleet (issue 9 section 5): returning clients through haproxy (TCP, round
robin) to 3 server processes on 127.0.0.1, handshakes (connections) per second.

fasttls side: fasttls.aio servers sharing session-ticket keys from key files. stdlib side: the
same fleet with the stdlib's `ssl` servers (asyncio's sslproto), which cannot share ticket keys,
so a returning client resumes only when haproxy sends it back to the server it was on. That is
the baseline a Python deployment has today, and it keeps the table's "stdlib" column the
stdlib's; the price is that the ratio mixes the engine's speed with the effect of the shared
keys, so each side's resumption rate is written to the report's notes, and the fasttls fleet
without shared keys (mode "none") is one command away: see docs/API.md, "Fleet".

Both sides use the same clients: the stdlib's `ssl`, 25 of them keeping their sessions, 4
threads, every timed connection a returning one."""
import os
import tempfile
from fasttls.bench.harness import BenchError, Row

CLIENTS = 25
THREADS = 4
SERVERS = {"fasttls": "fasttls.aio servers, shared ticket keys",
           "stdlib": "stdlib ssl servers, no shared keys (the stdlib has none)"}


def _setup(env, side):
    from fasttls.bench.fleet import Fleet, ReturningClient, Tally, run_round, \
        stdlib_client_context

    workdir = tempfile.mkdtemp(prefix=f"fleet-{side}-", dir=env.tmpdir)
    mode, impl = ("tickets", "fasttls") if side == "fasttls" else ("none", "stdlib")
    fleet = Fleet(mode, workdir, env.certfile, env.keyfile, impl=impl, version="1.3",
                  ca_pem=env.cert_pem).start()
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
        env.notes[f"fleet_tickets {side}"] = (
            f"{SERVERS[side]}: {total.resumption_rate:.1%} of {total.returning} returning "
            f"connections resumed, {total.cross_server} on another server than their ticket's")
        return tally.connections

    # One checked connection: the suite the whole benchmark runs on.
    probe = ReturningClient(-1, ctx)
    visit = probe.visit(fleet.address, fleet.sharing)
    if visit.cipher is None:
        raise BenchError("fleet: no cipher negotiated")
    env.check_negotiated(side, "server", visit.cipher[0], visit.cipher[1])
    return run


ROWS = [
    Row("fleet_tickets", "fleet of 3 behind haproxy, returning clients", "handshakes/s", 1, 1,
        1.0, _setup, seconds=0.5, repeat=5, requires="fasttls.aio", tools=("haproxy",)),
]

if os.name == "nt":  # pragma: no cover  (haproxy, signals: a POSIX demonstration)
    ROWS = []
