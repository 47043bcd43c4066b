"""How loops come to use fasttls.aio: patch_loop, install/uninstall, loop_factory, and every way
of opening a TLS connection (sock=, connect_accepted_socket, unix sockets, ssl=True); contexts
that are not fasttls's keep asyncio's (or uvloop's) own SSL transport."""
import asyncio
import os
import socket
import ssl
import sys
import tempfile

import pytest
from support.dropin import STDLIB_SSLContext

import fasttls
import fasttls.aio
from aio.conftest import (
    BAR,
    HOST,
    BlockingPeer,
    Recorder,
    assert_fasttls_transport,
    bounded,
    close_loop,
    fasttls_client_context,
    fasttls_server_context,
    new_loop,
    read_exactly,
    stdlib_client_context,
    stdlib_server_context,
    uvloop,
)

if BAR:
    pytestmark = pytest.mark.skip(reason="FASTTLS_AIO_BAR=stdlib: these tests are about which "
                                         "transport a loop makes")


def pong(tls, peer):
    """The peer's side of every exchange here: ping -> pong, then the orderly close."""
    assert read_exactly(tls, 4) == b"ping"
    tls.sendall(b"pong")
    while tls.recv(65536):
        pass
    tls.unwrap()
    return "clean"


def ping(tls, peer):
    tls.sendall(b"ping")
    assert read_exactly(tls, 4) == b"pong"
    tls.unwrap()  # close_notify; the fasttls end answers
    return "clean"


class Pong(Recorder):
    """The fasttls server's protocol: answers ping with pong."""

    def data_received(self, data):
        super().data_received(data)
        if bytes(self.received) == b"ping":
            self.transport.write(b"pong")


async def ping_over(transport, protocol, peer):
    """The fasttls client's side of the exchange; returns the transport's class."""
    transport.write(b"ping")
    assert await protocol.wait_bytes(4) == b"pong"
    transport.close()
    assert await bounded(protocol.lost) is None
    assert await peer.result() == "clean"
    peer.join()
    return type(transport)


async def client_exchange(loop, ctx, identity, **kwargs):
    """A TLS client connection from `loop` with `ctx` to a stdlib server; its transport class."""
    peer = BlockingPeer.serve(pong, stdlib_server_context(identity))
    transport, protocol = await bounded(loop.create_connection(
        Recorder, HOST, peer.port, ssl=ctx, server_hostname="localhost", **kwargs))
    return await ping_over(transport, protocol, peer)


async def server_exchange(loop, ctx, identity, client_ctx=None):
    """A TLS server on `loop` with `ctx`, a stdlib client; the transport class it made."""
    made = loop.create_future()

    def factory():
        protocol = Pong()
        made.set_result(protocol)
        return protocol

    server = await loop.create_server(factory, HOST, 0, ssl=ctx)
    peer = BlockingPeer.connect(ping, client_ctx or stdlib_client_context(identity),
                                (HOST, server.sockets[0].getsockname()[1]))
    protocol = await bounded(made)
    assert await peer.result() == "clean"
    assert await bounded(protocol.lost) is None
    peer.join()
    server.close()
    await bounded(server.wait_closed())
    return type(protocol.transport)


def exchange_as(loop, side, ctx, identity, client_ctx=None):
    """One exchange with `loop` as the TLS end of role `side`, using `ctx` (a stdlib client
    `client_ctx` talks to a server); the transport class it made."""
    if side == "client":
        return run_on(loop, client_exchange(loop, ctx, identity))
    return run_on(loop, server_exchange(loop, ctx, identity, client_ctx))


def stdlib_transport_class(loop_kind):
    """The transport asyncio (or uvloop) makes for a context that is not fasttls's."""
    if loop_kind == "selector":
        return asyncio.sslproto._SSLProtocolTransport
    return None  # uvloop's own, a class of uvloop's C code: only "not fasttls's" is checked


