"""Fixtures and peers of the fasttls.aio tests.

The fasttls end runs on the test's own event loop (`loop`: a selector loop or uvloop, patched
with fasttls.aio.patch_loop), with fasttls.SSLContext contexts. The other end is the stdlib, in
a thread, so that it can never share a loop (or a patch) with the code under test:
- `BlockingPeer`: a blocking stdlib ssl socket running a script (deterministic steps, signals to
  and from the test through `Signals`);
- `StdlibLoop`: an unpatched asyncio selector loop with stdlib contexts.

Every wait is bounded (IO_TIMEOUT per step, TEST_TIMEOUT per test body, every socket has a
timeout); no test asserts on a duration.

FASTTLS_AIO_BAR=stdlib makes the "fasttls" contexts stdlib ones (the loop stays patched, so
asyncio's sslproto, or uvloop's own SSL, carries them): a way to check that the tests' own
expectations are asyncio's (run it on 3.11+ with the selector loop; the tests that check the
transport's class fail there, by design).
"""
import asyncio
import concurrent.futures
import os
import socket
import ssl
import sys
import threading

import pytest
from support.dropin import STDLIB_SSLContext
from support.peers import pin_version

import fasttls
import fasttls.aio

HOST = "127.0.0.1"
IO_TIMEOUT = 5.0      # seconds: one step of a test (a connection, a peer's signal, a read)
TEST_TIMEOUT = 30.0   # seconds: a whole test body on the loop
BAR = os.environ.get("FASTTLS_AIO_BAR") == "stdlib"

if sys.platform != "win32":
    import uvloop
else:  # no uvloop on Windows (the test extra does not install it there)
    uvloop = None

LOOP_KINDS = ["selector"] + (["uvloop"] if uvloop is not None else [])
SIDES = ["client", "server"]  # the fasttls end's role; the stdlib peer has the other one
HAS_SHUTDOWN_TIMEOUT = sys.version_info >= (3, 11)  # asyncio's ssl_shutdown_timeout argument


# ---- contexts ----

def fasttls_server_context(identity, version=None):
    ctx = (STDLIB_SSLContext if BAR else fasttls.SSLContext)(ssl.PROTOCOL_TLS_SERVER)
    identity.leaf.configure_cert(ctx)
    return pin_version(ctx, version)


def fasttls_client_context(identity, version=None):
    ctx = (STDLIB_SSLContext if BAR else fasttls.SSLContext)(ssl.PROTOCOL_TLS_CLIENT)
    identity.ca.configure_trust(ctx)
    return pin_version(ctx, version)


def strict_eof(ctx):
    """A TCP end without close_notify shows as SSLEOFError (Python 3.9's ssl ignores it by
    default, OP_IGNORE_UNEXPECTED_EOF; 3.10+ does not)."""
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


def stdlib_server_context(identity, version=None):
    ctx = STDLIB_SSLContext(ssl.PROTOCOL_TLS_SERVER)
    identity.leaf.configure_cert(ctx)
    return strict_eof(pin_version(ctx, version))


def stdlib_client_context(identity, version=None):
    ctx = STDLIB_SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    identity.ca.configure_trust(ctx)
    return strict_eof(pin_version(ctx, version))


def is_fasttls_transport(transport):
    return isinstance(transport, fasttls.aio.SSLTransport)


def assert_fasttls_transport(transport, loop_kind):
    """The connection runs on fasttls.aio's transport of the kind the loop makes."""
    expected = (fasttls.aio.SSLSocketTransport if loop_kind == "selector"
                else fasttls.aio.SSLLayeredTransport)
    assert isinstance(transport, expected), type(transport)


# ---- loops ----

def new_loop(loop_kind):
    if loop_kind == "uvloop":
        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


def close_loop(loop):
    try:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=IO_TIMEOUT))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    return request.param


@pytest.fixture(params=SIDES)
def side(request):
    return request.param


@pytest.fixture
def loop_errors():
    """What reached the test loop's exception handler (each a context dict)."""
    return []


