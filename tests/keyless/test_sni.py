"""The sni_callback with keyless contexts: it runs between handshake calls (the client-hello
callback stops the handshake for it), never inside the keyless handshake's job, so it may pick
another keyless context, a keyless context may be picked from a plain one, and its refusals and
exceptions end the handshake as before."""
import ssl

import pytest

import fasttls
from support.certs import Identity
from support.pump import pump
from support.signers import LocalSigner


@pytest.fixture(scope="module")
def other_identity():
    return Identity("ecdsa", "other.example")


def client_for(*identities, hostname):
    cctx = fasttls.newctx(cadata=b"".join(i.ca_pem for i in identities))
    return fasttls.newtls("client", cctx, hostname)


def handshake(client, server):
    """Both ends to the end, resolving the server's pauses."""
    pump(client, server)


def test_keyless_to_keyless(identities, other_identity, keyless_ctx):
    first, first_signer = keyless_ctx(identities["ecdsa"])
    other, other_signer = keyless_ctx(other_identity)
    seen = []

    def choose(tls, name):
        seen.append(name)
        return other if name == "other.example" else None

    first.sni_callback = choose
    client = client_for(identities["ecdsa"], other_identity, hostname="other.example")
    server = fasttls.newtls("server", first)
    handshake(client, server)
    assert seen == ["other.example"]
    assert server.context is other
    assert client.getpeercert(True) == other_identity.leaf_der
    assert not first_signer.requests
    (request,) = other_signer.requests
    assert request.server_name == "other.example"
    # the same callback, keeping the first context
    client = client_for(identities["ecdsa"], hostname="localhost")
    server = fasttls.newtls("server", first)
    handshake(client, server)
    assert seen[-1] == "localhost" and len(first_signer.requests) == 1


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_plain_to_keyless(identities, other_identity, keyless_ctx, version):
    plain = fasttls.newctx()
    plain.set_cert(identities["rsa"].chain_pem, identities["rsa"].key_pem)
    keyless, signer = keyless_ctx(other_identity)
    plain.sni_callback = lambda tls, name: keyless if name == "other.example" else None
    client = client_for(other_identity, hostname="other.example")
    client.context.maximum_version = version
    server = fasttls.newtls("server", plain)
    handshake(client, server)
    assert client.getpeercert(True) == other_identity.leaf_der
    assert len(signer.requests) == 1


def test_no_server_name(identities, keyless_ctx):
    ctx, signer = keyless_ctx(identities["ecdsa"])
    seen = []
    ctx.sni_callback = lambda tls, name: seen.append(name)
    cctx = fasttls.newctx(cadata=identities["ecdsa"].ca_pem, check_hostname=False)
    client = fasttls.newtls("client", cctx)
    handshake(client, fasttls.newtls("server", ctx))
    assert seen == [None]
    assert signer.requests[0].server_name is None


def test_refused_with_an_alert(identities, keyless_ctx):
    ctx, signer = keyless_ctx(identities["ecdsa"])
    ctx.sni_callback = lambda tls, name: ssl.ALERT_DESCRIPTION_ACCESS_DENIED
    client = client_for(identities["ecdsa"], hostname="localhost")
    server = fasttls.newtls("server", ctx)
    with pytest.raises(fasttls.SSLError) as caught:
        server.handshake(client.handshake())
    assert caught.value.alert
    with pytest.raises(fasttls.SSLError, match="(?i)access.denied"):
        client.handshake(caught.value.alert)
    assert not signer.requests


def test_callback_exception(identities, keyless_ctx):
    ctx, signer = keyless_ctx(identities["ecdsa"])

    def broken(tls, name):
        raise LookupError("no such tenant")

    ctx.sni_callback = broken
    client = client_for(identities["ecdsa"], hostname="localhost")
    server = fasttls.newtls("server", ctx)
    with pytest.raises(LookupError, match="no such tenant") as caught:
        server.handshake(client.handshake())
    assert caught.value.alert
    with pytest.raises(fasttls.SSLError, match="(?i)internal.error"):
        client.handshake(caught.value.alert)


def test_switch_to_keyless_refused_with_message_hook(identities, other_identity, keyless_ctx):
    plain = fasttls.newctx()
    plain.set_cert(identities["ecdsa"].chain_pem, identities["ecdsa"].key_pem)
    plain._enable_message_hook(True)
    keyless, _ = keyless_ctx(other_identity)
    plain.sni_callback = lambda tls, name: keyless
    client = client_for(other_identity, hostname="other.example")
    server = fasttls.newtls("server", plain)
    with pytest.raises(ValueError, match="keyless"):
        server.handshake(client.handshake())


def test_signer_per_context(identities, other_identity):
    """Each keyless context asks its own signer."""
    a = fasttls.newctx()
    a.set_keyless_cert(identities["ecdsa"].chain_pem, LocalSigner(identities["ecdsa"].key_pem))
    assert isinstance(a.signer, LocalSigner)