def assert_not_fasttls(cls, loop_kind):
    assert not issubclass(cls, fasttls.aio.SSLTransport), cls
    expected = stdlib_transport_class(loop_kind)
    if expected is not None:
        assert issubclass(cls, expected), cls


def run_on(loop, coro, timeout=30):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


@pytest.fixture
def installed():
    """fasttls.aio.install() for the test, uninstall() after it whatever happens."""
    fasttls.aio.install()
    try:
        yield
    finally:
        fasttls.aio.uninstall()


@pytest.fixture
def fresh_loop(loop_kind):
    """An unpatched loop of `loop_kind` (the test decides what happens to it)."""
    loop = new_loop(loop_kind)
    try:
        yield loop
    finally:
        close_loop(loop)


# ---------------------------------------------------------------- patch_loop

def test_patch_loop_is_idempotent(fresh_loop, loop_kind, rsa_identity):
    assert fasttls.aio.patch_loop(fresh_loop) is fresh_loop
    patched = dict(vars(fresh_loop))
    assert fasttls.aio.patch_loop(fresh_loop) is fresh_loop
    assert dict(vars(fresh_loop)) == patched  # nothing wrapped twice
    cls = run_on(fresh_loop, client_exchange(fresh_loop, fasttls_client_context(rsa_identity),
                                             rsa_identity))
    assert_fasttls_transport_class(cls, loop_kind)


def assert_fasttls_transport_class(cls, loop_kind):
    expected = (fasttls.aio.SSLSocketTransport if loop_kind == "selector"
                else fasttls.aio.SSLLayeredTransport)
    assert issubclass(cls, expected), cls


def test_unpatched_loop_keeps_its_own_transport(fresh_loop, loop_kind, rsa_identity):
    """Without patch_loop/install, a fasttls.SSLContext goes through asyncio's sslproto (over
    fasttls's SSLObject) or uvloop's SSL."""
    cls = run_on(fresh_loop, client_exchange(fresh_loop, fasttls_client_context(rsa_identity),
                                             rsa_identity))
    assert_not_fasttls(cls, loop_kind)


@pytest.mark.parametrize("side", ["client", "server"])
def test_stdlib_context_on_patched_loop(fresh_loop, loop_kind, side, rsa_identity):
    """A stdlib ssl.SSLContext on a patched loop keeps asyncio's (uvloop's) own transport."""
    fasttls.aio.patch_loop(fresh_loop)
    if side == "client":
        ctx, client_ctx = stdlib_client_context(rsa_identity), None
    else:
        # Python 3.9's sslproto ends TCP without answering close_notify: a client with the
        # stdlib's default options (3.9 ignores such an EOF) for asyncio's own transport.
        ctx, client_ctx = stdlib_server_context(rsa_identity), STDLIB_SSLContext(
            ssl.PROTOCOL_TLS_CLIENT)
        rsa_identity.ca.configure_trust(client_ctx)
    assert_not_fasttls(exchange_as(fresh_loop, side, ctx, rsa_identity, client_ctx), loop_kind)


@pytest.mark.parametrize("side", ["client", "server"])
def test_fasttls_context_on_patched_loop(fresh_loop, loop_kind, side, rsa_identity):
    fasttls.aio.patch_loop(fresh_loop)
    ctx = (fasttls_client_context if side == "client" else fasttls_server_context)(rsa_identity)
    assert_fasttls_transport_class(exchange_as(fresh_loop, side, ctx, rsa_identity), loop_kind)


# ---------------------------------------------------------------- install / uninstall

def exchange_on_new_loop(make_loop, identity):
    loop = make_loop()
    try:
        return run_on(loop, client_exchange(loop, fasttls_client_context(identity), identity))
    finally:
        close_loop(loop)


def test_install_new_event_loop(installed, rsa_identity):
    fasttls.aio.install()  # idempotent
    cls = exchange_on_new_loop(asyncio.new_event_loop, rsa_identity)
    assert issubclass(cls, fasttls.aio.SSLSocketTransport), cls
    cls = exchange_on_new_loop(asyncio.SelectorEventLoop, rsa_identity)
    assert issubclass(cls, fasttls.aio.SSLSocketTransport), cls


