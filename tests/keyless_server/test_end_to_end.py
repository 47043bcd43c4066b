"""The whole keyless path: a TLS client (the stdlib, openssl s_client) handshakes with a fasttls
edge that holds only the certificate; the edge's KeylessClient gets the signature from the key
server. Edges: the drop-in SSLSocket (blocking, the socket's timeout) and fasttls.aio."""
import asyncio
import socket
import ssl
import subprocess
import threading
import time

import pytest

import fasttls
import fasttls.aio
import fasttls.keyless as keyless
from support.accept import accept_until, local_listener
from support.requires import require_program

from .conftest import ALLOWED_EDGE

RESPONSE = b"signed elsewhere\n"


class DropinEdge:
    """A keyless edge on the drop-in: one thread per connection, each a server SSLSocket whose
    handshake blocks in KeylessClient.sign with the socket's timeout. `errors` keeps what each
    handshake raised."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.errors = []
        self.listener = local_listener()
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept)
        self.acceptor.start()

    def _accept(self):
        accept_until(self.listener, self.stop, self._start_serving)

    def _start_serving(self, sock):
        thread = threading.Thread(target=self._serve, args=(sock,))
        self.threads.append(thread)
        thread.start()

    def _serve(self, sock):
        sock.settimeout(5)
        try:
            with self.ctx.wrap_socket(sock, server_side=True) as tls:
                tls.recv(100)
                tls.sendall(RESPONSE)
        except Exception as exc:  # recorded for the test to assert on
            self.errors.append(exc)
        finally:
            sock.close()

    def close(self):
        self.stop.set()
        self.acceptor.join(5)
        for thread in self.threads:
            thread.join(10)
        self.listener.close()


def web_context(pki, name, signer):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf = pki.unknown_web if name == "unknown" else pki.signing[name]
    chain = pki.dir / f"web-{name}-chain.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    ctx.load_keyless_cert_chain(str(chain), signer)
    return ctx


def client_context(pki, version):
    ctx = ssl.create_default_context(cafile=str(pki.web_ca))
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def stdlib_client(pki, port, name, version, session=None, ctx=None):
    ctx = ctx or client_context(pki, version)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=f"www-{name}.example",
                             session=session) as tls:
            tls.sendall(b"hello")
            data = tls.recv(100)
            return data, tls.session, tls.session_reused


@pytest.fixture
def edge(pki, key_server, make_client):
    edges = []

    def make(name, timeout=5.0):
        client = make_client(key_server.port, timeout=timeout)
        e = DropinEdge(web_context(pki, name, client))
        edges.append(e)
        return e

    yield make
    for e in edges:
        e.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
@pytest.mark.parametrize("name", ["p256", "rsa"])
def test_stdlib_client_through_the_edge_and_key_server(pki, key_server, edge, name, version):
    e = edge(name)
    ctx = client_context(pki, version)
    data, session, reused = stdlib_client(pki, e.port, name, version, ctx=ctx)
    assert data == RESPONSE and not reused
    assert e.errors == []
    assert key_server.stats["OK"] == 1
    # A resumed handshake needs no signature.
    data, _, reused = stdlib_client(pki, e.port, name, version, session, ctx=ctx)
    assert data == RESPONSE and reused
    assert key_server.stats["OK"] == 1


def test_openssl_client_rsa_pkcs1_on_tls12(pki, key_server, edge, tmp_path):
    openssl = require_program("openssl")
    e = edge("rsa")
    done = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{e.port}", "-tls1_2", "-sigalgs",
         "RSA+SHA256", "-servername", "www-rsa.example", "-CAfile", str(pki.web_ca),
         "-verify_return_error", "-ign_eof"],
        input=b"hello", capture_output=True, timeout=30, cwd=tmp_path)
    # (s_client's exit status is 1 here: the edge closes without close_notify, as the stdlib
    # does, and s_client calls that an unexpected EOF.)
    assert RESPONSE in done.stdout, done.stderr[-2000:]
    assert b"Verify return code: 0 (ok)" in done.stdout
    assert b"Peer signature type: RSA\n" in done.stdout  # PKCS#1 v1.5 (not RSA-PSS)
    assert key_server.stats["OK"] == 1


def test_unknown_key_fails_the_handshake_naming_it(pki, key_server, edge):
    e = edge("unknown")
    with pytest.raises(ssl.SSLError, match="INTERNAL_ERROR"):
        stdlib_client(pki, e.port, "unknown", ssl.TLSVersion.TLSv1_3)
    for _ in range(100):
        if e.errors:
            break
        time.sleep(0.05)
    (error,) = e.errors
    assert isinstance(error, fasttls.KeylessError) and error.reason == "UNKNOWN_KEY_ID", error


def test_key_server_gone_fails_the_handshake_within_the_timeout(pki, make_client):
    server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE]).start_thread()
    client = make_client(server.port, timeout=2)
    e = DropinEdge(web_context(pki, "p256", client))
    try:
        assert stdlib_client(pki, e.port, "p256", ssl.TLSVersion.TLSv1_3)[0] == RESPONSE
        server.stop_thread()
        started = time.monotonic()
        with pytest.raises(ssl.SSLError):
            stdlib_client(pki, e.port, "p256", ssl.TLSVersion.TLSv1_3)
        assert time.monotonic() - started < 5
        for _ in range(100):
            if e.errors:
                break
            time.sleep(0.05)
        (error,) = e.errors
        assert isinstance(error, fasttls.KeylessError)
        assert error.reason in ("CONNECTION_LOST", "UNREACHABLE"), error
    finally:
        e.close()


def test_aio_edge_serves_concurrent_handshakes(pki, key_server, make_client):
    client = make_client(key_server.port)
    ctx = web_context(pki, "p256", client)
    client_ctx = ssl.create_default_context(cafile=str(pki.web_ca))

    async def main():
        async def handle(reader, writer):
            await reader.read(5)
            writer.write(RESPONSE)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]

        async def one():
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="www-p256.example")
            writer.write(b"hello")
            data = await reader.read()
            writer.close()
            return data

        try:
            return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(20))), 30)
        finally:
            server.close()
            await server.wait_closed()

    loop = fasttls.aio.new_event_loop()
    try:
        results = loop.run_until_complete(main())
    finally:
        loop.close()
    assert results == [RESPONSE] * 20
    assert key_server.stats["OK"] == 20
