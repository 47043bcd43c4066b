"""The session store on fasttls.aio: the lookup is awaited in a task, never blocking the loop
(20 handshakes whose lookups are all in flight at once), new sessions are written by tasks,
and a store that is down means full handshakes. Clients are stdlib sockets in threads."""
import asyncio
import concurrent.futures
import functools
import socket
import ssl
import threading
import time

import pytest
from support.loops import LOOPS, patched_loop
from support.pairs import VERSIONS
from support.peers import stdlib_client_context
from support.stores import DownStore, dropin_store_ctx
from support.stores import fetch as fetch_within

import fasttls
import fasttls.aio
from fasttls.store import MemoryStore

CLIENTS = 20
BOUND = 30.0  # guards against hangs only
fetch = functools.partial(fetch_within, timeout=BOUND)  # positional arguments: run_in_executor

@pytest.fixture(params=LOOPS)
def loop(request):
    with patched_loop(request.param) as patched:
        yield patched


class GatheringStore(MemoryStore):
    """Every lookup waits (on the loop) until `expected` lookups are in flight at once, then
    `delay` more seconds: if the loop were blocked, or lookups ran one after another, the
    gathering could never complete (it gives up after BOUND and the test fails)."""

    local = False

    def __init__(self, expected, delay=0.05):
        super().__init__()
        self.expected, self.delay = expected, delay
        self.in_flight = self.most_in_flight = 0
        self._all_in = None

    async def get_async(self, key):
        if self._all_in is None:
            self._all_in = asyncio.Event()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight >= self.expected:
            self._all_in.set()
        try:
            await asyncio.wait_for(self._all_in.wait(), BOUND)
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return self.get(key)


async def serve(ctx, reused):
    async def handle(reader, writer):
        reused.append(writer.get_extra_info("ssl_object").session_reused)
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


@pytest.mark.parametrize("version", VERSIONS)
def test_concurrent_lookups_never_block_the_loop(loop, ident, version):
    store = GatheringStore(CLIENTS)
    ctx = dropin_store_ctx(ident, store)
    cctx = stdlib_client_context(ident, version)
    reused = []

    async def main():
        server = await serve(ctx, reused)
        port = server.sockets[0].getsockname()[1]
        pool = concurrent.futures.ThreadPoolExecutor(CLIENTS)
        try:
            session, _ = await loop.run_in_executor(pool, fetch, port, cctx)
            await ctx._fasttls._session_store_saver.flush_async()  # written by a task
            assert len(store) >= 1
            started = time.monotonic()
            results = await asyncio.gather(*(
                loop.run_in_executor(pool, fetch, port, cctx, session) for _ in range(CLIENTS)))
            elapsed = time.monotonic() - started
        finally:
            pool.shutdown(wait=True)
            server.close()
            await server.wait_closed()
        print(f"{CLIENTS} resumed handshakes with a {store.delay * 1000:.0f} ms lookup each: "
              f"{elapsed * 1000:.0f} ms (one after another: >= {CLIENTS * store.delay * 1000:.0f}"
              f" ms)")
        return results

    results = loop.run_until_complete(asyncio.wait_for(main(), BOUND * 2))
    assert all(r for _, r in results), "every client resumed"
    assert store.most_in_flight == CLIENTS  # all lookups were waiting at once
    assert reused == [False] + [True] * CLIENTS


def test_a_store_that_is_down_means_full_handshakes(loop, ident):
    store = DownStore()
    ctx = dropin_store_ctx(ident, store)
    cctx = stdlib_client_context(ident, ssl.TLSVersion.TLSv1_2)
    reused = []

    async def main():
        server = await serve(ctx, reused)
        port = server.sockets[0].getsockname()[1]
        try:
            session = None
            for _ in range(3):
                session, again = await loop.run_in_executor(None, fetch, port, cctx, session)
                assert not again
            await ctx._fasttls._session_store_saver.flush_async()
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), BOUND))
    assert reused == [False] * 3
    assert ctx._fasttls._session_store_saver.failed >= 1


class Stalled(MemoryStore):
    local = False

    def __init__(self):
        super().__init__()
        self.waiting = threading.Event()

    async def get_async(self, key):
        self.waiting.set()
        await asyncio.sleep(3600)


def test_client_gone_while_the_lookup_waits(loop, ident):
    """The client closes during the lookup: the transport ends, the lookup task is cancelled,
    nothing reaches the loop's exception handler, the server goes on."""
    seed = MemoryStore()
    ctx = dropin_store_ctx(ident, seed)
    cctx = stdlib_client_context(ident, ssl.TLSVersion.TLSv1_2)
    stalled = Stalled()
    reused = []

    async def main():
        server = await serve(ctx, reused)
        port = server.sockets[0].getsockname()[1]
        try:
            session, _ = await loop.run_in_executor(None, fetch, port, cctx)
            await ctx._fasttls._session_store_saver.flush_async()
            ctx.set_session_store(stalled)

            def hello_then_leave():
                with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as raw:
                    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
                    obj = cctx.wrap_bio(incoming, outgoing, server_hostname="localhost",
                                        session=session)
                    with pytest.raises(ssl.SSLWantReadError):
                        obj.do_handshake()
                    raw.sendall(outgoing.read())
                    assert stalled.waiting.wait(BOUND)

            await loop.run_in_executor(None, hello_then_leave)
            for _ in range(200):  # the transport notices the end (bounded)
                pending = [t for t in asyncio.all_tasks() if "resolve_pause" in repr(t)]
                if not pending:
                    break
                await asyncio.sleep(0.01)
            assert not pending
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), BOUND))
