"""fasttls's sans-IO TLS object against the stdlib ``ssl`` module (SSLObject over MemoryBIO) as
the peer: fasttls in each role, TLS 1.2 and 1.3, RSA and ECDSA certificates."""
import ssl

import pytest

import fasttls
from support.pairs import TLS13, VERSIONS, VERSION_NAME, client_ctx, server_ctx
from support.peers import (
    StdlibPeer,
    handshake_with_stdlib,
    stdlib_client_context,
    stdlib_server_context,
)

PEERCERT_KEYS = ("subject", "issuer", "subjectAltName", "notAfter", "notBefore", "serialNumber",
                 "version")


def fasttls_client_with_stdlib_server(identity, version, hostname="localhost"):
    tls = fasttls.newtls("client", client_ctx(identity), hostname)
    peer = StdlibPeer(stdlib_server_context(identity, version), server_side=True)
    handshake_with_stdlib(tls, peer)
    return tls, peer


def fasttls_server_with_stdlib_client(identity, version):
    tls = fasttls.newtls("server", server_ctx(identity))
    peer = StdlibPeer(stdlib_client_context(identity, version), False, "localhost")
    handshake_with_stdlib(tls, peer)
    return tls, peer


def check_negotiation(tls, peer, identity, version):
    assert tls.finished()
    assert tls.version() == VERSION_NAME[version] == peer.obj.version()
    assert tls.cipher() == peer.obj.cipher()
    name, protocol, bits = tls.cipher()
    assert protocol == VERSION_NAME[version]
    assert bits >= 128
    if version == TLS13:
        assert name.startswith("TLS_")
    else:
        # a TLS 1.2 suite names the authentication: it must fit the certificate's key
        assert ("ECDSA" in name) == (identity.key_type == "ecdsa"), name


def exchange_data(tls, tls_send, tls_recv, peer):
    """Data both ways, small and multi-record."""
    for payload in (b"ping", bytes(range(256)) * 300):
        assert peer.receive(tls_send(payload)) == payload
        assert tls_recv(peer.send(payload[::-1])) == payload[::-1]


