"""asyncio over the drop-in, on the stdlib event loop and on uvloop: stream client, stream
server, and loop.start_tls (both sides). Each runs in the three modes of `tls_mode`.

In the injected mode the asyncio client passes `ssl=True`, so asyncio builds its own context
(`ssl.create_default_context()`, found through the patched module at call time). uvloop captured
`ssl.create_default_context` when it was imported (before any injection), so under uvloop the
test builds the context itself with `ssl.create_default_context()`: injection cannot reach a
module's import-time copy, and the engine spy would catch it if that context were the stdlib's."""
import asyncio
import ssl
import sys

import pytest

from support.dropin import (
    HOST,
    IO_TIMEOUT,
    assert_untrusted_issuer,
    asyncio_get,
    asyncio_http_handler,
    body_for,
    fetch_blocking,
    run_asyncio,
)

if sys.platform != "win32":
    import uvloop  # noqa: F401  (imported before any injection, as an application would)

# uvloop has no Windows support (the test extra does not install it there): no uvloop params.
LOOP_KINDS = ["asyncio"] + (["uvloop"] if sys.platform != "win32" else [])


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    return request.param


def client_ssl(tls_mode, loop_kind):
    if tls_mode.injected:
        return True if loop_kind == "asyncio" else ssl.create_default_context()
    return tls_mode.client_context()


def test_client(tls_mode, loop_kind, https_server):
    async def main():
        reader, writer = await asyncio.open_connection(
            HOST, https_server.port, ssl=client_ssl(tls_mode, loop_kind), server_hostname="localhost"
        )
        try:
            return await asyncio_get(reader, writer, "/asyncio-client", host="localhost")
        finally:
            writer.close()

    assert run_asyncio(main, loop_kind) == (200, body_for("/asyncio-client"))
    tls_mode.check_engine()


def test_client_untrusted(tls_mode, loop_kind, untrusted_server):
    async def main():
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await asyncio.open_connection(
                HOST, untrusted_server.port, ssl=client_ssl(tls_mode, loop_kind),
                server_hostname="localhost",
            )
        return info.value

    assert_untrusted_issuer(run_asyncio(main, loop_kind))
    tls_mode.check_engine()


def test_server(tls_mode, loop_kind, server_cert, reference_client_context):
    async def main():
        server = await asyncio.start_server(
            asyncio_http_handler, HOST, 0, ssl=tls_mode.server_context(server_cert)
        )
        try:
            port = server.sockets[0].getsockname()[1]
            loop = asyncio.get_running_loop()
            results = []
            for path in ("/asyncio-server/1", "/asyncio-server/2"):
                results.append(await loop.run_in_executor(
                    None, fetch_blocking, port, path, reference_client_context
                ))
            return results
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), IO_TIMEOUT)

    results = run_asyncio(main, loop_kind)
    assert results == [(200, body_for("/asyncio-server/%d" % i)) for i in (1, 2)]
    tls_mode.check_engine(server_side=True)


class LineProtocol(asyncio.Protocol):
    """Collects received bytes; `wait_for(suffix)` waits until they end with `suffix`."""

    def __init__(self):
        self.data = b""
        self.changed = asyncio.Event()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        self.changed.set()

    def connection_lost(self, exc):
        self.changed.set()

    async def wait_for(self, suffix):
        while not self.data.endswith(suffix):
            if self.transport is not None and self.transport.is_closing():
                raise AssertionError("connection closed, received %r" % self.data)
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), IO_TIMEOUT)
        data, self.data = self.data, b""
        return data


def test_start_tls(tls_mode, loop_kind, server_cert):
    """A STARTTLS exchange: plaintext, then both sides upgrade with loop.start_tls."""
    server_ctx = tls_mode.server_context(server_cert)
    client_ctx = tls_mode.client_context()
    sessions = []

    async def serve(proto):
        """The server side of one connection: echo lines, upgrade on STARTTLS."""
        loop = asyncio.get_running_loop()
        while True:
            line = await proto.wait_for(b"\n")
            if line == b"STARTTLS\n":
                proto.transport.write(b"GO\n")
                proto.transport = await loop.start_tls(
                    proto.transport, proto, server_ctx, server_side=True
                )
            elif line == b"QUIT\n":
                proto.transport.close()
                return
            else:
                proto.transport.write(b"echo " + line)

    def new_server_protocol():
        proto = LineProtocol()
        sessions.append(asyncio.get_running_loop().create_task(serve(proto)))
        return proto

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(new_server_protocol, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            transport, proto = await loop.create_connection(LineProtocol, HOST, port)
            try:
                transport.write(b"plain\n")
                assert await proto.wait_for(b"\n") == b"echo plain\n"
                transport.write(b"STARTTLS\n")
                assert await proto.wait_for(b"\n") == b"GO\n"
                tls_transport = await loop.start_tls(
                    transport, proto, client_ctx, server_hostname="localhost"
                )
                transport = tls_transport
                assert tls_transport.get_extra_info("ssl_object") is not None
                tls_transport.write(b"secret\n")
                echoed = await proto.wait_for(b"\n")
                tls_transport.write(b"QUIT\n")
                return echoed
            finally:
                transport.close()
        finally:
            server.close()
            await asyncio.wait_for(server.wait_closed(), IO_TIMEOUT)
            for task in sessions:
                await asyncio.wait_for(task, IO_TIMEOUT)

    assert run_asyncio(main, loop_kind) == b"echo secret\n"
    tls_mode.check_engine()
    tls_mode.check_engine(server_side=True)
