"""Benchmark rows for the drop-in layer: fasttls.SSLContext against ssl.SSLContext under the code
people actually run (create_default_context, requests, asyncio, http.client).

Each row's stdlib side is the same code with the stdlib's context; the HTTPS peer is one
stdlib-ssl `http.server` process shared by both sides."""
import asyncio
import http.client
import os
import ssl
import sys

from fasttls.bench.harness import HOSTNAME, BenchError, Row
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


def dropin_contexts(env, side):
    """(server, client) contexts of the drop-in rows: `side`'s SSLContext with the benchmark
    certificate, and its create_default_context() trusting it."""
    lib = _library(side)
    server_ctx = lib.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(env.certfile, env.keyfile)
    client_ctx = lib.create_default_context(cadata=env.cert_pem.decode())
    return server_ctx, client_ctx


class AsyncioEcho:
    """An asyncio TLS echo server and one client connection, both on the library measured,
    driven by `loop` (a private event loop, closed with the Env; by default a new asyncio one).

    Both ends' ciphers are checked. `transport_check(transport)`, if given, is called with the
    client's transport (e.g. to make sure fasttls.aio's transport, not sslproto, carries it)."""

    def __init__(self, env, side, loop=None, transport_check=None):
        self.loop = loop = loop or asyncio.new_event_loop()
        server_ctx, client_ctx = dropin_contexts(env, side)

        self._handlers = set()      # the server's connection tasks, awaited by close()

        async def echo(reader, writer):
            self._handlers.add(asyncio.current_task())
            env.check_cipher(side, "server", writer.get_extra_info("ssl_object"))
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

        try:
            self.server, self.reader, self.writer = loop.run_until_complete(
                asyncio.wait_for(start(), 10))
        except BaseException:
            loop.close()
            raise
        env.on_close(self.close)
        env.check_cipher(side, "client", self.writer.get_extra_info("ssl_object"))
        if transport_check:
            transport_check(self.writer.transport)

    def close(self):
        async def stop():
            self.writer.close()
            self.server.close()
            await self.server.wait_closed()
            if self._handlers:      # each sees the client's EOF and ends (Python < 3.12 does
                await asyncio.wait(self._handlers)      # not wait for them in wait_closed)

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

    def runner(self, size):
        """``run(n)``: n round trips of a random `size`-byte message; returns bytes echoed. The
        first echo is compared with what was sent."""
        message = os.urandom(size)

        async def once():
            self.writer.write(message)
            return await self.reader.readexactly(size)

        if self.loop.run_until_complete(asyncio.wait_for(once(), 10)) != message:
            raise BenchError("asyncio echo: the echo differs from what was sent")
        return lambda n: self.round_trips(message, n)


def setup_asyncio_small(env, side):
    return AsyncioEcho(env, side).runner(64)


def setup_asyncio_bulk(env, side):
    return AsyncioEcho(env, side).runner(BLOCK)


ROWS = [
    Row("ctx_default", "create_default_context()", "contexts/s", 1, 1, 50.0,
        setup_default_context),
    Row("requests", "requests.get, new Session each", "requests/s", 1, 1, 3.0,
        setup_requests, seconds=0.3, repeat=5, requires="requests"),
    Row("http_client", "http.client keep-alive GET", "requests/s", 1, 1, 1.1,
        setup_http_client, seconds=0.2, repeat=9),
    Row("asyncio_64", "asyncio TLS echo, 64 B", "round trips/s", 1, 64, 1.3,
        setup_asyncio_small, seconds=0.2, repeat=9),
    Row("asyncio_1m", "asyncio TLS echo, 1 MiB", "MB/s", BLOCK / 1e6, BLOCK, 1.1,
        setup_asyncio_bulk, seconds=0.3, repeat=5),
]
