"""``python -m fasttls bench``: fasttls against the stdlib ``ssl`` module, same work, same process.

Only ``fasttls.__main__`` imports this package (when ``bench`` is asked for), and ``bench/``'s
pytest-benchmark suite; the runtime package never does. Modules:

- ``harness``: Env (certificate, both libraries' contexts, peer processes), Row, timing and the
  fasttls/stdlib ratio of each row, run_bench.
- ``workloads``: the core rows (in-memory transfers and handshakes, loopback sockets).
- ``dropin``: the drop-in rows (create_default_context, requests, http.client, asyncio).
- ``aio_rows``: the asyncio echo through fasttls.aio, over asyncio's loop and uvloop's.
- ``anyio_rows``: the anyio/trio path (anyio's TLSStream: SSLObject over MemoryBIO).
- ``asgi``: uvicorn over TLS in a child process under wrk (keep-alive, Connection: close).
- ``rows``: every row by name.
- ``peer``: the peer processes (how they start and announce themselves; the echo/sink server).
- ``memory``: memory per idle connection pair (``--memory``), one process per side.
- ``report``: the command itself: header, table, JSON.
- ``progress``: which row and step is running, on standard error.
- ``plot``: ``--plot FILE.png``, the ratios as a bar chart (matplotlib, optional).
"""
from fasttls.bench.harness import SIDES, SUITE, Env
from fasttls.bench.report import main
from fasttls.bench.rows import ROWS

__all__ = ["ROWS", "SIDES", "SUITE", "Env", "main"]
