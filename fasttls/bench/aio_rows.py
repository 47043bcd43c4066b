"""Benchmark rows for ``fasttls.aio``: the asyncio TLS echo of the drop-in rows, with fasttls's own
transport instead of asyncio's sslproto, over asyncio's loop and over uvloop's.

fasttls side: a fresh loop patched with ``fasttls.aio.patch_loop`` and the drop-in contexts
(``fasttls.SSLContext``) on both ends; stdlib side: the same kind of loop, unpatched, with
``ssl.SSLContext`` (asyncio's sslproto, or uvloop's own SSL code). Each connection's transport
class is checked, so a fasttls side that silently fell back to sslproto fails the row."""
import asyncio

from fasttls.bench.dropin import AsyncioEcho
from fasttls.bench.harness import BenchError, Row
from fasttls.bench.peer import BLOCK


def _new_loop(flavour):
    if flavour == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def check_transport(side, transport):
    """fasttls's side must run on fasttls.aio's transport, the stdlib's side on anything else."""
    module = type(transport).__module__
    if (side == "fasttls") != module.startswith("fasttls.aio"):
        raise BenchError(f"{side} side: the connection runs on {module}."
                         f"{type(transport).__qualname__}")


def _setup(flavour, size):
    def setup(env, side):
        loop = _new_loop(flavour)
        if side == "fasttls":
            import fasttls.aio

            fasttls.aio.patch_loop(loop)
        echo = AsyncioEcho(env, side, loop,
                           transport_check=lambda transport: check_transport(side, transport))
        return echo.runner(size)

    return setup


ROWS = [
    Row("asyncio_aio_64", "fasttls.aio echo, 64 B", "round trips/s", 1, 64, 1.5,
        _setup("asyncio", 64), seconds=0.2, repeat=9, requires="fasttls.aio"),
    Row("asyncio_aio_1m", "fasttls.aio echo, 1 MiB", "MB/s", BLOCK / 1e6, BLOCK, 1.25,
        _setup("asyncio", BLOCK), seconds=0.3, repeat=5, requires="fasttls.aio"),
    Row("uvloop_aio_64", "fasttls.aio on uvloop, 64 B", "round trips/s", 1, 64, 1.1,
        _setup("uvloop", 64), seconds=0.2, repeat=9, requires=("fasttls.aio", "uvloop")),
    Row("uvloop_aio_1m", "fasttls.aio on uvloop, 1 MiB", "MB/s", BLOCK / 1e6, BLOCK, 1.15,
        _setup("uvloop", BLOCK), seconds=0.3, repeat=5, requires=("fasttls.aio", "uvloop")),
]
