"""Plain helpers of the fleet tests (tests/fleet; their fixtures are in tests/fleet/conftest.py):
how many returning clients, and rounds of their visits."""
from fasttls.bench.fleet import Tally, run_round

CLIENTS = 25  # not a multiple of the 3 servers
THREADS = 2


def rounds(fleet, clients, n):
    """`n` rounds in which every client visits the fleet once; their tally."""
    tally = Tally()
    for _ in range(n):
        tally.merge(run_round(clients, fleet.address, fleet.sharing, threads=THREADS))
    return tally
