"""aiohttp (client and server), uvicorn and hypercorn on fasttls.aio, with fasttls contexts.

Each server runs on its own loop in a thread, serving a listening socket on 127.0.0.1 that the
test made (so connections wait in its backlog: no startup to poll for). The client is aiohttp,
on the test's own loop. Both loops are of one kind per test, asyncio's selector loop or uvloop,
patched with fasttls.aio.patch_loop. Every exchange is a GET whose response is a few hundred
KiB and a POST of a few hundred KiB that the server echoes, both compared byte for byte; once
more with hypercorn over HTTP/2 (ALPN), from httpx.

That the connections really ran on fasttls.aio is checked on both ends: every transport the
client's and the server's protocols were given is a fasttls.aio transport (of the kind the
loop makes) whose `sslcontext` is a fasttls.SSLContext. The loops record them: their
create_connection / create_server (which asyncio.start_server and every framework here use)
wrap the protocol factory so that connection_made notes its transport. aiohttp's server
protocol has __slots__ (its connection_made cannot be wrapped): there the request handlers
note `request.transport` instead.

The frameworks build their server contexts their own way: uvicorn with `ssl.SSLContext(...)`
(reached by `fasttls.inject_into_ssl()` while it loads its config), hypercorn with
`ssl.create_default_context(...)` captured at its import (replaced in its module for the
test), aiohttp from the context it is given.
"""
import asyncio
import os
import random
import socket
import ssl
import sys
import threading

import pytest

import fasttls
import fasttls.aio
from support.requires import require_module

HOST = "127.0.0.1"
IO_TIMEOUT = 20.0     # seconds: a whole client exchange; a server thread's start and stop
GET_SIZE = 384 * 1024
POST_SIZE = 320 * 1024
GET_BODY = random.Random(1).getrandbits(8 * GET_SIZE).to_bytes(GET_SIZE, "little")
POST_BODY = random.Random(2).getrandbits(8 * POST_SIZE).to_bytes(POST_SIZE, "little")


# ---- loops that record the transports their connections get ----

LOOP_KINDS = ["selector"] + (["uvloop"] if sys.platform != "win32" else [])  # no uvloop there


def recording_loop(kind):
    """(a loop of `kind` patched by fasttls.aio, the list of the transports its connections'
    protocols get in connection_made)."""
    if kind == "uvloop":
        loop = require_module("uvloop").new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()
    loop = fasttls.aio.patch_loop(loop)
    made = []
    for name in ("create_connection", "create_server"):
        setattr(loop, name, _recording(getattr(loop, name), made))
    return loop, made


def _recording(method, made):
    async def recording(protocol_factory, *args, **kwargs):
        return await method(_recording_factory(protocol_factory, made), *args, **kwargs)
    return recording


def _recording_factory(factory, made):
    def make():
        protocol = factory()
        if hasattr(protocol, "__dict__"):  # not aiohttp's server protocol (see the docstring)
            connection_made = protocol.connection_made

            def recording(transport):
                made.append(transport)
                connection_made(transport)

            protocol.connection_made = recording
        return protocol
    return make


def assert_fasttls_transport(transport, kind):
    expected = fasttls.aio.SSLSocketTransport if kind == "selector" else \
        fasttls.aio.SSLLayeredTransport
    assert isinstance(transport, expected), (kind, type(transport))
    assert type(transport).__module__.startswith("fasttls.aio."), type(transport)
    context = transport.get_extra_info("sslcontext")
    assert isinstance(context, fasttls.SSLContext), type(context)


def assert_all_fasttls(made, kind):
    assert made, "no connection was made"
    for transport in made:
        assert_fasttls_transport(transport, kind)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    return request.param


# ---- contexts ----

def server_context(identity):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    identity.leaf.configure_cert(ctx)
    return ctx


def client_context(identity):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    identity.ca.configure_trust(ctx)
    return ctx


# ---- a server on its own loop, in a thread ----

