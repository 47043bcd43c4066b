"""RedisStore and MemcachedStore against real redis-server and memcached, started by the test
on 127.0.0.1 free ports (no persistence) and killed in teardown: the store operations, sync
and asyncio; two server contexts, and two processes, resuming each other's sessions through
them; a store that is down or dies means full handshakes, not errors and not hangs."""
import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.pairs import VERSIONS
from support.peers import stdlib_client_context
from support.stores import (HelperServer, fetch, require_module, start_memcached, start_redis,
                            store_ctx)

BOUND = 30.0  # no step of these tests takes anywhere near this long; it guards against hangs


def running(module, start):
    """The daemon `start()` runs, for as long as the fixture lasts (needs the client `module`)."""
    require_module(module)
    daemon = start()
    yield daemon
    daemon.stop()


@pytest.fixture
def redis_daemon():
    yield from running("redis", start_redis)


@pytest.fixture
def memcached_daemon():
    yield from running("pymemcache", start_memcached)


def make_store(kind, daemon, **options):
    from fasttls.store import MemcachedStore, RedisStore
    if kind == "redis":
        return RedisStore(f"redis://127.0.0.1:{daemon.port}/0", **options)
    return MemcachedStore(("127.0.0.1", daemon.port), **options)


@pytest.fixture(params=["redis", "memcached"])
def backend(request):
    kind = request.param
    daemon = request.getfixturevalue(f"{kind}_daemon")
    store = make_store(kind, daemon)
    yield kind, daemon, store
    store.close()


def wait_until(predicate, what):
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def test_operations(backend):
    kind, _, store = backend
    assert store.get(b"\x01" * 32) is None
    store.set(b"\x01" * 32, b"blob\x00\xff", 60)
    assert store.get(b"\x01" * 32) == b"blob\x00\xff"
    store.set(b"\x01" * 32, b"other", 60)
    assert store.get(b"\x01" * 32) == b"other"
    store.delete(b"\x01" * 32)
    assert store.get(b"\x01" * 32) is None
    store.delete(b"\x01" * 32)  # not there: no error


def test_expiry_is_the_ttl(backend):
    kind, _, store = backend
    store.set(b"\x02" * 32, b"soon gone", 1)
    assert store.get(b"\x02" * 32) == b"soon gone"
    if kind == "redis":
        assert 0 < store.client.ttl(store._key(b"\x02" * 32)) <= 1
    wait_until(lambda: store.get(b"\x02" * 32) is None, "the item expired")


def test_async_operations(backend):
    kind, _, store = backend

    async def main():
        assert await store.get_async(b"\x03" * 32) is None
        await store.set_async(b"\x03" * 32, b"async blob", 60)
        assert await store.get_async(b"\x03" * 32) == b"async blob"
        await store.delete_async(b"\x03" * 32)
        assert await store.get_async(b"\x03" * 32) is None
        if kind == "redis":
            await store.aclose()

    asyncio.run(asyncio.wait_for(main(), BOUND))
    assert store.get(b"\x03" * 32) is None


@contextlib.contextmanager
def stopped(daemon):
    """The daemon stopped (SIGSTOP): the kernel still accepts connections to its port, nothing
    answers them. Continued on the way out."""
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)


def timed_failure(call):
    """How long `call` took to fail (it must: the store does not answer)."""
    started = time.monotonic()
    with pytest.raises(Exception):
        call()
    return time.monotonic() - started


@pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP: POSIX")
def test_a_sync_call_is_bounded_by_the_shorter_of_its_timeout_and_the_stores(backend):
    """A store that does not answer: a call given a timeout shorter than the store's own fails
    within the call's (not after the store's 60 s); one given a longer timeout, within the
    store's (here 0.3 s). Both paths work again once the store answers."""
    kind, daemon, _ = backend
    slow_own = make_store(kind, daemon, timeout=60.0)
    short_own = make_store(kind, daemon, timeout=0.3)
    try:
        slow_own.set(b"\x04" * 32, b"kept", 60)
        with stopped(daemon):
            for call in (lambda: slow_own.get(b"\x04" * 32, 0.3),
                         lambda: slow_own.set(b"\x05" * 32, b"x", 60, 0.3),
                         lambda: slow_own.delete(b"\x05" * 32, 0.3),
                         lambda: short_own.get(b"\x04" * 32, 60.0)):
                # Well under the 60 s bound, whatever retries the client library makes.
                assert timed_failure(call) < 20
        assert slow_own.get(b"\x04" * 32, 0.3) == b"kept"
        assert short_own.get(b"\x04" * 32, 60.0) == b"kept"
        assert slow_own.get(b"\x04" * 32) == b"kept"
    finally:
        slow_own.close()
        short_own.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_two_contexts_resume_through_the_store(backend, ident, version):
    kind, daemon, store = backend
    first_ctx = store_ctx(ident, store)
    first = HelperServer(first_ctx)
    # The second context has a client of its own: nothing shared but the server.
    second = HelperServer(store_ctx(ident, make_store(kind, daemon)))
    cctx = stdlib_client_context(ident, version)
    session, reused = fetch(first.port, cctx)
    first.join()
    assert first_ctx._session_store_saver.flush(BOUND)  # written by the background writer
    _, reused = fetch(second.port, cctx, session)
    second.join()
    assert not first.errors and not second.errors
    assert first.reused == [False] and second.reused == [True] and reused


