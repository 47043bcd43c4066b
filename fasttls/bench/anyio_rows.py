"""Benchmark rows for the anyio/trio path: anyio's ``TLSStream`` drives an ``SSLObject`` over two
``MemoryBIO`` objects (``ssl_context.wrap_bio``), as httpx, httpcore and anyio servers do. One
64 B echo connection over loopback TCP, both ends in one event loop (asyncio's, or trio's through
anyio); fasttls side: ``fasttls.SSLContext`` on both ends, stdlib side: ``ssl.SSLContext``.

The event loop runs in a thread of its own (anyio's blocking portal, the same for both backends);
``run(n)`` is one call into it, so the hop costs once per timed run, not per round trip."""
import os

from fasttls.bench.dropin import dropin_contexts
from fasttls.bench.harness import HOSTNAME, BenchError, Row

MESSAGE_SIZE = 64
IO_TIMEOUT = 10     # seconds for connecting and for closing
RUN_TIMEOUT = 120   # seconds one run(n) may take


class AnyioEcho:
    """A TLS echo server task and one client TLSStream to it, on `backend` ("asyncio"/"trio")."""

    def __init__(self, env, side, backend):
        from anyio.from_thread import start_blocking_portal

        self.side = side
        self._portal_cm = start_blocking_portal(backend)
        self.portal = self._portal_cm.__enter__()
        try:
            server_ctx, client_ctx = dropin_contexts(env, side)
            self.client, server = self.portal.call(self._connect, server_ctx, client_ctx)
            self._served = self.portal.start_task_soon(self._echo, server)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise
        env.on_close(self.close)
        from anyio.streams.tls import TLSAttribute

        for role, stream in (("client", self.client), ("server", server)):
            env.check_cipher(side, role, stream.extra(TLSAttribute.ssl_object))

    @staticmethod
    async def _connect(server_ctx, client_ctx):
        import anyio
        from anyio.abc import SocketAttribute
        from anyio.streams.tls import TLSStream

        with anyio.fail_after(IO_TIMEOUT):
            listeners = await anyio.create_tcp_listener(local_host="127.0.0.1")
            async with listeners:
                listener = listeners.listeners[0]
                port = listener.extra(SocketAttribute.local_port)
                accepted = {}

                async def accept():
                    accepted["tcp"] = await listener.accept()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(accept)
                    client_tcp = await anyio.connect_tcp("127.0.0.1", port)
            tls = {}

            async def wrap(role, stream, ctx, hostname):    # both handshakes run concurrently
                tls[role] = await TLSStream.wrap(stream, server_side=role == "server",
                                                 hostname=hostname, ssl_context=ctx)

            async with anyio.create_task_group() as tg:
                tg.start_soon(wrap, "server", accepted["tcp"], server_ctx, None)
                tg.start_soon(wrap, "client", client_tcp, client_ctx, HOSTNAME)
        return tls["client"], tls["server"]

    @staticmethod
    async def _echo(server):
        import anyio

        try:
            async for chunk in server:
                await server.send(chunk)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            with anyio.move_on_after(IO_TIMEOUT):
                await server.aclose()

    async def _round_trips(self, message, n):
        import anyio

        client, size = self.client, len(message)
        total = 0
        with anyio.fail_after(RUN_TIMEOUT):
            for _ in range(n):
                await client.send(message)
                got = await client.receive(size)
                while len(got) < size:
                    got += await client.receive(size - len(got))
                total += len(got)
        return total

    async def _echo_once(self, message):
        await self.client.send(message)
        got = b""
        while len(got) < len(message):
            got += await self.client.receive(len(message) - len(got))
        return got

    def runner(self, size):
        """``run(n)``: n round trips of a random `size`-byte message; returns bytes echoed. The
        first echo is compared with what was sent."""
        message = os.urandom(size)
        if self.portal.call(self._echo_once, message) != message:
            raise BenchError(f"anyio {self.side}: the echo differs from what was sent")
        return lambda n: self.portal.call(self._round_trips, message, n)

    def close(self):
        import anyio

        async def stop():
            with anyio.move_on_after(IO_TIMEOUT):
                await self.client.aclose()

        try:
            self.portal.call(stop)
            self._served.result(IO_TIMEOUT)
        finally:
            self._portal_cm.__exit__(None, None, None)


def _setup(backend):
    return lambda env, side: AnyioEcho(env, side, backend).runner(MESSAGE_SIZE)


ROWS = [
    Row("anyio_64", "anyio TLSStream echo, 64 B", "round trips/s", 1, MESSAGE_SIZE, 1.0,
        _setup("asyncio"), seconds=0.2, repeat=9, requires="anyio"),
    Row("anyio_trio_64", "anyio on trio, TLS echo, 64 B", "round trips/s", 1, MESSAGE_SIZE,
        1.0, _setup("trio"), seconds=0.2, repeat=9, requires=("anyio", "trio")),
]