class ServerThread:
    """Runs `serve(listener)` (a coroutine function) on a recording loop of `kind` in a thread
    until `stop(loop)` is called from the loop (at exit). `made`: its connections' transports."""

    def __init__(self, kind, serve, stop):
        self.kind = kind
        self._serve, self._stop = serve, stop
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.loop, self.made = recording_loop(kind)
        self._done = threading.Event()
        self.error = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self):
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(asyncio.wait_for(self._serve(self.listener),
                                                          timeout=10 * IO_TIMEOUT))
        except BaseException as exc:  # reported by check()
            self.error = exc
        finally:
            self._done.set()

    def __enter__(self):
        self._thread.start()
        return self

    def check(self):
        """The server must still be running (a failed start shows here, not as a timeout)."""
        if self._done.is_set():
            raise AssertionError(f"the server stopped: {self.error!r}") from self.error

    def __exit__(self, *exc_info):
        try:
            if not self._done.is_set():
                self.loop.call_soon_threadsafe(self._stop, self.loop)
            assert self._done.wait(IO_TIMEOUT), "the server did not stop"
            self._thread.join(IO_TIMEOUT)
            if self.error is not None and exc_info[0] is None:
                raise self.error
        finally:
            self.listener.close()
            if not self.loop.is_running():
                self.loop.close()


# ---- the client: aiohttp on the test's own patched loop ----

def run_client(kind, port, context):
    """GET and POST over one aiohttp session: (GET body, POST echo, the TLS transports the
    client loop made). (aiohttp's `response.connection` is no way to them: it is None once
    the whole response has arrived.)"""
    aiohttp = require_module("aiohttp")
    loop, made = recording_loop(kind)
    url = f"https://{HOST}:{port}"

    async def exchange():
        timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url + "/get", ssl=context) as response:
                assert response.status == 200, response.status
                got = await response.read()
            async with session.post(url + "/echo", data=POST_BODY, ssl=context,
                                    headers={"content-type": "application/octet-stream"}
                                    ) as response:
                assert response.status == 200, response.status
                echoed = await response.read()
        return got, echoed

    try:
        got, echoed = loop.run_until_complete(asyncio.wait_for(exchange(), IO_TIMEOUT))
        loop.run_until_complete(asyncio.sleep(0))  # let aiohttp's closed connections finish
    finally:
        loop.close()
    return got, echoed, made


def run_httpx_http2(kind, port, context):
    """The same exchange with httpx over HTTP/2 (ALPN h2): httpx does its TLS over memory BIOs
    (fasttls's SSLObject), so only the server's end runs on fasttls.aio; no client transports."""
    httpx = require_module("httpx")
    require_module("h2")  # httpx's HTTP/2 (hypercorn depends on it)
    context.set_alpn_protocols(["h2"])
    loop, _ = recording_loop(kind)
    url = f"https://{HOST}:{port}"

    async def exchange():
        async with httpx.AsyncClient(http2=True, verify=context, timeout=IO_TIMEOUT) as client:
            response = await client.get(url + "/get")
            assert (response.status_code, response.http_version) == (200, "HTTP/2")
            got = response.content
            response = await client.post(url + "/echo", content=POST_BODY)
            assert (response.status_code, response.http_version) == (200, "HTTP/2")
            return got, response.content

    try:
        got, echoed = loop.run_until_complete(asyncio.wait_for(exchange(), IO_TIMEOUT))
    finally:
        loop.close()
    return got, echoed, None


def check_exchange(server, identity, handled=(), client=run_client):
    """One exchange of `client` with `server`; `handled`: transports the server's own handlers
    saw (for a server whose protocol cannot be recorded)."""
    try:
        got, echoed, client_made = client(server.kind, server.port, client_context(identity))
    except BaseException:
        server.check()
        raise
    assert len(got) == GET_SIZE and got == GET_BODY
    assert len(echoed) == POST_SIZE and echoed == POST_BODY
    if client_made is not None:
        assert_all_fasttls(client_made, server.kind)
    assert_all_fasttls(server.made + list(handled), server.kind)