@pytest.fixture
def loop(loop_kind, loop_errors):
    """A fresh loop of `loop_kind`, patched; it must end with an untouched exception handler
    (asyncio reports fatal transport errors there; a test expecting some clears the list)."""
    loop = fasttls.aio.patch_loop(new_loop(loop_kind))
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(None)
        close_loop(loop)
    assert not loop_errors, [ctx.get("message") for ctx in loop_errors]


@pytest.fixture
def run(loop):
    """run(coroutine): run it on the test loop, bounded by TEST_TIMEOUT."""
    def run_(coro, timeout=TEST_TIMEOUT):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    return run_


async def bounded(awaitable, timeout=IO_TIMEOUT):
    return await asyncio.wait_for(awaitable, timeout)


async def spin(condition, count=50):
    """Let the loop run until condition() holds, at most `count` iterations; returns it."""
    for _ in range(count):
        if condition():
            return True
        await asyncio.sleep(0)
    return condition()


# ---- an application protocol that records what happens ----

class Recorder(asyncio.Protocol):
    """Records every callback, in order; futures for the ones tests wait on."""

    def __init__(self, pause_on_first_data=False):
        loop = asyncio.get_event_loop()
        self.events = []
        self.received = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.eof = loop.create_future()
        self.lost = loop.create_future()
        self.paused = loop.create_future()
        self.resumed = loop.create_future()
        self.pauses = 0
        self.resumes = 0
        self._want = None  # (size, future): wait_bytes
        self._pause_on_first_data = pause_on_first_data

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        assert not self.lost.done(), "data_received after connection_lost"
        self.events.append("data")
        self.received += data
        if self._pause_on_first_data:
            self._pause_on_first_data = False
            self.transport.pause_reading()
        self._check_want()

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause_writing")
        self.pauses += 1
        if not self.paused.done():
            self.paused.set_result(None)

    def resume_writing(self):
        self.events.append("resume_writing")
        self.resumes += 1
        if not self.resumed.done():
            self.resumed.set_result(None)

    def _check_want(self):
        if self._want is not None and len(self.received) >= self._want[0]:
            size, future = self._want
            self._want = None
            if not future.done():
                future.set_result(bytes(self.received[:size]))

    async def wait_bytes(self, size, timeout=IO_TIMEOUT):
        """Until `size` bytes have been received in all (the first `size` bytes)."""
        future = asyncio.get_event_loop().create_future()
        self._want = (size, future)
        self._check_want()
        return await bounded(future, timeout)

    def plain_events(self):
        """The callbacks other than data_received, pause/resume_writing: the connection's life."""
        return [e for e in self.events if e in ("made", "eof", "lost")]


