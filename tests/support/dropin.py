"""Helpers shared by the drop-in tests (tests/dropin) and their benchmarks
(bench/test_bench_dropin.py); the fixtures (the TLS modes, the reference servers) are in
tests/dropin/conftest.py.

Imported before any test injects fasttls into `ssl`, so the names captured here are the genuine
stdlib ones: the reference peers (the HTTPS server the clients talk to, the client that fetches
from a server under test) always run on the stdlib, whatever mode a test runs in.

Everything is bounded: sockets carry IO_TIMEOUT, threads are joined with JOIN_TIMEOUT, and only
127.0.0.1 is used."""
import contextlib
import http.client
import http.server
import socket
import ssl
import threading

import fasttls
from support.requires import skip_or_fail

# Captured at import, before any injection.
STDLIB_SSLContext = ssl.SSLContext
STDLIB_create_default_context = ssl.create_default_context
STDLIB_SSLSocket = ssl.SSLSocket
STDLIB_SSLObject = ssl.SSLObject

HOST = "127.0.0.1"
IO_TIMEOUT = 10.0     # seconds, for every socket and client call
JOIN_TIMEOUT = 5.0    # seconds, for every thread join
CLOSE_TIMEOUT = 1.0   # seconds a server waits for the client's close_notify
TEST_TIMEOUT = 30.0   # seconds, for a whole async test body
DROPIN_API = ("SSLContext", "create_default_context", "inject_into_ssl", "extract_from_ssl")


def require_dropin():
    """Skip (fail under CI=true) when the drop-in layer is not in this fasttls."""
    missing = [name for name in DROPIN_API if not hasattr(fasttls, name)]
    if missing:
        skip_or_fail("fasttls has no drop-in layer yet (missing: %s)" % ", ".join(missing))


def is_fasttls_context(ctx):
    cls = getattr(fasttls, "SSLContext", None)
    return cls is not None and isinstance(ctx, cls)


def body_for(path):
    """The body every test server answers `path` with, so a client proves it read this response."""
    return b"fasttls drop-in test body for " + path.encode("ascii")


def http_response(path, keep_alive=False):
    body = body_for(path)
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n"
        % (len(body), "keep-alive" if keep_alive else "close")
    )
    return head.encode("ascii") + body


def http_request(path, host="127.0.0.1"):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode("ascii")


