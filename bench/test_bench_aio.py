"""fasttls.aio against asyncio's own TLS (sslproto), over asyncio's loop and uvloop's, and the
anyio/trio path (anyio's TLSStream driving an SSLObject over MemoryBIOs): the asyncio echo rows
of ``python -m fasttls bench``. A row whose requirement (fasttls.aio, uvloop, anyio, trio) is
missing skips (fails under CI=true)."""
import pytest

from fasttls.bench import SIDES


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", ["asyncio_aio_64", "asyncio_aio_1m", "uvloop_aio_64",
                                  "uvloop_aio_1m", "anyio_64", "anyio_trio_64"])
def test_aio(run_row, name, side):
    run_row(name, side)
