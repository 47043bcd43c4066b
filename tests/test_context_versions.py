"""minimum_version / maximum_version mean what they mean in the stdlib, sentinels included
(CPython's set_min_max_proto_version): as a minimum, MINIMUM_SUPPORTED is no limit and
MAXIMUM_SUPPORTED is TLS 1.3 only; as a maximum, MAXIMUM_SUPPORTED is no limit and
MINIMUM_SUPPORTED the oldest version OpenSSL was built with. The getters read back what the
stdlib's read back; handshakes against the stdlib show the limits applied."""
import ssl
import sys
import warnings

import pytest

import fasttls
from support.peers import (
    StdlibPeer,
    handshake_with_stdlib,
    stdlib_client_context,
    stdlib_server_context,
)

V = ssl.TLSVersion
ALL_VALUES = list(V)


def stdlib_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if sys.version_info < (3, 10):
        # The stdlib's default minimum became TLS 1.2 in 3.10; fasttls's is TLS 1.2 on every
        # Python (secure by default): start both from there.
        ctx.minimum_version = V.TLSv1_2
    assert ctx.minimum_version == V.TLSv1_2  # the same starting point as a fasttls Context
    return ctx


def set_both(fasttls_ctx, stdlib_ctx, attribute, value):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the stdlib on TLSv1 / TLSv1_1
        setattr(stdlib_ctx, attribute, value)
    setattr(fasttls_ctx, attribute, value)


@pytest.mark.parametrize("attribute", ["minimum_version", "maximum_version"])
@pytest.mark.parametrize("value", ALL_VALUES, ids=[v.name for v in ALL_VALUES])
def test_each_value_reads_back_as_in_the_stdlib(attribute, value):
    ours, theirs = fasttls.Context(), stdlib_context()
    assert (ours.minimum_version, ours.maximum_version) == (theirs.minimum_version,
                                                            theirs.maximum_version)
    set_both(ours, theirs, attribute, value)
    assert ours.minimum_version == theirs.minimum_version
    assert ours.maximum_version == theirs.maximum_version
    assert type(getattr(ours, attribute)) is V


def test_a_sequence_of_settings_reads_back_as_in_the_stdlib():
    """The sequence of CPython's test_min_max_version, on both at once."""
    ours, theirs = fasttls.Context(), stdlib_context()
    for attribute, value in [
        ("minimum_version", V.TLSv1_1), ("maximum_version", V.TLSv1_2),
        ("minimum_version", V.MINIMUM_SUPPORTED), ("maximum_version", V.TLSv1),
        ("maximum_version", V.MAXIMUM_SUPPORTED), ("maximum_version", V.MINIMUM_SUPPORTED),
        ("minimum_version", V.MAXIMUM_SUPPORTED), ("minimum_version", V.MINIMUM_SUPPORTED),
        ("maximum_version", V.MAXIMUM_SUPPORTED),
    ]:
        set_both(ours, theirs, attribute, value)
        assert (ours.minimum_version, ours.maximum_version) == (
            theirs.minimum_version, theirs.maximum_version), (attribute, value)


def test_unknown_values_are_refused_as_by_the_stdlib():
    ctx = fasttls.Context()
    with pytest.raises(ValueError, match="Unsupported TLS/SSL version 0x2a"):
        ctx.minimum_version = 42
    with pytest.raises(TypeError):
        ctx.maximum_version = "TLSv1_3"
    assert ctx.minimum_version == V.TLSv1_2


def handshake_outcome(tls, peer):
    """The negotiated version, or the fasttls exception if the handshake failed on either side."""
    try:
        handshake_with_stdlib(tls, peer)
    except fasttls.SSLError as exc:
        return exc
    except ssl.SSLError as exc:  # the stdlib peer gave up first; it sent fasttls an alert
        return exc
    assert tls.version() == peer.obj.version()
    return tls.version()


def fasttls_server(identity, **options):
    ctx = fasttls.newctx(**options)
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    return fasttls.newtls("server", ctx)


def fasttls_client(identity, **options):
    return fasttls.newtls("client", fasttls.newctx(cadata=identity.ca_pem, **options),
                          "localhost")


