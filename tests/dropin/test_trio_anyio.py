"""trio (trio.SSLStream) and anyio (connect_tcp(tls=True), TLSListener) over the drop-in, in the
three modes of `tls_mode`. Both drive an ssl.SSLObject from wrap_bio (anyio calls wrap_bio from a
worker thread for a context that is not exactly the stdlib's class), pass a bytes hostname,
and look at the stdlib error classes and texts.

Injected mode: trio.open_ssl_over_tcp_stream and anyio.connect_tcp without a context build their
own with ssl.create_default_context(), which finds the test CA through SSL_CERT_FILE."""
import functools
import ssl

import anyio
import anyio.streams.tls
import pytest
import trio

from support.dropin import (
    HOST,
    TEST_TIMEOUT,
    assert_untrusted_issuer,
    body_for,
    fetch_blocking,
    http_request,
    http_response,
    parse_response,
)

ANYIO_BACKENDS = ["asyncio", "trio"]


async def get_over(stream, send, receive, path, host):
    """One GET over a byte stream's `send`/`receive`: (status, body)."""
    await send(http_request(path, host))
    data = b""
    while True:
        parsed = parse_response(data)
        if parsed is not None:
            return parsed
        chunk = await receive()
        if not chunk:
            raise AssertionError("connection closed mid-response: %r" % data)
        data += chunk


async def serve_one_request(receive, send):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await receive()
        if not chunk:
            return
        data += chunk
    await send(http_response(data.split(b" ", 2)[1].decode("ascii")))


# --- trio --------------------------------------------------------------------------------------

async def trio_connect(tls_mode, port):
    if tls_mode.injected:
        stream = await trio.open_ssl_over_tcp_stream(HOST, port)  # trio's own default context
    else:
        tcp = await trio.open_tcp_stream(HOST, port)
        stream = trio.SSLStream(tcp, tls_mode.client_context(), server_hostname="localhost")
    await stream.do_handshake()
    return stream


def test_trio_client(tls_mode, https_server):
    async def main():
        with trio.fail_after(TEST_TIMEOUT):
            stream = await trio_connect(tls_mode, https_server.port)
            async with stream:
                return await get_over(stream, stream.send_all, stream.receive_some,
                                      "/trio-client", "localhost")

    assert trio.run(main) == (200, body_for("/trio-client"))
    tls_mode.check_engine()


def test_trio_client_untrusted(tls_mode, untrusted_server):
    async def main():
        with trio.fail_after(TEST_TIMEOUT):
            with pytest.raises(trio.BrokenResourceError) as info:
                await trio_connect(tls_mode, untrusted_server.port)
            return info.value

    error = trio.run(main)
    assert isinstance(error.__cause__, ssl.SSLCertVerificationError), repr(error.__cause__)
    assert_untrusted_issuer(error.__cause__)
    tls_mode.check_engine()


def test_trio_server(tls_mode, server_cert, reference_client_context):
    server_ctx = tls_mode.server_context(server_cert)

    async def handler(stream):
        async with stream:
            await serve_one_request(stream.receive_some, stream.send_all)

    async def main():
        with trio.fail_after(TEST_TIMEOUT):
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    functools.partial(trio.serve_ssl_over_tcp, host=HOST), handler, 0, server_ctx
                )
                port = listeners[0].transport_listener.socket.getsockname()[1]
                results = []
                for path in ("/trio-server/1", "/trio-server/2"):
                    results.append(await trio.to_thread.run_sync(
                        fetch_blocking, port, path, reference_client_context
                    ))
                nursery.cancel_scope.cancel()
            return results

    assert trio.run(main) == [(200, body_for("/trio-server/%d" % i)) for i in (1, 2)]
    tls_mode.check_engine(server_side=True)


# --- anyio -------------------------------------------------------------------------------------

@pytest.fixture(params=ANYIO_BACKENDS)
def anyio_backend(request):
    return request.param


async def anyio_connect(tls_mode, port):
    if tls_mode.injected:       # anyio makes its own context: ssl.create_default_context()
        return await anyio.connect_tcp(HOST, port, tls=True, tls_hostname="localhost")
    return await anyio.connect_tcp(
        HOST, port, tls=True, ssl_context=tls_mode.client_context(), tls_hostname="localhost"
    )


def test_anyio_client(tls_mode, anyio_backend, https_server):
    async def main():
        with anyio.fail_after(TEST_TIMEOUT):
            stream = await anyio_connect(tls_mode, https_server.port)
            async with stream:
                assert isinstance(stream.extra(anyio.streams.tls.TLSAttribute.ssl_object),
                                  ssl.SSLObject)
                return await get_over(stream, stream.send, stream.receive,
                                      "/anyio-client", "localhost")

    assert anyio.run(main, backend=anyio_backend) == (200, body_for("/anyio-client"))
    tls_mode.check_engine()


def test_anyio_client_untrusted(tls_mode, anyio_backend, untrusted_server):
    async def main():
        with anyio.fail_after(TEST_TIMEOUT):
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await anyio_connect(tls_mode, untrusted_server.port)
            return info.value

    assert_untrusted_issuer(anyio.run(main, backend=anyio_backend))
    tls_mode.check_engine()


def test_anyio_server(tls_mode, anyio_backend, server_cert, reference_client_context):
    server_ctx = tls_mode.server_context(server_cert)

    async def handler(stream):
        async with stream:
            async def receive():
                try:
                    return await stream.receive()
                except anyio.EndOfStream:
                    return b""
            await serve_one_request(receive, stream.send)

    async def main():
        with anyio.fail_after(TEST_TIMEOUT):
            tcp = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
            # standard_compatible=False, as for HTTPS: HTTP clients close without close_notify
            listener = anyio.streams.tls.TLSListener(tcp, server_ctx, standard_compatible=False)
            port = tcp.extra(anyio.abc.SocketAttribute.local_port)
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, handler)
                results = []
                for path in ("/anyio-server/1", "/anyio-server/2"):
                    results.append(await anyio.to_thread.run_sync(
                        fetch_blocking, port, path, reference_client_context
                    ))
                tg.cancel_scope.cancel()
            await listener.aclose()
            return results

    results = anyio.run(main, backend=anyio_backend)
    assert results == [(200, body_for("/anyio-server/%d" % i)) for i in (1, 2)]
    tls_mode.check_engine(server_side=True)
