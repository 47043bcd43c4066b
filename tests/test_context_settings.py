"""The OpenSSL settings the stdlib exposes, as Context members (so that no layer above
_context.py/_tls.py calls lib.SSL_* itself): options, verify_flags, num_tickets,
session_stats(), get_ciphers(), cert_store_stats(), get_ca_certs(); and the session fields the
stdlib's SSLSession shows (id, time, timeout, has_ticket, ticket_lifetime_hint), declared for
the TLS layer. Values are compared with the stdlib's for the same configuration, and their
effects shown against a stdlib peer."""
import ssl
import time

import pytest

import fasttls
from fasttls._binding import ffi, lib
from support.peers import (
    StdlibPeer,
    handshake_with_stdlib,
    stdlib_client_context,
    stdlib_server_context,
)

TLS13 = ssl.TLSVersion.TLSv1_3


def test_options_read_and_write_bits():
    ctx = fasttls.Context()
    default = ctx.options
    for required in (ssl.OP_NO_COMPRESSION, ssl.OP_CIPHER_SERVER_PREFERENCE,
                     ssl.OP_NO_RENEGOTIATION):
        assert default & required
    ctx.options = default | ssl.OP_NO_TICKET
    assert ctx.options == default | ssl.OP_NO_TICKET
    ctx.options &= ~ssl.OP_NO_TICKET
    assert ctx.options == default
    assert ssl.Options(ctx.options)  # the drop-in's type takes them as they are


def test_no_ticket_option_takes_effect_on_a_tls12_server(identities):
    identity = identities["ecdsa"]
    ctx = fasttls.newctx(maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    ctx.options |= ssl.OP_NO_TICKET
    peer = StdlibPeer(stdlib_client_context(identity), False, "localhost")
    handshake_with_stdlib(fasttls.newtls("server", ctx), peer)
    assert not peer.obj.session.has_ticket


def test_verify_flags_read_and_write_and_apply(identities):
    identity = identities["rsa"]
    ctx = fasttls.newctx(cadata=identity.ca_pem)
    assert ctx.verify_flags == 0 or ssl.VerifyFlags(ctx.verify_flags) is not None
    ctx.verify_flags = ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
    # No CRL is loaded: with CRL checking on, the chain cannot be verified.
    client = fasttls.newtls("client", ctx, "localhost")
    with pytest.raises(fasttls.SSLCertVerificationError, match="CRL"):
        handshake_with_stdlib(client, StdlibPeer(stdlib_server_context(identity), True))
    ctx.verify_flags = 0
    assert ctx.verify_flags == 0
    client = fasttls.newtls("client", ctx, "localhost")
    handshake_with_stdlib(client, StdlibPeer(stdlib_server_context(identity), True))


def session_fields(session_ptr):
    length = ffi.new("unsigned int *")
    raw = lib.SSL_SESSION_get_id(session_ptr, length)
    return {"id": ffi.unpack(ffi.cast("char *", raw), length[0]),
            "time": lib.SSL_SESSION_get_time(session_ptr),
            "timeout": lib.SSL_SESSION_get_timeout(session_ptr),
            "has_ticket": bool(lib.SSL_SESSION_has_ticket(session_ptr)),
            "ticket_lifetime_hint": lib.SSL_SESSION_get_ticket_lifetime_hint(session_ptr)}


@pytest.mark.parametrize("tickets", [2, 0])
def test_num_tickets_and_session_fields_against_the_stdlib(identities, tickets):
    """A fasttls TLS 1.2 server with num_tickets... and a TLS 1.3 one: the sessions its clients
    get show the same fields through the declared calls as through the stdlib's SSLSession."""
    identity = identities["ecdsa"]
    ctx = fasttls.newctx()
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    ctx.num_tickets = tickets
    assert ctx.num_tickets == tickets
    with pytest.raises(ValueError, match="non-negative"):
        ctx.num_tickets = -1
    peer = StdlibPeer(stdlib_client_context(identity, TLS13), False, "localhost")
    handshake_with_stdlib(fasttls.newtls("server", ctx), peer)
    peer.receive()  # the tickets come after the handshake
    theirs = peer.obj.session
    assert theirs.has_ticket == bool(tickets)
    # The same session seen through the declarations (a stdlib client, fasttls's client below).
    client_ctx = fasttls.newctx(cadata=identity.ca_pem, minimum_version=TLS13)
    client = fasttls.newtls("client", client_ctx, "localhost")
    server_ctx = stdlib_server_context(identity, TLS13)
    server_ctx.num_tickets = tickets
    server_peer = StdlibPeer(server_ctx, True)
    handshake_with_stdlib(client, server_peer)
    client.read(server_peer.outgoing.read())
    ours = session_fields(client.session._ptr)
    assert ours["has_ticket"] == bool(tickets)
    assert abs(ours["time"] - time.time()) < 60
    assert ours["timeout"] > 0
    if tickets:
        assert ours["ticket_lifetime_hint"] == theirs.ticket_lifetime_hint
        assert ours["timeout"] == theirs.timeout
        assert len(ours["id"]) == len(theirs.id)


def test_session_stats_count_like_the_stdlib(identities):
    identity = identities["ecdsa"]
    ctx = fasttls.newctx()
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    assert set(ctx.session_stats()) == set(ssl.create_default_context().session_stats())
    for _ in range(2):
        peer = StdlibPeer(stdlib_client_context(identity), False, "localhost")
        handshake_with_stdlib(fasttls.newtls("server", ctx), peer)
    stats = ctx.session_stats()
    assert stats["accept"] == stats["accept_good"] == 2


@pytest.mark.parametrize("ciphers", ["ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384",
                                     "ECDHE+AESGCM"])
def test_get_ciphers_lists_what_the_stdlib_lists(ciphers):
    ours = fasttls.newctx(ciphers=ciphers).get_ciphers()
    theirs = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    theirs.set_ciphers(ciphers)
    assert ours == theirs.get_ciphers()
    assert {c["protocol"] for c in ours} == {"TLSv1.2", "TLSv1.3"}


def test_store_stats_and_ca_certs_as_the_stdlib(identities):
    ca_pems = identities["rsa"].ca_pem + identities["ecdsa"].ca_pem
    ctx = fasttls.newctx(cadata=ca_pems)
    theirs = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    theirs.load_verify_locations(cadata=ca_pems.decode())
    assert ctx.cert_store_stats() == theirs.cert_store_stats() == {"x509": 2, "crl": 0,
                                                                   "x509_ca": 2}
    assert sorted(ctx.get_ca_certs(binary_form=True)) == sorted(
        theirs.get_ca_certs(binary_form=True))
    key = lambda cert: cert["serialNumber"]  # noqa: E731
    assert sorted(ctx.get_ca_certs(), key=key) == sorted(theirs.get_ca_certs(), key=key)
    assert fasttls.Context().cert_store_stats() == {"x509": 0, "crl": 0, "x509_ca": 0}
