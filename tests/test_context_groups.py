"""Key exchange groups: the documented default (X25519, P-256, P-384), set_groups / newctx(groups=)
enabling others (x448, P-521, the RFC 7919 finite-field groups), and unknown names refused.
Peer: the stdlib, restricted to one group with its set_ecdh_curve (which applies to clients too)."""
import ssl
import sys

import pytest

import fasttls
from fasttls._binding import ffi, lib
from support.peers import (
    StdlibPeer,
    handshake_with_stdlib,
    stdlib_client_context,
    stdlib_server_context,
)


def negotiated_group(tls):
    name = lib.fasttls_conn_group(tls._conn)
    return ffi.string(name).decode() if name != ffi.NULL else None


def stdlib_client_with_only(identity, curve, version=ssl.TLSVersion.TLSv1_3):
    ctx = stdlib_client_context(identity, version)
    ctx.set_ecdh_curve(curve)
    return StdlibPeer(ctx, False, "localhost")


def fasttls_server(identity, **options):
    ctx = fasttls.newctx(**options)
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    return fasttls.newtls("server", ctx)


def test_default_groups_are_documented_and_applied(identities):
    identity = identities["ecdsa"]
    assert fasttls.Context().groups == ["X25519", "P-256", "P-384"]
    server = fasttls_server(identity)
    handshake_with_stdlib(server, StdlibPeer(stdlib_client_context(identity), False, "localhost"))
    assert negotiated_group(server) == "x25519"
    with pytest.raises((ssl.SSLError, fasttls.SSLError)):
        handshake_with_stdlib(fasttls_server(identity), stdlib_client_with_only(identity, "X448"))


@pytest.mark.parametrize("groups, stdlib_curve, expected", [
    (["x448"], "X448", "x448"),
    ("P-521", "secp521r1", "secp521r1"),
    (["ffdhe2048"], "ffdhe2048", "ffdhe2048"),
    ("X25519:x448:P-521:ffdhe2048", "secp521r1", "secp521r1"),
])
def test_enabled_groups_are_negotiated_server(identities, groups, stdlib_curve, expected):
    if sys.version_info < (3, 10) and stdlib_curve in ("X448", "ffdhe2048"):
        pytest.skip("Python 3.9's set_ecdh_curve knows only EC curves: no stdlib peer offering "
                    "only X448 or FFDHE (tested on 3.10+)")
    identity = identities["ecdsa"]
    server = fasttls_server(identity, groups=groups)
    handshake_with_stdlib(server, stdlib_client_with_only(identity, stdlib_curve))
    assert server.version() == "TLSv1.3"
    assert negotiated_group(server) == expected


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_enabled_group_offered_by_a_client(identities, version):
    identity = identities["rsa"]
    server_ctx = stdlib_server_context(identity, version)
    server_ctx.set_ecdh_curve("secp521r1")
    ctx = fasttls.newctx(cadata=identity.ca_pem, groups=["P-521"])
    client = fasttls.newtls("client", ctx, "localhost")
    handshake_with_stdlib(client, StdlibPeer(server_ctx, True))
    assert negotiated_group(client) == "secp521r1"


def test_unknown_or_empty_groups_are_refused_and_change_nothing():
    ctx = fasttls.newctx(groups=["x448", "P-256"])
    for bad in (["no-such-group"], "P-256:bogus", [], "", ["P-256:x448"], [None]):
        with pytest.raises(ValueError):
            ctx.set_groups(bad)
    assert ctx.groups == ["x448", "P-256"]
    with pytest.raises(ValueError):
        fasttls.newctx(groups="bogus")


def test_groups_attribute_and_set_ecdh_curve(identities):
    ctx = fasttls.Context()
    ctx.groups = "P-384:X25519"
    assert ctx.groups == ["P-384", "X25519"]
    ctx.set_ecdh_curve(b"prime256v1")
    assert ctx.groups == ["prime256v1"]
    with pytest.raises(ValueError, match="unknown elliptic curve name 'nope'"):
        ctx.set_ecdh_curve("nope")
    identity = identities["ecdsa"]
    server_ctx = fasttls.newctx()
    server_ctx.set_cert(identity.chain_pem, identity.key_pem)
    server_ctx.set_ecdh_curve("prime256v1")
    server = fasttls.newtls("server", server_ctx)
    handshake_with_stdlib(server, StdlibPeer(stdlib_client_context(identity), False, "localhost"))
    assert negotiated_group(server) == "secp256r1"