def test_minimum_maximum_supported_is_tls13_only_server(identities):
    """The reported downgrade: minimum_version = MAXIMUM_SUPPORTED used to mean no minimum."""
    identity = identities["ecdsa"]
    old_client = StdlibPeer(stdlib_client_context(identity, V.TLSv1_2), False, "localhost")
    failed = handshake_outcome(fasttls_server(identity, minimum_version=V.MAXIMUM_SUPPORTED),
                               old_client)
    assert isinstance(failed, ssl.SSLError)
    assert "UNSUPPORTED_PROTOCOL" in str(failed) or "PROTOCOL_VERSION" in str(failed)
    new_client = StdlibPeer(stdlib_client_context(identity), False, "localhost")
    assert handshake_outcome(fasttls_server(identity, minimum_version=V.MAXIMUM_SUPPORTED),
                             new_client) == "TLSv1.3"


def test_minimum_maximum_supported_is_tls13_only_client(identities):
    identity = identities["rsa"]
    tls12_server = StdlibPeer(stdlib_server_context(identity, V.TLSv1_2), True)
    failed = handshake_outcome(fasttls_client(identity, minimum_version=V.MAXIMUM_SUPPORTED),
                               tls12_server)
    assert isinstance(failed, ssl.SSLError)


def test_maximum_minimum_supported_allows_no_handshake(identities):
    """The oldest version OpenSSL has, which the security level forbids: like the stdlib's own
    client with the same setting, nothing can be negotiated."""
    identity = identities["rsa"]
    server = StdlibPeer(stdlib_server_context(identity), True)
    client = fasttls_client(identity, minimum_version=V.MINIMUM_SUPPORTED,
                            maximum_version=V.MINIMUM_SUPPORTED)
    with pytest.raises(fasttls.SSLError) as failed:
        handshake_with_stdlib(client, server)
    # (fasttls's TLS 1.2 suites are AEAD only, so it finds no cipher for TLS 1.0 even before it
    # finds no protocol)
    assert failed.value.reason in ("NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE")
    if sys.version_info < (3, 10):
        return  # the stdlib's own client: 3.9's security defaults still allow TLS 1.0 here
    theirs = stdlib_client_context(identity)
    theirs.minimum_version = theirs.maximum_version = V.MINIMUM_SUPPORTED
    stdlib_client = theirs.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="localhost")
    with pytest.raises(ssl.SSLError, match="NO_PROTOCOLS_AVAILABLE|NO_CIPHERS_AVAILABLE"):
        stdlib_client.do_handshake()


@pytest.mark.parametrize("minimum, maximum, expected", [
    (V.MINIMUM_SUPPORTED, V.MAXIMUM_SUPPORTED, "TLSv1.3"),
    (V.MINIMUM_SUPPORTED, V.TLSv1_2, "TLSv1.2"),
    (V.TLSv1_2, V.MAXIMUM_SUPPORTED, "TLSv1.3"),
    (V.MAXIMUM_SUPPORTED, V.MAXIMUM_SUPPORTED, "TLSv1.3"),
    (V.TLSv1, V.TLSv1_2, "TLSv1.2"),
])
@pytest.mark.parametrize("role", ["client", "server"])
def test_negotiated_version_against_the_stdlib(identities, role, minimum, maximum, expected):
    identity = identities["ecdsa"]
    options = {"minimum_version": minimum, "maximum_version": maximum}
    if role == "client":
        tls = fasttls_client(identity, **options)
        peer = StdlibPeer(stdlib_server_context(identity), True)
    else:
        tls = fasttls_server(identity, **options)
        peer = StdlibPeer(stdlib_client_context(identity), False, "localhost")
    assert handshake_outcome(tls, peer) == expected


def test_maximum_back_to_maximum_supported_lifts_the_limit(identities):
    identity = identities["ecdsa"]
    ctx = fasttls.newctx(cadata=identity.ca_pem, maximum_version=V.TLSv1_2)
    ctx.maximum_version = V.MAXIMUM_SUPPORTED
    tls = fasttls.newtls("client", ctx, "localhost")
    peer = StdlibPeer(stdlib_server_context(identity), True)
    assert handshake_outcome(tls, peer) == "TLSv1.3"