# ---- an ASGI app for uvicorn and hypercorn: GET -> GET_BODY, POST -> its body ----

async def asgi_app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    assert scope["scheme"] == "https", scope["scheme"]
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    payload = GET_BODY if scope["method"] == "GET" else bytes(body)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


# ---- the tests ----

def test_aiohttp_client_and_server(rsa_identity, loop_kind):
    require_module("aiohttp")
    from aiohttp import web

    handled = []  # the transport of each request (aiohttp's protocol is not recorded)

    async def get(request):
        handled.append(request.transport)
        return web.Response(body=GET_BODY, content_type="application/octet-stream")

    async def echo(request):
        handled.append(request.transport)
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    stopping = {}

    async def serve(listener):
        app = web.Application(client_max_size=4 * POST_SIZE)
        app.router.add_get("/get", get)
        app.router.add_post("/echo", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            site = web.SockSite(runner, listener, ssl_context=server_context(rsa_identity))
            await site.start()
            stopping["event"] = asyncio.Event()
            await stopping["event"].wait()
        finally:
            await runner.cleanup()

    def stop(loop):
        stopping["event"].set()

    with ServerThread(loop_kind, serve, stop) as server:
        check_exchange(server, rsa_identity, handled)
    assert len(handled) == 2, handled


def test_uvicorn(rsa_identity, tmp_path, loop_kind):
    uvicorn = require_module("uvicorn")
    paths = rsa_identity.write(tmp_path)
    config = uvicorn.Config(asgi_app, ssl_certfile=str(paths["cert"]),
                            ssl_keyfile=str(paths["key"]), http="h11", lifespan="off",
                            log_level="warning")
    fasttls.inject_into_ssl()  # uvicorn makes its context with ssl.SSLContext(...) in load()
    try:
        config.load()
    finally:
        fasttls.extract_from_ssl()
    assert isinstance(config.ssl, fasttls.SSLContext), type(config.ssl)
    server = uvicorn.Server(config)

    async def serve(listener):
        await server.serve(sockets=[listener])

    def stop(loop):
        server.should_exit = True

    with ServerThread(loop_kind, serve, stop) as runner:
        check_exchange(runner, rsa_identity)


def serve_hypercorn(monkeypatch, identity, tmp_path, loop_kind):
    """A ServerThread running hypercorn (HTTP/1.1 and, by ALPN, HTTP/2)."""
    require_module("hypercorn")
    import hypercorn.asyncio
    import hypercorn.config

    # hypercorn took ssl.create_default_context at import: its own create_ssl_context uses
    # fasttls's through its module's name
    monkeypatch.setattr(hypercorn.config, "create_default_context",
                        fasttls.create_default_context)
    paths = identity.write(tmp_path)
    config = hypercorn.config.Config()
    config.certfile, config.keyfile = str(paths["cert"]), str(paths["key"])
    config.accesslog = config.errorlog = None
    stopping = {}

    async def serve(listener):
        # hypercorn opens its sockets from config.bind: it gets its own descriptor of ours
        config.bind = [f"fd://{os.dup(listener.fileno())}"]
        assert isinstance(config.create_ssl_context(), fasttls.SSLContext)
        stopping["event"] = asyncio.Event()
        await hypercorn.asyncio.serve(asgi_app, config, shutdown_trigger=stopping["event"].wait)

    def stop(loop):
        stopping["event"].set()

    return ServerThread(loop_kind, serve, stop)


def test_hypercorn(rsa_identity, tmp_path, monkeypatch, loop_kind):
    with serve_hypercorn(monkeypatch, rsa_identity, tmp_path, loop_kind) as server:
        check_exchange(server, rsa_identity)


def test_hypercorn_http2(rsa_identity, tmp_path, monkeypatch, loop_kind):
    """HTTP/2: hypercorn picks it from the ALPN of get_extra_info("ssl_object")."""
    with serve_hypercorn(monkeypatch, rsa_identity, tmp_path, loop_kind) as server:
        check_exchange(server, rsa_identity, client=run_httpx_http2)
