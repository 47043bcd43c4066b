"""TLS 1.3 post-handshake client authentication, at the engine level (the TLS object does not
expose it yet): fasttls_conn_enable_pha on a client, fasttls_conn_verify_client_post_handshake
on a server. The server's CertificateRequest and the client's answer travel in the output buffer
(pending_output, flushed by write()); reading processes them. Peer: the stdlib in memory."""
import ssl

import pytest

import fasttls
from fasttls._binding import lib
from support.certs import Identity
from support.peers import StdlibPeer, handshake_with_stdlib, stdlib_server_context

TLS12 = ssl.TLSVersion.TLSv1_2
PHA_VERIFY = (lib.SSL_VERIFY_PEER | lib.SSL_VERIFY_FAIL_IF_NO_PEER_CERT |
              lib.SSL_VERIFY_POST_HANDSHAKE)


@pytest.fixture(scope="module")
def people():
    server = Identity("ecdsa", "localhost")
    return {"server": server, "client": Identity("ecdsa", "client.example"),
            "stranger": Identity("ecdsa", "client.example")}


def stdlib_read(peer, ciphertext=b""):
    """Feed the stdlib peer; let it process (answer a request); return (plaintext, its output)."""
    if ciphertext:
        peer.incoming.write(ciphertext)
    try:
        plaintext = peer.obj.read(65536)
    except ssl.SSLWantReadError:
        plaintext = b""
    return plaintext, peer.outgoing.read()


def fasttls_server_and_stdlib_client(people, client_cert="client", pha=True, version=None):
    sctx = fasttls.newctx()
    sctx.set_cert(people["server"].chain_pem, people["server"].key_pem)
    sctx.load_verify_locations(cadata=people["client"].ca_pem)
    server = fasttls.newtls("server", sctx)
    lib.fasttls_conn_set_verify(server._conn, PHA_VERIFY)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    people["server"].ca.configure_trust(cctx)
    if client_cert is not None:
        people[client_cert].leaf.configure_cert(cctx)
    cctx.post_handshake_auth = pha
    if version is not None:
        cctx.maximum_version = version
    peer = StdlibPeer(cctx, False, "localhost")
    handshake_with_stdlib(server, peer)
    return server, peer


def test_server_asks_after_the_handshake(people):
    server, peer = fasttls_server_and_stdlib_client(people)
    assert server.getpeercert(binary_form=True) is None  # nothing asked during the handshake
    assert lib.fasttls_conn_verify_client_post_handshake(server._conn) == lib.FASTTLS_OK
    assert server.pending_output
    request = server.write()
    plaintext, answer = stdlib_read(peer, request)
    assert plaintext == b"" and answer
    assert server.read(answer) == b""
    assert server.getpeercert(binary_form=True) == people["client"].leaf_der
    # The connection goes on both ways.
    assert server.read(peer.send(b"after")) == b"after"
    assert stdlib_read(peer, server.write(b"back"))[0] == b"back"


def test_answer_in_one_read_with_application_data(people):
    """The answer and the data that follows it in one read."""
    server, peer = fasttls_server_and_stdlib_client(people)
    lib.fasttls_conn_verify_client_post_handshake(server._conn)
    _, answer = stdlib_read(peer, server.write())
    assert server.read(answer + peer.send(b"data")) == b"data"
    assert server.getpeercert(binary_form=True) == people["client"].leaf_der


def test_client_that_did_not_offer_it_is_refused_and_the_connection_lives(people):
    server, peer = fasttls_server_and_stdlib_client(people, pha=False)
    assert lib.fasttls_conn_verify_client_post_handshake(server._conn) == lib.FASTTLS_ERROR
    assert lib.ERR_peek_last_error() == 0
    assert not server.pending_output
    assert server.read(peer.send(b"still")) == b"still"


def test_tls12_is_refused(people):
    server, peer = fasttls_server_and_stdlib_client(people, version=TLS12)
    assert server.version() == "TLSv1.2"
    assert lib.fasttls_conn_verify_client_post_handshake(server._conn) == lib.FASTTLS_ERROR
    assert server.read(peer.send(b"still")) == b"still"


def test_client_without_a_certificate(people):
    server, peer = fasttls_server_and_stdlib_client(people, client_cert=None)
    lib.fasttls_conn_verify_client_post_handshake(server._conn)
    _, answer = stdlib_read(peer, server.write())
    with pytest.raises(fasttls.SSLError) as failed:
        server.read(answer)
    assert failed.value.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    assert failed.value.alert  # to be sent to the client


def test_untrusted_client_certificate(people):
    server, peer = fasttls_server_and_stdlib_client(people, client_cert="stranger")
    lib.fasttls_conn_verify_client_post_handshake(server._conn)
    _, answer = stdlib_read(peer, server.write())
    with pytest.raises(fasttls.SSLCertVerificationError):
        server.read(answer)


def test_client_answers_a_stdlib_server(people):
    sctx = stdlib_server_context(people["server"])
    people["client"].ca.configure_trust(sctx)
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.post_handshake_auth = True
    cctx = fasttls.newctx(cadata=people["server"].ca_pem)
    cctx.set_cert(people["client"].chain_pem, people["client"].key_pem)
    client = fasttls.newtls("client", cctx, "localhost")
    assert lib.fasttls_conn_enable_pha(client._conn) == 1
    peer = StdlibPeer(sctx, True)
    handshake_with_stdlib(client, peer)
    assert peer.obj.getpeercert() is None
    peer.obj.verify_client_post_handshake()
    _, request = stdlib_read(peer)
    assert client.read(request) == b""
    assert client.pending_output  # the answer, produced while reading
    _, after = stdlib_read(peer, client.write())  # (a new session ticket may follow)
    assert peer.obj.getpeercert(binary_form=True) == people["client"].leaf_der
    assert client.read(after + peer.send(b"welcome")) == b"welcome"


def test_both_ends_fasttls(people):
    sctx = fasttls.newctx()
    sctx.set_cert(people["server"].chain_pem, people["server"].key_pem)
    sctx.load_verify_locations(cadata=people["client"].ca_pem)
    cctx = fasttls.newctx(cadata=people["server"].ca_pem)
    cctx.set_cert(people["client"].chain_pem, people["client"].key_pem)
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", sctx)
    lib.fasttls_conn_enable_pha(client._conn)
    lib.fasttls_conn_set_verify(server._conn, PHA_VERIFY)
    from support.pump import pump

    pump(client, server)
    assert lib.fasttls_conn_verify_client_post_handshake(server._conn) == lib.FASTTLS_OK
    assert client.read(server.write()) == b""
    assert server.read(client.write(b"with cert")) == b"with cert"
    assert server.getpeercert(binary_form=True) == people["client"].leaf_der