def settle(future, result=None, exception=None):
    """Complete a concurrent future unless it is done already (a test that timed out waiting
    cancels the futures it awaited)."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


# ---- signals between the test (on its loop) and a peer thread ----

class Signals:
    """Named one-shot signals usable from both sides: set(name) anywhere; wait(name) blocks
    (peer thread, bounded); await reached(name) (test loop, bounded)."""

    def __init__(self):
        self._futures = {}
        self._lock = threading.Lock()

    def _future(self, name):
        with self._lock:
            return self._futures.setdefault(name, concurrent.futures.Future())

    def set(self, name, value=None):
        settle(self._future(name), value)

    def is_set(self, name):
        return self._future(name).done()

    def wait(self, name, timeout=IO_TIMEOUT):
        return self._future(name).result(timeout)

    async def reached(self, name, timeout=IO_TIMEOUT):
        return await bounded(asyncio.wrap_future(self._future(name)), timeout)


# ---- a blocking stdlib peer in a thread ----

class BlockingPeer:
    """A stdlib ssl socket (blocking, with a timeout) in a thread, running
    `script(tls_socket, peer)`. `ctx=None`: plain TCP, the script gets the raw socket.
    The script's return value (or exception) is the peer's result: `await peer.result()`."""

    def __init__(self, script, ctx, server_side, server_hostname=None, family=socket.AF_INET):
        self.script = script
        self.ctx = ctx
        self.server_side = server_side
        self.server_hostname = server_hostname
        self.family = family
        self.signals = Signals()
        self.raw = None      # the TCP socket (to reset it, read under TLS)
        self.tls = None
        self.sockname = None
        self.listener = None
        self._outcome = concurrent.futures.Future()
        self._thread = None

    # -- making one --

    @classmethod
    def serve(cls, script, ctx, family=socket.AF_INET, path=None):
        """A server peer listening on 127.0.0.1 (or a unix socket at `path`), one connection."""
        peer = cls(script, ctx, server_side=True, family=family)
        if family == socket.AF_UNIX:
            peer.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            peer.listener.bind(path)
            peer.listener.listen(1)
            peer.address = path
        else:
            peer.listener = socket.create_server((HOST, 0))
            peer.address = peer.listener.getsockname()
        peer.listener.settimeout(IO_TIMEOUT)
        peer.port = peer.address[1] if family != socket.AF_UNIX else None
        peer._start()
        return peer

    @classmethod
    def connect(cls, script, ctx, address, server_hostname="localhost", family=socket.AF_INET):
        """A client peer connecting to `address`."""
        peer = cls(script, ctx, server_side=False, server_hostname=server_hostname,
                   family=family)
        peer.address = address
        peer._start()
        return peer

    def _start(self):
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def _main(self):
        try:
            if self.server_side:
                raw, _ = self.listener.accept()
            else:
                raw = socket.socket(self.family, socket.SOCK_STREAM)
                raw.settimeout(IO_TIMEOUT)
                raw.connect(self.address)
            raw.settimeout(IO_TIMEOUT)
            self.raw = raw
            self.sockname = raw.getsockname()
            self.signals.set("connected")
            with raw:
                if self.ctx is None:
                    result = self.script(raw, self)
                else:
                    self.tls = self.ctx.wrap_socket(
                        raw, server_side=self.server_side, server_hostname=self.server_hostname,
                        suppress_ragged_eofs=False)  # a ragged EOF must show as SSLEOFError
                    self.signals.set("handshake")
                    with self.tls:  # wrap_socket took the descriptor over from `raw`
                        result = self.script(self.tls, self)
        except BaseException as exc:
            settle(self._outcome, exception=exc)
        else:
            settle(self._outcome, result)
        finally:
            if self.listener is not None:
                self.listener.close()

    # -- the test's side --

    async def result(self, timeout=IO_TIMEOUT):
        return await bounded(asyncio.wrap_future(self._outcome), timeout)

    def join(self):
        if self._thread is not None:
            self._thread.join(IO_TIMEOUT)
            assert not self._thread.is_alive(), "peer thread still running"
        if self.listener is not None:
            self.listener.close()


def read_until_eof(tls, limit=1 << 30):
    """Everything the peer sends until its close_notify (b"" from recv); SSLEOFError if TCP
    ends without it (the socket was wrapped with suppress_ragged_eofs=False)."""
    received = bytearray()
    while len(received) <= limit:
        chunk = tls.recv(1 << 20)
        if not chunk:
            return bytes(received)
        received += chunk
    raise AssertionError("peer kept sending")


def read_exactly(tls, size):
    received = bytearray()
    while len(received) < size:
        chunk = tls.recv(min(1 << 20, size - len(received)))
        if not chunk:
            raise AssertionError(f"EOF after {len(received)} of {size} bytes")
        received += chunk
    return bytes(received)


# ---- the two ends of a connection ----

class Pair:
    """The fasttls end (transport, protocol) and its stdlib peer."""

    def __init__(self, transport, protocol, peer, server=None):
        self.transport = transport
        self.protocol = protocol
        self.peer = peer
        self.server = server

    async def aclose(self):
        if not self.transport.is_closing():
            self.transport.abort()
        if self.server is not None:
            self.server.close()
            await bounded(self.server.wait_closed())
        self.peer.join()


class _PlainFirst(asyncio.Protocol):
    """The plain phase of a connection that start_tls upgrades on the server side. Reading is
    paused at once, but uvloop (0.23) may still deliver what arrives next to this protocol, so
    the peer also waits (see _DelayedHandshake) and any byte here fails the test."""

    def __init__(self, future):
        self.future = future

    def connection_made(self, transport):
        transport.pause_reading()
        self.future.set_result(transport)

    def data_received(self, data):
        raise AssertionError(f"{len(data)} bytes reached the plain protocol before start_tls")


async def open_pair(side, identity, script, protocol_factory=Recorder, *, fasttls_ctx=None,
                    peer_ctx=None, server_hostname="localhost", via="direct", **kwargs):
    """Connect a fasttls end of role `side` (on the running loop) to a BlockingPeer running
    `script`; kwargs go to create_connection / create_server (ssl_*_timeout...).
    via="start_tls": the connection is made plain and upgraded with loop.start_tls (the
    protocol hears connection_made with the plain transport; its `transport` is then set to
    the TLS one), so the same test runs over the layered transport."""
    if via == "start_tls":
        return await _open_pair_start_tls(side, identity, script, protocol_factory, fasttls_ctx,
                                          peer_ctx, server_hostname, kwargs)
    loop = asyncio.get_event_loop()
    if side == "client":
        peer = BlockingPeer.serve(script, peer_ctx or stdlib_server_context(identity))
        transport, protocol = await bounded(loop.create_connection(
            protocol_factory, HOST, peer.port, ssl=fasttls_ctx or fasttls_client_context(identity),
            server_hostname=server_hostname, **kwargs))
        return Pair(transport, protocol, peer)
    made = loop.create_future()

    def factory():
        protocol = protocol_factory()
        if not made.done():
            made.set_result(protocol)
        return protocol

    server = await loop.create_server(factory, HOST, 0,
                                      ssl=fasttls_ctx or fasttls_server_context(identity), **kwargs)
    port = server.sockets[0].getsockname()[1]
    peer = BlockingPeer.connect(script, peer_ctx or stdlib_client_context(identity), (HOST, port))
    protocol = await bounded(made)
    transport = await bounded(protocol.made)
    return Pair(transport, protocol, peer, server)


async def _open_pair_start_tls(side, identity, script, protocol_factory, fasttls_ctx, peer_ctx,
                               server_hostname, kwargs):
    loop = asyncio.get_event_loop()
    server = None
    if side == "client":
        peer = BlockingPeer.serve(script, peer_ctx or stdlib_server_context(identity))
        plain, protocol = await bounded(loop.create_connection(protocol_factory, HOST,
                                                               peer.port))
        tls = await loop.start_tls(plain, protocol, fasttls_ctx or fasttls_client_context(identity),
                                   server_hostname=server_hostname,
                                   ssl_handshake_timeout=IO_TIMEOUT, **kwargs)
    else:
        made = loop.create_future()
        server = await loop.create_server(lambda: _PlainFirst(made), HOST, 0)
        signals = Signals()
        peer = BlockingPeer.connect(
            script, _DelayedHandshake(peer_ctx or stdlib_client_context(identity), signals),
            (HOST, server.sockets[0].getsockname()[1]))
        plain = await bounded(made)
        protocol = protocol_factory()
        protocol.connection_made(plain)
        # start_tls switches the transport's protocol before its first await; the peer's
        # ClientHello leaves after that (call_soon runs once this task yields).
        loop.call_soon(signals.set, "upgrading")
        tls = await loop.start_tls(plain, protocol, fasttls_ctx or fasttls_server_context(identity),
                                   server_side=True, ssl_handshake_timeout=IO_TIMEOUT, **kwargs)
    protocol.transport = tls
    return Pair(tls, protocol, peer, server)


class _DelayedHandshake:
    """A client context whose wrap_socket (the handshake) waits for the "upgrading" signal."""

    def __init__(self, ctx, signals):
        self._ctx, self._signals = ctx, signals

    def wrap_socket(self, sock, **kwargs):
        self._signals.wait("upgrading")
        return self._ctx.wrap_socket(sock, **kwargs)


@pytest.fixture(params=["direct", "start_tls"])
def via(request):
    """How the fasttls end's TLS connection is made: create_connection/create_server with ssl,
    or plain then loop.start_tls (the layered transport, on the selector loop too)."""
    return request.param


# ---- an unpatched stdlib asyncio loop in a thread ----

class StdlibLoop:
    """asyncio's own selector loop in a thread (never patched; stdlib contexts): the stdlib
    end of the stream and protocol tests. submit(coro) returns an awaitable on the test loop."""

    def __init__(self):
        self.loop = asyncio.SelectorEventLoop()
        self.errors = []
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro, timeout=TEST_TIMEOUT):
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self.loop)
        return asyncio.wrap_future(future)

    def stop(self):
        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(IO_TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(IO_TIMEOUT)
        assert not self._thread.is_alive(), "stdlib loop thread still running"
        self.loop.close()


@pytest.fixture
def stdlib_loop():
    peer = StdlibLoop()
    try:
        yield peer
    finally:
        peer.stop()


# ---- a crash the tests must survive (h5-bugs.md B1, fixed in 681b4e1) ----

# Failed handshakes fed memoryviews, their exceptions kept, then the cyclic GC: a process of its
# own, since the bug was a segmentation fault at a later, unrelated collection (Python <= 3.12).
GC_CRASH_PROBE = r"""
import asyncio, gc, socket, ssl, sys, threading
import trustme, fasttls, fasttls.aio
ca, stranger = trustme.CA(), trustme.CA()
server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
stranger.issue_cert("localhost").configure_cert(server_ctx)
listener = socket.create_server(("127.0.0.1", 0))
listener.settimeout(5)
ATTEMPTS = 30

