"""The session store on the drop-in (fasttls.SSLContext): SSLSocket servers resolve the lookup
blocking with the socket's timeout, SSLObject (memory BIO) servers with the store's own bound;
stdlib clients resume across two server contexts sharing the store."""
import socket
import ssl

import pytest
from support.pairs import VERSIONS
from support.peers import StdlibPeer, ThreadedServer, stdlib_client_context

import fasttls
from fasttls.store import MemoryStore


@pytest.fixture(scope="module")
def ident(identities):
    return identities["ecdsa"]


def server_context(ident, store):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ident.leaf.configure_cert(ctx)
    ctx.set_session_store(store)
    return ctx


def fetch(port, cctx, session=None):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with cctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            assert tls.recv(2) == b"ok"
            return tls.session, tls.session_reused


@pytest.mark.parametrize("version", VERSIONS)
def test_sslsocket_servers_share_sessions(ident, version):
    store = MemoryStore()
    first_ctx, second_ctx = server_context(ident, store), server_context(ident, store)
    assert first_ctx.session_store is store
    cctx = stdlib_client_context(ident, version)
    with ThreadedServer(first_ctx) as first:
        session, reused = fetch(first.port, cctx)
    assert not reused and not first.errors
    with ThreadedServer(second_ctx) as second:
        _, reused = fetch(second.port, cctx, session)
    assert reused and not second.errors


@pytest.mark.parametrize("version", VERSIONS)
def test_sslobject_servers_share_sessions(ident, version):
    store = MemoryStore()
    cctx = stdlib_client_context(ident, version)

    def handshake(session=None):
        client = StdlibPeer(cctx, False, "localhost")
        if session is not None:
            client.obj.session = session
        server = StdlibPeer(server_context(ident, store), True)
        data = client.step()
        for _ in range(20):
            data = client.step(server.step(data))
            if client.done and server.done and not data:
                break
        assert client.done and server.done
        client.receive(server.send(b"ok"))  # TLS 1.3 tickets reach the client
        return client.obj, server.obj

    client, server = handshake()
    assert not server.session_reused
    _, server = handshake(client.session)
    assert server.session_reused


def test_set_session_store_is_for_servers_and_store_like_objects(ident):
    with pytest.raises(ValueError):
        fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT).set_session_store(MemoryStore())
    with pytest.raises(TypeError):
        server_context(ident, object())
    ctx = server_context(ident, MemoryStore())
    ctx.set_session_store(None)
    assert ctx.session_store is None