def test_install_asyncio_run(installed, rsa_identity):
    async def main():
        loop = asyncio.get_running_loop()
        return await client_exchange(loop, fasttls_client_context(rsa_identity), rsa_identity)

    cls = asyncio.run(asyncio.wait_for(main(), 30))
    assert issubclass(cls, fasttls.aio.SSLSocketTransport), cls


@pytest.mark.skipif(uvloop is None, reason="uvloop is not available on this platform")
def test_install_uvloop(installed, rsa_identity):
    cls = exchange_on_new_loop(uvloop.new_event_loop, rsa_identity)
    assert issubclass(cls, fasttls.aio.SSLLayeredTransport), cls


def test_uninstall_restores_asyncio(rsa_identity, loop_kind):
    make = uvloop.new_event_loop if loop_kind == "uvloop" else asyncio.new_event_loop
    patched = fasttls.aio.patch_loop(new_loop(loop_kind))  # patched on its own: stays patched
    fasttls.aio.install()
    try:
        fasttls.aio.uninstall()
        fasttls.aio.uninstall()  # idempotent
        assert_not_fasttls(exchange_on_new_loop(make, rsa_identity), loop_kind)
        cls = run_on(patched, client_exchange(patched, fasttls_client_context(rsa_identity),
                                              rsa_identity))
        assert_fasttls_transport_class(cls, loop_kind)
    finally:
        fasttls.aio.uninstall()
        close_loop(patched)


def test_patch_loop_during_install_survives_uninstall(rsa_identity, loop_kind):
    fasttls.aio.install()
    patched = fasttls.aio.patch_loop(new_loop(loop_kind))
    try:
        fasttls.aio.uninstall()
        cls = run_on(patched, client_exchange(patched, fasttls_client_context(rsa_identity),
                                              rsa_identity))
        assert_fasttls_transport_class(cls, loop_kind)
    finally:
        fasttls.aio.uninstall()
        close_loop(patched)


# ---------------------------------------------------------------- loop_factory

@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in Python 3.11")
def test_loop_factory_runner(rsa_identity):
    async def main():
        loop = asyncio.get_running_loop()
        return await client_exchange(loop, fasttls_client_context(rsa_identity), rsa_identity)

    with asyncio.Runner(loop_factory=fasttls.aio.loop_factory) as runner:
        cls = runner.run(asyncio.wait_for(main(), 30))
    assert issubclass(cls, fasttls.aio.SSLSocketTransport), cls


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=) is new in Python 3.12")
def test_loop_factory_asyncio_run(rsa_identity):
    async def main():
        loop = asyncio.get_running_loop()
        return await client_exchange(loop, fasttls_client_context(rsa_identity), rsa_identity)

    cls = asyncio.run(asyncio.wait_for(main(), 30), loop_factory=fasttls.aio.loop_factory)
    assert issubclass(cls, fasttls.aio.SSLSocketTransport), cls


def test_new_event_loop_is_patched():
    loop = fasttls.aio.new_event_loop()
    try:
        assert fasttls.aio.patch_loop(loop) is loop
        assert getattr(loop, "_fasttls_aio", False)
    finally:
        loop.close()


# ---------------------------------------------------------------- other ways of connecting

def test_create_connection_sock(loop, loop_kind, run, rsa_identity):
    async def main():
        peer = BlockingPeer.serve(pong, stdlib_server_context(rsa_identity))
        sock = socket.create_connection((HOST, peer.port), timeout=5)
        sock.setblocking(False)
        transport, protocol = await bounded(loop.create_connection(
            Recorder, sock=sock, ssl=fasttls_client_context(rsa_identity),
            server_hostname="localhost"))
        assert_fasttls_transport(transport, loop_kind)
        assert transport.get_extra_info("peername") == (HOST, peer.port)
        await ping_over(transport, protocol, peer)

    run(main())