def parse_response(data):
    """(status, body) of one complete HTTP/1.1 response with a Content-Length; None if incomplete."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        raise AssertionError("response without Content-Length: %r" % head)
    if len(rest) < length:
        return None
    return status, rest[:length]


def stdlib_client_context(ca):
    """A stdlib client context trusting the test CA (`ca` is a trustme.CA)."""
    ctx = STDLIB_create_default_context()
    ca.configure_trust(ctx)
    return ctx


def stdlib_server_context(cert):
    """A stdlib server context with `cert` (a trustme.LeafCert)."""
    ctx = STDLIB_SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    return ctx


def fetch_blocking(port, path, context, server_hostname=None):
    """GET https://127.0.0.1:port/path with http.client and `context`: (status, body)."""
    conn = http.client.HTTPSConnection(HOST, port, context=context, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, for the clients that pool connections
    disable_nagle_algorithm = True  # headers and body go out in two writes
    timeout = IO_TIMEOUT

    def do_GET(self):
        body = body_for(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class HTTPSServer(http.server.HTTPServer):
    """http.server on 127.0.0.1, one thread per connection, each wrapped with `context`.

    The TLS handshake runs in the connection's thread (not in the accept loop), so a client that
    refuses the certificate, or stalls, cannot hold up the others. Connections are tracked so
    that stop() can wake and join their threads with a timeout."""

    def __init__(self, context):
        self.context = context
        self.errors = []            # unexpected exceptions in connection threads, for diagnosis
        self.handshake_failures = []
        self._lock = threading.Lock()
        self._threads = []
        self._open = set()
        super().__init__((HOST, 0), _Handler)

    @property
    def port(self):
        return self.server_address[1]

    def url(self, path="/"):
        return "https://%s:%d%s" % (HOST, self.port, path)

    def process_request(self, request, client_address):
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address), daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            self._open.add(request)
        thread.start()

    def _serve_connection(self, request, client_address):
        conn = request
        try:
            request.settimeout(IO_TIMEOUT)
            try:
                conn = self.context.wrap_socket(request, server_side=True)
            except OSError as exc:  # ssl.SSLError included: the client refused our certificate
                self.handshake_failures.append(exc)
                return
            with self._lock:
                self._open.discard(request)
                self._open.add(conn)
            self.RequestHandlerClass(conn, client_address, self)
            # A clean close: close_notify, as clients that insist on one (anyio) expect. Bounded:
            # a client that neither answers nor closes costs CLOSE_TIMEOUT.
            conn.settimeout(CLOSE_TIMEOUT)
            conn.unwrap()
        except OSError:
            pass                    # the client went away mid-request
        except Exception as exc:    # noqa: BLE001 - kept for the test's failure message
            self.errors.append(exc)
        finally:
            with self._lock:
                self._open.discard(request)
                self._open.discard(conn)
            conn.close()
            request.close()

    def stop(self):
        """Stop accepting, wake every connection thread and join it (bounded)."""
        with self._lock:
            open_sockets = list(self._open)
            threads = list(self._threads)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown: it wakes a thread blocked in recv without
                # touching the TLS state that thread is using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        self.server_close()


@contextlib.contextmanager
def serve_https(context):
    """Run an HTTPSServer with `context` in a thread; stop it and join everything on exit."""
    httpd = HTTPSServer(context)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()            # returns once serve_forever has left its loop
        thread.join(JOIN_TIMEOUT)
        httpd.stop()


def run_asyncio(make_coro, loop_kind="asyncio", timeout=TEST_TIMEOUT):
    """Run `make_coro()` on a fresh event loop of `loop_kind` ("asyncio" or "uvloop"), bounded.

    A loop per call (not asyncio.run) because uvloop needs loop_factory, which 3.9-3.11 lack."""
    import asyncio

    if loop_kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(make_coro(), timeout))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(
                asyncio.wait_for(loop.shutdown_default_executor(), JOIN_TIMEOUT)
            )
        finally:
            asyncio.set_event_loop(None)
            loop.close()


async def asyncio_get(reader, writer, path, host="127.0.0.1"):
    """One GET over asyncio streams: (status, body)."""
    writer.write(http_request(path, host))
    await writer.drain()
    data = b""
    while True:
        parsed = parse_response(data)
        if parsed is not None:
            return parsed
        chunk = await reader.read(65536)
        if not chunk:
            raise AssertionError("connection closed mid-response: %r" % data)
        data += chunk


async def asyncio_http_handler(reader, writer):
    """A one-request HTTP/1.1 server handler for asyncio.start_server."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode("ascii")
        writer.write(http_response(path))
        await writer.drain()
    finally:
        writer.close()
        import asyncio

        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT)


def cert_error_in(exc):
    """The ssl.SSLCertVerificationError behind a library's exception: `exc` itself or one found
    through __cause__, __context__, `.reason` (urllib, urllib3) or `.args` (requests, urllib3)."""
    seen = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen or not isinstance(current, BaseException):
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        todo += list(current.args)
    return None


def assert_untrusted_issuer(exc):
    """`exc` carries the stdlib's error for a certificate from an unknown CA, with the stdlib's
    attributes: errno SSL_ERROR_SSL, reason CERTIFICATE_VERIFY_FAILED, X509 code 20."""
    err = cert_error_in(exc)
    assert err is not None, "no ssl.SSLCertVerificationError behind %r" % (exc,)
    assert err.errno == ssl.SSL_ERROR_SSL, err.errno
    assert err.reason == "CERTIFICATE_VERIFY_FAILED", err.reason
    assert err.verify_code == 20, (err.verify_code, err.verify_message)
    assert "unable to get local issuer certificate" in err.verify_message, err.verify_message
    assert "certificate verify failed" in str(err), str(err)
    return err


def serve_until_stdin_closes(cert_chain_file):
    """Entry point of a reference server process (the benchmarks keep the server out of the
    measured process): a stdlib HTTPS server with the key and chain in `cert_chain_file`.
    Prints its port, serves until its standard input closes, then stops."""
    import sys

    ctx = STDLIB_SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_chain_file)
    with serve_https(ctx) as httpd:
        print(httpd.port, flush=True)
        sys.stdin.read()