def start_process(redis_port, paths, count):
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent.parent / "support" / "store_server_process.py"),
         str(redis_port), str(paths["cert"]), str(paths["key"]), str(count)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


def finish_process(proc):
    try:
        out, _ = proc.communicate(timeout=BOUND)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=BOUND)
    assert proc.returncode == 0, out
    return out.split()


@pytest.mark.parametrize("version", VERSIONS)
def test_two_processes_resume_each_others_sessions(redis_daemon, ident, tmp_path, version):
    """A session made by a server process resumes in this one, and one made here resumes
    there: the fleet case."""
    paths = ident.write(tmp_path)
    cctx = stdlib_client_context(ident, version)
    here_store = make_store("redis", redis_daemon)
    here = store_ctx(ident, here_store)
    proc, port = start_process(redis_daemon.port, paths, 2)
    try:
        theirs, reused = fetch(port, cctx)  # a session made there...
        assert not reused
        server = HelperServer(here, count=2)
        wait_until(lambda: len(here_store.client.keys(b"fasttls:s:*")) > 0,
                   "the other process stored its session")
        _, reused = fetch(server.port, cctx, theirs)  # ...resumes here
        assert reused
        mine, reused = fetch(server.port, cctx)  # and one made here...
        assert not reused
        server.join()
        assert here._session_store_saver.flush(BOUND)
        _, reused = fetch(port, cctx, mine)  # ...resumes there
        assert reused
    finally:
        lines = finish_process(proc)
    assert server.reused == [True, False] and not server.errors
    assert lines == ["new", "reused"]


@pytest.mark.parametrize("kind", ["redis", "memcached"])
def test_a_store_that_is_down_means_full_handshakes(ident, kind):
    """Nothing listens on the store's port: every lookup and write fails fast, every client
    gets a full handshake and no error."""
    require_module("redis" if kind == "redis" else "pymemcache")
    from support.interop import free_port

    class Nowhere:
        port = free_port()

    store = make_store(kind, Nowhere)
    ctx = store_ctx(ident, store)
    server = HelperServer(ctx, count=3)
    cctx = stdlib_client_context(ident, None)
    session = None
    for _ in range(3):
        session, reused = fetch(server.port, cctx, session)
        assert not reused
    server.join()
    assert server.reused == [False] * 3 and not server.errors
    assert ctx._session_store_saver.flush(BOUND)
    assert ctx._session_store_saver.failed >= 1


def test_the_store_dies_mid_run(redis_daemon, ident):
    store = make_store("redis", redis_daemon)
    ctx = store_ctx(ident, store)
    server = HelperServer(ctx, count=3)
    cctx = stdlib_client_context(ident, ssl.TLSVersion.TLSv1_2)
    session, reused = fetch(server.port, cctx)
    assert ctx._session_store_saver.flush(BOUND)
    _, reused = fetch(server.port, cctx, session)
    assert reused
    redis_daemon.stop()
    _, reused = fetch(server.port, cctx, session)  # the store is gone: a full handshake
    assert not reused
    server.join()
    assert server.reused == [False, True, False] and not server.errors


def test_redis_ready_clients_and_close(redis_daemon):
    """RedisStore over ready `client` and `async_client` (their own settings) works sync and
    awaited; with an `async_client` given, close() still closes the synchronous client's
    connections (counted by the redis-server itself)."""
    import redis
    import redis.asyncio
    from fasttls.store import RedisStore
    url = f"redis://127.0.0.1:{redis_daemon.port}/0"
    watcher = redis.Redis.from_url(url, socket_timeout=BOUND)
    # One loop for the asyncio client's whole life: on Python 3.9 its pool's asyncio.Lock binds
    # to the loop current when it is made (and there may be none outside a running loop).
    loop = asyncio.new_event_loop()

    async def make_async_client():
        return redis.asyncio.Redis.from_url(url, socket_timeout=BOUND)

    async_client = loop.run_until_complete(make_async_client())
    store = RedisStore(url, client=redis.Redis.from_url(url, socket_timeout=BOUND),
                       async_client=async_client)
    try:
        connected = len(watcher.client_list())
        store.set(b"\x06" * 32, b"ready client", 60)
        assert store.get(b"\x06" * 32) == b"ready client"
        assert len(watcher.client_list()) == connected + 1

        async def main():
            assert await store.get_async(b"\x06" * 32) == b"ready client"
            await store.delete_async(b"\x06" * 32)
            await async_client.aclose()

        loop.run_until_complete(asyncio.wait_for(main(), BOUND))
        assert store.get(b"\x06" * 32) is None
        store.close()
        wait_until(lambda: len(watcher.client_list()) == connected,
                   "the store's synchronous connection closed")
    finally:
        store.close()
        watcher.close()
        loop.close()


def test_memcached_server_as_host_port_string(memcached_daemon):
    """`server` may be "host:port": the store reaches the real memcached through it; a string
    without a port is a ValueError naming it (not int()'s message)."""
    from fasttls.store import MemcachedStore
    store = MemcachedStore(f"127.0.0.1:{memcached_daemon.port}")
    try:
        store.set(b"\x07" * 32, b"by string", 60)
        assert store.get(b"\x07" * 32) == b"by string"
    finally:
        store.close()
    for bad in ("127.0.0.1", "127.0.0.1:", ":11211"):
        with pytest.raises(ValueError, match="expected 'host:port'") as info:
            MemcachedStore(bad)
        assert repr(bad) in str(info.value)