def test_connect_accepted_socket(loop, loop_kind, run, rsa_identity):
    async def main():
        with socket.create_server((HOST, 0)) as listener:
            peer = BlockingPeer.connect(ping, stdlib_client_context(rsa_identity),
                                        listener.getsockname())
            listener.settimeout(5)
            conn, _ = listener.accept()
        conn.setblocking(False)
        transport, protocol = await bounded(loop.connect_accepted_socket(
            Pong, conn, ssl=fasttls_server_context(rsa_identity)))
        assert_fasttls_transport(transport, loop_kind)
        assert await peer.result() == "clean"
        assert await bounded(protocol.lost) is None
        assert bytes(protocol.received) == b"ping"
        peer.join()

    run(main())


@pytest.fixture
def unix_path(tmp_path):
    """A unix socket path under tmp_path, or a shorter directory when tmp_path is too long
    for sun_path (108 bytes)."""
    path = tmp_path / "tls.sock"
    if len(str(path)) < 100:
        yield str(path)
        return
    directory = tempfile.mkdtemp(prefix="fasttls-aio-")
    try:
        yield os.path.join(directory, "tls.sock")
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets on this platform")
def test_unix_connection(loop, loop_kind, run, rsa_identity, unix_path):
    async def main():
        peer = BlockingPeer.serve(pong, stdlib_server_context(rsa_identity),
                                  family=socket.AF_UNIX, path=unix_path)
        transport, protocol = await bounded(loop.create_unix_connection(
            Recorder, unix_path, ssl=fasttls_client_context(rsa_identity),
            server_hostname="localhost"))
        assert_fasttls_transport(transport, loop_kind)
        await ping_over(transport, protocol, peer)

    run(main())


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no unix sockets on this platform")
def test_unix_server(loop, loop_kind, run, rsa_identity, unix_path):
    async def main():
        made = loop.create_future()

        def factory():
            protocol = Pong()
            made.set_result(protocol)
            return protocol

        server = await loop.create_unix_server(factory, unix_path,
                                               ssl=fasttls_server_context(rsa_identity))
        peer = BlockingPeer.connect(ping, stdlib_client_context(rsa_identity), unix_path,
                                    family=socket.AF_UNIX)
        protocol = await bounded(made)
        assert_fasttls_transport(await bounded(protocol.made), loop_kind)
        assert await peer.result() == "clean"
        assert await bounded(protocol.lost) is None
        peer.join()
        server.close()
        await bounded(server.wait_closed())

    run(main())


# ---------------------------------------------------------------- ssl=True

@pytest.fixture
def trust_test_ca(monkeypatch, rsa_identity, tmp_path):
    """ssl.create_default_context() (what ssl=True uses) trusts the test CA, via SSL_CERT_FILE."""
    path = tmp_path / "ca.pem"
    path.write_bytes(rsa_identity.ca_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


@pytest.mark.parametrize("injected", [False, True], ids=["plain", "injected"])
def test_ssl_true(loop, loop_kind, run, rsa_identity, trust_test_ca, injected):
    """ssl=True makes asyncio (and fasttls.aio's uvloop wrapper) call ssl.create_default_context()
    at connection time. Without injection that is a stdlib context: asyncio's own transport,
    even on a patched loop. After fasttls.inject_into_ssl() it is fasttls's, so the patched loop
    uses fasttls.aio's transport, on the selector loop and on uvloop alike."""
    async def main():
        return await client_exchange(loop, True, rsa_identity)

    if not injected:
        assert_not_fasttls(run(main()), loop_kind)
        return
    fasttls.inject_into_ssl()
    try:
        cls = run(main())
    finally:
        fasttls.extract_from_ssl()
    assert ssl.SSLContext is STDLIB_SSLContext
    assert_fasttls_transport_class(cls, loop_kind)