@pytest.mark.parametrize("version", VERSIONS)
def test_client_against_stdlib_server(identity, version, tmp_path):
    tls, peer = fasttls_client_with_stdlib_server(identity, version)
    check_negotiation(tls, peer, identity, version)

    cert = tls.getpeercert()
    expected = identity.stdlib_decoded(tmp_path)
    for key in PEERCERT_KEYS:
        assert cert[key] == expected[key], key
    assert ("DNS", "localhost") in cert["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
    assert cert["notAfter"] == "Jan  1 00:00:00 3000 GMT"  # trustme's default
    assert tls.getpeercert(binary_form=True) == identity.leaf_der
    assert peer.obj.getpeercert() is None  # we sent no client certificate

    exchange_data(tls, tls.write, tls.read, peer)


@pytest.mark.parametrize("version", VERSIONS)
def test_server_against_stdlib_client(identity, version):
    tls, peer = fasttls_server_with_stdlib_client(identity, version)
    check_negotiation(tls, peer, identity, version)
    # the stdlib client verified our chain and hostname; it saw exactly our leaf
    assert peer.obj.getpeercert(binary_form=True) == identity.leaf_der
    assert tls.getpeercert() is None  # no client certificate was asked for
    assert tls.getpeercert(binary_form=True) is None

    exchange_data(tls, tls.write, tls.read, peer)


def test_getpeercert_before_handshake_is_none(identities):
    """docs/API.md: getpeercert() is None before the handshake (both forms)."""
    tls = fasttls.newtls("client", client_ctx(identities["rsa"]), "localhost")
    assert tls.getpeercert() is None
    assert tls.getpeercert(binary_form=True) is None


def test_state_before_handshake(identities):
    tls = fasttls.newtls("client", client_ctx(identities["rsa"]), "localhost")
    assert not tls.finished()
    assert tls.version() is None
    assert tls.cipher() is None
    assert tls.selected_alpn_protocol() is None
    assert not tls.eof
    with pytest.raises(ssl.SSLError):
        tls.write(b"too early")


@pytest.mark.parametrize("version", VERSIONS)
def test_large_transfer_with_stdlib(identities, version):
    """1 MiB each way in one write: many records, read back in one call."""
    tls, peer = fasttls_client_with_stdlib_server(identities["ecdsa"], version)
    payload = bytes(range(251)) * ((1 << 20) // 251 + 1)
    assert peer.receive(tls.write(payload)) == payload
    assert tls.read(peer.send(payload[::-1])) == payload[::-1]


@pytest.mark.parametrize(
    "hostname, sni",
    [("localhost", "localhost"), ("127.0.0.1", None), ("::1", None)],
)
def test_sni_is_sent_for_names_only(identities, hostname, sni):
    """A DNS hostname goes out as SNI; an IP address is not sent (RFC 6066) but still checked."""
    identity = identities["rsa"]
    seen = []
    sctx = stdlib_server_context(identity)
    sctx.sni_callback = lambda sslobj, name, ctx: seen.append(name)
    tls = fasttls.newtls("client", client_ctx(identity), hostname)
    peer = StdlibPeer(sctx, server_side=True)
    handshake_with_stdlib(tls, peer)
    assert seen == [sni]
    assert tls.getpeercert(True) == identity.leaf_der


def test_set_hostname_before_handshake(identities):
    identity = identities["rsa"]
    seen = []
    sctx = stdlib_server_context(identity)
    sctx.sni_callback = lambda sslobj, name, ctx: seen.append(name)
    tls = fasttls.newtls("client", client_ctx(identity))
    tls.set_hostname("localhost")
    handshake_with_stdlib(tls, StdlibPeer(sctx, server_side=True))
    assert seen == ["localhost"]


@pytest.mark.parametrize("version", VERSIONS)
def test_close_notify_to_stdlib(identities, version):
    tls, peer = fasttls_client_with_stdlib_server(identities["ecdsa"], version)
    alert = tls.close()
    assert alert
    peer.incoming.write(alert)
    # the stdlib returns b"" only for a real close_notify (else: SSLWantReadError)
    assert peer.obj.read(100) == b""


@pytest.mark.parametrize("version", VERSIONS)
def test_close_notify_from_stdlib(identities, version):
    tls, peer = fasttls_server_with_stdlib_client(identities["rsa"], version)
    assert tls.read(peer.send(b"bye")) == b"bye"
    try:
        peer.obj.unwrap()
    except ssl.SSLWantReadError:  # sent ours, waiting for the reply
        pass
    assert tls.read(peer.outgoing.read()) == b""
    assert tls.eof
    assert tls.read() == b""
    reply = tls.close()
    assert reply
    peer.incoming.write(reply)
    peer.obj.unwrap()  # now completes: the stdlib got our close_notify


@pytest.mark.parametrize("version", VERSIONS)
def test_stdlib_client_receives_server_first_data(identities, version):
    """Server-speaks-first: fasttls (server) writes right after its handshake; the stdlib client
    receives it without sending anything after its own handshake."""
    identity = identities["ecdsa"]
    tls = fasttls.newtls("server", server_ctx(identity))
    peer = StdlibPeer(stdlib_client_context(identity, version), False, "localhost")
    to_server = peer.step()
    for _ in range(10):
        to_client = tls.handshake(to_server)
        if tls.finished():
            break
        to_server = peer.step(to_client)
    assert tls.finished()
    to_client += tls.write(b"220 hello")
    assert peer.step(to_client) == b""  # the client sends nothing more
    assert peer.done
    assert peer.receive() == b"220 hello"


@pytest.mark.parametrize("version", VERSIONS)
def test_stdlib_server_speaks_first_to_client(identities, version):
    """The step that completes the client's handshake must return its last flight, or a
    server that waits for it before speaking would never speak."""
    identity = identities["rsa"]
    tls = fasttls.newtls("client", client_ctx(identity), "localhost")
    peer = StdlibPeer(stdlib_server_context(identity, version), server_side=True)
    to_server = tls.handshake()
    for _ in range(10):
        to_client = peer.step(to_server)
        if peer.done:
            break
        assert not tls.finished()
        to_server = tls.handshake(to_client)
    assert peer.done, "the stdlib server never completed its handshake"
    data = to_client + peer.send(b"* OK ready")
    if tls.finished():  # TLS 1.3: the client finished first; `data` holds tickets + greeting
        assert tls.read(data) == b"* OK ready"
    else:  # TLS 1.2: the server's last flight arrives glued to the greeting
        assert tls.handshake(data) == b""
        assert tls.finished()
        assert tls.read() == b"* OK ready"
