"""Session-store peers for tests/store: redis-server and memcached started on 127.0.0.1 free
ports (no persistence), torn down by the fixture; a fasttls server on the socket helpers in a
thread; a store that answers late or not at all. Every wait is bounded."""
import os
import socket
import ssl
import subprocess
import threading
import time

import fasttls
from fasttls import helpers
from support.interop import free_port
from support.pairs import server_ctx
# require_module: the store tests import it from here
from support.requires import require_module, require_program  # noqa: F401

START_TIMEOUT = 10.0
SOCKET_TIMEOUT = 10.0


def _wait_listening(port, proc, name):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited at start: {proc.stdout.read()!r}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{name} is not listening on port {port} after {START_TIMEOUT} s")


class Daemon:
    """A store daemon in the foreground on 127.0.0.1:port; stop() kills it."""

    def __init__(self, name, argv, port):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _wait_listening(port, self.proc, name)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(START_TIMEOUT)
        self.proc.stdout.close()


def start_redis():
    program = require_program("redis-server")
    port = free_port()
    return Daemon("redis-server", [program, "--bind", "127.0.0.1", "--port", str(port), "--save",
                                   "", "--appendonly", "no"], port)


def start_memcached():
    program = require_program("memcached")
    port = free_port()
    argv = [program, "-l", "127.0.0.1", "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:  # memcached refuses to run as root without a user to switch to
        argv += ["-u", "root"]
    return Daemon("memcached", argv, port)


def store_ctx(ident, store):
    """A native server context (fasttls.Context) for `ident` keeping sessions in `store`."""
    ctx = server_ctx(ident)
    ctx.set_session_store(store)
    return ctx


def dropin_store_ctx(ident, store):
    """The same on the drop-in (fasttls.SSLContext)."""
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ident.leaf.configure_cert(ctx)
    ctx.set_session_store(store)
    return ctx


def fetch(port, cctx, session=None, timeout=SOCKET_TIMEOUT):
    """One stdlib client connection (`cctx`, offering `session`) to a server that sends b"ok":
    (the session it holds afterwards, whether the handshake resumed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with cctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            assert tls.recv(2) == b"ok"
            return tls.session, tls.session_reused


class SlowStore:
    """Wraps a store: every lookup answers after `delay` seconds (or never answers in time:
    raises TimeoutError after `delay` if `fail`). Writes go through at once."""

    def __init__(self, inner, delay, fail=False):
        self.inner, self.delay, self.fail = inner, delay, fail
        self.local = False
        self.lookups = 0

    def get(self, key, timeout=None):
        self.lookups += 1
        time.sleep(self.delay if timeout is None else min(self.delay, timeout))
        if self.fail:
            raise TimeoutError("the store did not answer")
        return self.inner.get(key)

    def set(self, key, value, ttl, timeout=None):
        self.inner.set(key, value, ttl)

    def delete(self, key, timeout=None):
        self.inner.delete(key)

    async def get_async(self, key):
        import asyncio
        self.lookups += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise TimeoutError("the store did not answer")
        return self.inner.get(key)

    async def set_async(self, key, value, ttl):
        self.inner.set(key, value, ttl)

    async def delete_async(self, key):
        self.inner.delete(key)


class DownStore(SlowStore):
    """Every call fails at once, as a client whose server is down."""

    def __init__(self):
        super().__init__(None, 0.0, fail=True)

    def set(self, key, value, ttl, timeout=None):
        raise ConnectionRefusedError("the store is down")

    async def set_async(self, key, value, ttl):
        raise ConnectionRefusedError("the store is down")


class HelperServer:
    """A fasttls server on the socket helpers (fasttls.helpers) in a thread, for `count`
    connections: the handshake, b"ok", then close_notify (or, with drop=True, the socket is
    closed without it). Records per connection whether the session was reused; failures are
    kept in `errors`."""

    def __init__(self, ctx, count=1, drop=False, timeout=SOCKET_TIMEOUT):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(SOCKET_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.ctx, self.count, self.drop, self.timeout = ctx, count, drop, timeout
        self.reused = []
        self.errors = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        for _ in range(self.count):
            try:
                raw, _ = self.listener.accept()
            except OSError as exc:
                self.errors.append(exc)
                return
            with raw:
                raw.settimeout(self.timeout)
                tls = fasttls.newtls("server", self.ctx)
                try:
                    helpers.init_responsefunc(raw, tls)()
                    self.reused.append(tls.session_reused())
                    helpers.writefunc(raw, tls)(b"ok")
                    if not self.drop:
                        helpers.closefunc(tls)()
                except OSError as exc:  # ssl.SSLError included
                    self.errors.append(exc)

    def join(self):
        self._thread.join(SOCKET_TIMEOUT * 2)
        self.listener.close()
        assert not self._thread.is_alive(), "server thread still running"