def serve():
    for _ in range(ATTEMPTS):
        raw, _ = listener.accept()
        raw.settimeout(5)
        try:
            server_ctx.wrap_socket(raw, server_side=True).close()
        except (ssl.SSLError, OSError):
            raw.close()

threading.Thread(target=serve, daemon=True).start()
kept = []

async def main():
    for i in range(ATTEMPTS):
        ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(ctx)
        try:
            await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", listener.getsockname()[1], ssl=ctx, server_hostname="localhost"), 5)
        except ssl.SSLCertVerificationError as exc:
            kept.append(exc)  # as pytest.raises, a log record or a future would
        if i % 5 == 4:
            kept.clear()
            gc.collect()

if sys.argv[1] == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
else:
    loop = asyncio.SelectorEventLoop()
fasttls.aio.patch_loop(loop)
loop.run_until_complete(main())
print("survived")
"""


def run_gc_crash_probe(loop_kind):
    """(survived, output) of GC_CRASH_PROBE in a child Python (the checkout's fasttls)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.path.join(root, "tests")]))
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", GC_CRASH_PROBE, loop_kind],
                          cwd=root, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    output = proc.stdout + proc.stderr
    survived = proc.returncode == 0 and "survived" in proc.stdout and "BufferError" not in output
    return survived, output


@pytest.fixture(scope="session")
def failed_handshakes_crash():
    """True if B1 is back: the tests that make handshakes fail in this process then fail at
    setup instead of running (the crash would take the whole run down, at a later test);
    test_failed_handshake_does_not_crash_gc shows the crash itself."""
    survived, _ = run_gc_crash_probe("selector")
    return not survived


@pytest.fixture
def handshake_failures(failed_handshakes_crash):
    if failed_handshakes_crash:
        pytest.fail("fasttls bug (h5-bugs.md B1) is back: a failed handshake fed a memoryview "
                    "crashes the garbage collector later; not run in this process (see "
                    "test_failed_handshake_does_not_crash_gc)")
