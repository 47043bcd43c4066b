"""``python -m fasttls bench``: fasttls against the stdlib ``ssl`` module, same work, same process.

Only ``fasttls.__main__`` imports this package (when ``bench`` is asked for), and ``bench/``'s
pytest-benchmark suite; the runtime package never does. Modules:

- ``harness``: Env (certificate, both libraries' contexts, peer processes), Row, timing and the
  fasttls/stdlib ratio of each row, run_bench.
- ``workloads``: the core rows (in-memory transfers and handshakes, loopback sockets).
- ``dropin``: the drop-in rows (create_default_context, requests, http.client, asyncio).
- ``rows``: every row by name.
- ``peer``: the peer processes (how they start and announce themselves; the echo/sink server).
- ``memory``: memory per idle connection pair (``--memory``), one process per side.
- ``report``: the command itself: header, table, JSON.
"""
from fasttls.bench.harness import SIDES, SUITE, Env
from fasttls.bench.report import main
from fasttls.bench.rows import ROWS

__all__ = ["ROWS", "SIDES", "SUITE", "Env", "main"]
