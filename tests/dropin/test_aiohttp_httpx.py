"""aiohttp (client and server) and httpx (sync and async) over the drop-in, in the three modes
of `tls_mode`.

Injected mode: httpx builds its own context (`verify=True` reads SSL_CERT_FILE and calls
`ssl.create_default_context(cafile=...)`, reached through the patched module). aiohttp's
default contexts (`ssl=True`) are made when aiohttp is imported, so injection cannot reach them;
there the test passes `ssl.create_default_context()`, which injection does reach."""
import aiohttp
import httpx
import pytest
from aiohttp import web

from support.dropin import HOST, IO_TIMEOUT, assert_untrusted_issuer, body_for, run_asyncio


# --- aiohttp -----------------------------------------------------------------------------------

def aiohttp_ssl(tls_mode):
    if tls_mode.injected:
        return tls_mode.default_client_context()    # ssl.create_default_context(), injected
    return tls_mode.client_context()


async def aiohttp_get(url, ssl_context):
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
        url, ssl=ssl_context
    ) as resp:
        return resp.status, await resp.read()


def test_aiohttp_client(tls_mode, https_server):
    url = https_server.url("/aiohttp-client")
    assert run_asyncio(lambda: aiohttp_get(url, aiohttp_ssl(tls_mode))) == (
        200, body_for("/aiohttp-client")
    )
    tls_mode.check_engine()


def test_aiohttp_client_untrusted(tls_mode, untrusted_server):
    async def main():
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await aiohttp_get(untrusted_server.url("/"), aiohttp_ssl(tls_mode))
        return info.value

    error = run_asyncio(main)
    assert_untrusted_issuer(error.certificate_error)
    tls_mode.check_engine()


def test_aiohttp_server(tls_mode, server_cert, reference_client_context):
    async def handler(request):
        return web.Response(body=body_for(request.path), content_type="text/plain")

    async def main():
        app = web.Application()
        app.router.add_get("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.TCPSite(runner, HOST, 0, ssl_context=tls_mode.server_context(server_cert))
            await site.start()
            port = runner.addresses[0][1]
            results = []
            for path in ("/aiohttp-server/1", "/aiohttp-server/2"):
                url = "https://%s:%d%s" % (HOST, port, path)
                results.append(await aiohttp_get(url, reference_client_context))
            return results
        finally:
            await runner.cleanup()

    assert run_asyncio(main) == [(200, body_for("/aiohttp-server/%d" % i)) for i in (1, 2)]
    tls_mode.check_engine(server_side=True)


# --- httpx -------------------------------------------------------------------------------------

def httpx_verify(tls_mode):
    return True if tls_mode.injected else tls_mode.client_context()


def test_httpx_sync(tls_mode, https_server):
    with httpx.Client(verify=httpx_verify(tls_mode), timeout=IO_TIMEOUT) as client:
        for path in ("/httpx-sync/1", "/httpx-sync/2"):
            resp = client.get(https_server.url(path))
            assert (resp.status_code, resp.content) == (200, body_for(path))
    tls_mode.check_engine()


def test_httpx_sync_untrusted(tls_mode, untrusted_server):
    with httpx.Client(verify=httpx_verify(tls_mode), timeout=IO_TIMEOUT) as client, \
            pytest.raises(httpx.ConnectError) as info:
        client.get(untrusted_server.url("/"))
    assert_untrusted_issuer(info.value)
    tls_mode.check_engine()


def test_httpx_async(tls_mode, https_server):
    async def main():
        async with httpx.AsyncClient(verify=httpx_verify(tls_mode), timeout=IO_TIMEOUT) as client:
            results = []
            for path in ("/httpx-async/1", "/httpx-async/2"):
                resp = await client.get(https_server.url(path))
                results.append((resp.status_code, resp.content))
            return results

    assert run_asyncio(main) == [(200, body_for("/httpx-async/%d" % i)) for i in (1, 2)]
    tls_mode.check_engine()


def test_httpx_async_untrusted(tls_mode, untrusted_server):
    async def main():
        async with httpx.AsyncClient(verify=httpx_verify(tls_mode), timeout=IO_TIMEOUT) as client:
            with pytest.raises(httpx.ConnectError) as info:
                await client.get(untrusted_server.url("/"))
            return info.value

    assert_untrusted_issuer(run_asyncio(main))
    tls_mode.check_engine()
