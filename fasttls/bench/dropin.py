"""Benchmark rows for the drop-in layer: fasttls.SSLContext against ssl.SSLContext under the code
people actually run (create_default_context, requests, asyncio, http.client).

Each row's stdlib side is the same code with the stdlib's context; the HTTPS peer is one
stdlib-ssl `http.server` process shared by both sides."""
import asyncio
import http.client
import os
import ssl
import sys

from fasttls.bench.harness import HOSTNAME, Row
from fasttls.bench.peer import BLOCK, announce_peer, make_std_server_ctx

HTTP_BODY = b"ok\n"
HTTP_PEER = "fasttls.bench.dropin:http_peer_main"


def http_peer_main():
    """The HTTPS peer: argv = certfile keyfile; prints "host port"; exits when stdin closes."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(HTTP_BODY)))
            self.end_headers()
            self.wfile.write(HTTP_BODY)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = make_std_server_ctx(sys.argv[1], sys.argv[2]).wrap_socket(
        server.socket, server_side=True)
    announce_peer(*server.server_address[:2])
    server.serve_forever()


def _library(side):
    import fasttls

    return fasttls if side == "fasttls" else ssl


def _ca_bundle(env):
    """A CA file as large as a real one: the system bundle plus the benchmark's CA, so loading
    it costs what a real client pays (requests' certifi bundle is about as large)."""
    path = os.path.join(env.tmpdir, "bundle.pem")
    if not os.path.exists(path):
        system = ssl.get_default_verify_paths().cafile
        with open(path, "wb") as out:
            if system and os.path.exists(system):
                with open(system, "rb") as f:
                    out.write(f.read())
            out.write(env.cert_pem)
    return path


def setup_default_context(env, side):
    make = _library(side).create_default_context

    def run(n):
        for _ in range(n):
            make()
        return n

    return run


def setup_requests(env, side):
    """A new requests.Session per GET, as scripts and many services do."""
    import requests

    import fasttls

    url = "https://%s:%d/" % (HOSTNAME, env.peer(HTTP_PEER)[1])
    bundle = _ca_bundle(env)

    def get_all(n):
        total = 0
        for _ in range(n):
            with requests.Session() as session:
                response = session.get(url, verify=bundle, timeout=10)
                total += len(response.content)
        return total

    def run(n):
        if side != "fasttls":
            return get_all(n) // len(HTTP_BODY)
        fasttls.inject_into_ssl()
        try:
            return get_all(n) // len(HTTP_BODY)
        finally:
            fasttls.extract_from_ssl()

    return run


def setup_http_client(env, side):
    """http.client keep-alive GET loop over one connection."""
    port = env.peer(HTTP_PEER)[1]
    ctx = _library(side).create_default_context(cafile=_ca_bundle(env))
    conn = http.client.HTTPSConnection(HOSTNAME, port, context=ctx, timeout=10)
    env.on_close(conn.close)

    def run(n):
        count = 0
        for _ in range(n):
            conn.request("GET", "/")
            if conn.getresponse().read() == HTTP_BODY:
                count += 1
        return count

    return run


class _AsyncioEcho:
    """An asyncio TLS echo server and one client connection, both on the library measured,
    driven by a private event loop."""

    def __init__(self, env, side):
        lib = _library(side)
        self.loop = asyncio.new_event_loop()
        server_ctx = lib.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(env.certfile, env.keyfile)
        client_ctx = lib.create_default_context(cadata=env.cert_pem.decode())

        async def echo(reader, writer):
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            writer.close()

        async def start():
            server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname=HOSTNAME)
            return server, reader, writer

        self.server, self.reader, self.writer = self.loop.run_until_complete(start())
        env.on_close(self.close)

    def close(self):
        async def stop():
            self.writer.close()
            self.server.close()
            await self.server.wait_closed()

        try:
            self.loop.run_until_complete(asyncio.wait_for(stop(), 5))
        finally:
            self.loop.close()

    def round_trips(self, message, n):
        reader, writer, size = self.reader, self.writer, len(message)

        async def go():
            total = 0
            for _ in range(n):
                writer.write(message)
                total += len(await reader.readexactly(size))
            return total

        return self.loop.run_until_complete(go())


def setup_asyncio_small(env, side):
    echo = _AsyncioEcho(env, side)
    message = os.urandom(64)
    return lambda n: echo.round_trips(message, n)


def setup_asyncio_bulk(env, side):
    echo = _AsyncioEcho(env, side)
    block = os.urandom(BLOCK)
    return lambda n: echo.round_trips(block, n)


ROWS = [
    Row("ctx_default", "create_default_context()", "contexts/s", 1, 1, 50.0,
        setup_default_context),
    Row("requests", "requests.get, new Session each", "requests/s", 1, 1, 3.0,
        setup_requests, seconds=0.3, repeat=5, requires="requests"),
    Row("http_client", "http.client keep-alive GET", "requests/s", 1, 1, 1.0,
        setup_http_client, seconds=0.2, repeat=9),
    Row("asyncio_64", "asyncio TLS echo, 64 B", "round trips/s", 1, 64, 1.3,
        setup_asyncio_small, seconds=0.2, repeat=9),
    Row("asyncio_1m", "asyncio TLS echo, 1 MiB", "MB/s", BLOCK / 1e6, BLOCK, 1.1,
        setup_asyncio_bulk, seconds=0.3, repeat=5),
]
