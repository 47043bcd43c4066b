"""Context configuration and its effect on real handshakes: cipher strings and TLS 1.3 suites,
version limits, ALPN, certificates and keys from files or memory (encrypted keys with a
password), trust anchors, key logging, session resumption, and argument errors."""
import os
import pathlib
import re
import ssl
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

import fasttls
from support.pairs import (
    TLS12,
    TLS13,
    VERSIONS,
    VERSION_NAME,
    client_ctx,
    connected_pair,
    handshake_error,
    make_pair,
    server_ctx,
)
from support.peers import (
    StdlibPeer,
    handshake_with_stdlib,
    stdlib_client_context,
    stdlib_server_context,
)
from support.pump import deliver, pump
from support.requires import require_program

PASSWORD = "correct horse battery staple"


# ------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize("method", ["", "Client", "SERVER", "both", "tls", None, 1])
def test_newtls_bad_method(identities, method):
    with pytest.raises(ValueError):
        fasttls.newtls(method, client_ctx(identities["ecdsa"]), "localhost")


def test_newctx_unknown_keyword():
    with pytest.raises(TypeError):
        fasttls.newctx(verify="required")
    with pytest.raises(TypeError):
        fasttls.newctx(ciphers="DEFAULT", ciphres="DEFAULT")


def test_default_versions():
    ctx = fasttls.newctx()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_errors_are_stdlib_subclasses():
    assert issubclass(fasttls.SSLError, ssl.SSLError)
    assert issubclass(fasttls.SSLCertVerificationError, fasttls.SSLError)
    assert issubclass(fasttls.SSLCertVerificationError, ssl.SSLCertVerificationError)
    assert issubclass(fasttls.SSLZeroReturnError, ssl.SSLZeroReturnError)
    assert issubclass(fasttls.SSLEOFError, ssl.SSLEOFError)
    assert issubclass(fasttls.SSLZeroReturnError, fasttls.SSLError)
    assert issubclass(fasttls.SSLEOFError, fasttls.SSLError)


# ------------------------------------------------------------------------------ ciphers


@pytest.mark.parametrize(
    "key_type, cipher",
    [
        ("rsa", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("rsa", "ECDHE-RSA-CHACHA20-POLY1305"),
        ("ecdsa", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ("ecdsa", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ],
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_set_ciphers_applies(identities, key_type, cipher, side):
    """TLS 1.2: restricting either side to one suite makes it the negotiated one."""
    options = {"ciphers": cipher}
    client, server = make_pair(
        identities[key_type], TLS12,
        client_options=options if side == "client" else None,
        server_options=options if side == "server" else None,
    )
    pump(client, server)
    assert client.cipher()[0] == server.cipher()[0] == cipher
    assert client.cipher()[1] == "TLSv1.2"


def test_set_ciphers_seen_by_stdlib(identities):
    identity = identities["rsa"]
    sctx = server_ctx(identity)
    sctx.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384")
    tls = fasttls.newtls("server", sctx)
    peer = StdlibPeer(stdlib_client_context(identity, TLS12), False, "localhost")
    handshake_with_stdlib(tls, peer)
    assert peer.obj.cipher()[0] == "ECDHE-RSA-AES256-GCM-SHA384"


@pytest.mark.parametrize(
    "suite", ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
)
@pytest.mark.parametrize("side", ["client", "server"])
def test_set_ciphersuites_applies(identities, suite, side):
    ctx_options = {"ciphersuites": suite}
    client, server = make_pair(
        identities["ecdsa"], TLS13,
        client_options=ctx_options if side == "client" else None,
        server_options=ctx_options if side == "server" else None,
    )
    pump(client, server)
    assert client.cipher()[0] == server.cipher()[0] == suite
    assert client.cipher()[1] == "TLSv1.3"


def test_set_ciphersuites_method(identities):
    cctx = client_ctx(identities["ecdsa"])
    cctx.set_ciphersuites("TLS_CHACHA20_POLY1305_SHA256")
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", server_ctx(identities["ecdsa"]))
    pump(client, server)
    assert client.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"


@pytest.mark.parametrize("setter, value", [
    ("set_ciphers", "NOT-A-CIPHER"),
    ("set_ciphers", "eNULL-nothing:!ALL"),
    ("set_ciphersuites", "TLS_NOT_A_SUITE"),
    ("set_ciphersuites", "ECDHE-RSA-AES128-GCM-SHA256"),  # a TLS 1.2 name is not a 1.3 suite
])
def test_invalid_cipher_strings(setter, value):
    ctx = fasttls.newctx()
    with pytest.raises(fasttls.SSLError) as info:
        getattr(ctx, setter)(value)
    assert isinstance(info.value, ssl.SSLError)
    option = "ciphers" if setter == "set_ciphers" else "ciphersuites"
    with pytest.raises(fasttls.SSLError):
        fasttls.newctx(**{option: value})


def test_no_shared_cipher(identities):
    client, server = make_pair(identities["rsa"], TLS12,
                               client_options={"ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"})
    error, failed, other = handshake_error(client, server)
    assert failed is server
    assert error.reason == "NO_SHARED_CIPHER"
    with pytest.raises(fasttls.SSLError) as told:
        deliver(other, error.alert)
    assert told.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"


# ------------------------------------------------------------------------------ versions


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("limit", ["maximum_version", "minimum_version"])
def test_version_limits_apply(identities, version, limit):
    """One side limited (the other at its defaults) gets the version the limit implies."""
    client, server = make_pair(identities["rsa"], client_options={limit: version})
    pump(client, server)
    expected = version if limit == "maximum_version" else TLS13
    assert client.version() == server.version() == VERSION_NAME[expected]


def test_version_attributes_read_back():
    ctx = fasttls.newctx(minimum_version=TLS13, maximum_version=TLS13)
    assert ctx.minimum_version == TLS13
    assert ctx.maximum_version == TLS13
    ctx.maximum_version = TLS12
    assert ctx.maximum_version == TLS12


def test_no_common_version(identities):
    client, server = make_pair(identities["rsa"], client_options={"maximum_version": TLS12},
                               server_options={"minimum_version": TLS13})
    error, failed, other = handshake_error(client, server)
    assert failed is server
    assert error.reason == "UNSUPPORTED_PROTOCOL"
    with pytest.raises(fasttls.SSLError) as told:
        deliver(other, error.alert)
    assert told.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION"


# -------------------------------------------------------------------------------- ALPN


@pytest.mark.parametrize(
    "client_protocols, server_protocols, expected",
    [
        (["h2", "http/1.1"], ["h2", "http/1.1"], "h2"),
        (["h2", "http/1.1"], ["http/1.1", "h2"], "http/1.1"),  # the server's preference wins
        (["http/1.1"], ["h2", "http/1.1"], "http/1.1"),
        (["h2"], [], None),  # a server without ALPN ignores the offer
        ([], ["h2"], None),  # nothing offered, nothing selected
    ],
)
@pytest.mark.parametrize("version", VERSIONS)
def test_alpn_match(identities, client_protocols, server_protocols, expected, version):
    client, server = make_pair(
        identities["ecdsa"], version,
        client_options={"alpn_protocols": client_protocols} if client_protocols else None,
        server_options={"alpn_protocols": server_protocols} if server_protocols else None,
    )
    pump(client, server)
    assert client.selected_alpn_protocol() == server.selected_alpn_protocol() == expected


def test_alpn_no_overlap(identities):
    """No common protocol: either no ALPN at all on both sides (what the stdlib does) or a
    handshake failure naming no_application_protocol (what RFC 7301 suggests); never a
    protocol the client did not offer."""
    client, server = make_pair(identities["ecdsa"], client_options={"alpn_protocols": ["h2"]},
                               server_options={"alpn_protocols": ["spdy/3", "imap"]})
    try:
        pump(client, server)
    except fasttls.SSLError as error:
        assert "NO_APPLICATION_PROTOCOL" in error.reason
    else:
        assert client.selected_alpn_protocol() is None
        assert server.selected_alpn_protocol() is None


def test_alpn_with_stdlib(identities):
    identity = identities["ecdsa"]
    # fasttls client offers, stdlib server chooses
    sctx = stdlib_server_context(identity)
    sctx.set_alpn_protocols(["http/1.1"])
    tls = fasttls.newtls("client", client_ctx(identity, alpn_protocols=["h2", "http/1.1"]),
                         "localhost")
    peer = StdlibPeer(sctx, server_side=True)
    handshake_with_stdlib(tls, peer)
    assert tls.selected_alpn_protocol() == peer.obj.selected_alpn_protocol() == "http/1.1"
    # stdlib client offers, fasttls server chooses
    cctx = stdlib_client_context(identity)
    cctx.set_alpn_protocols(["h2", "http/1.1"])
    sctx = server_ctx(identity)
    sctx.set_alpn_protocols(["h2"])
    tls = fasttls.newtls("server", sctx)
    peer = StdlibPeer(cctx, False, "localhost")
    handshake_with_stdlib(tls, peer)
    assert tls.selected_alpn_protocol() == peer.obj.selected_alpn_protocol() == "h2"


# ----------------------------------------------------------------- certificates and keys


def encrypted_key(identity, password=PASSWORD):
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )


def serves(identity, sctx):
    """A client trusting identity's CA completes a handshake with sctx and sees the leaf."""
    client = fasttls.newtls("client", client_ctx(identity), "localhost")
    server = fasttls.newtls("server", sctx)
    pump(client, server)
    assert client.getpeercert(binary_form=True) == identity.leaf_der
    assert server.read(client.write(b"ok")) == b"ok"
    return True


def test_cert_and_key_from_memory(identity):
    ctx = fasttls.newctx()
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    assert serves(identity, ctx)


def test_cert_and_key_combined_in_memory(identity):
    ctx = fasttls.newctx()
    ctx.set_cert(identity.key_pem + identity.chain_pem)
    assert serves(identity, ctx)


def test_cert_and_key_from_files(identity, tmp_path):
    paths = identity.write(tmp_path)
    assert serves(identity, fasttls.newctx(certfile=str(paths["cert"]), keyfile=paths["key"]))
    ctx = fasttls.newctx()
    ctx.set_cert(paths["cert"], str(paths["key"]))  # PathLike and str both work
    assert serves(identity, ctx)
    combined = tmp_path / "combined.pem"
    combined.write_bytes(identity.key_pem + identity.chain_pem)
    assert serves(identity, fasttls.newctx(certfile=combined))


@pytest.mark.parametrize(
    "password",
    [
        PASSWORD,
        PASSWORD.encode(),
        lambda: PASSWORD,
        lambda: PASSWORD.encode(),
    ],
    ids=["str", "bytes", "callable-str", "callable-bytes"],
)
def test_encrypted_key_with_password(identities, password, tmp_path):
    identity = identities["rsa"]
    key = encrypted_key(identity)
    assert b"ENCRYPTED" in key
    ctx = fasttls.newctx()
    ctx.set_cert(identity.chain_pem, key, password=password)
    assert serves(identity, ctx)
    key_path = tmp_path / "encrypted-key.pem"
    key_path.write_bytes(key)
    cert_path = identity.write(tmp_path)["cert"]
    assert serves(identity, fasttls.newctx(certfile=cert_path, keyfile=key_path,
                                           password=password))


@pytest.mark.parametrize(
    "password",
    ["wrong", b"wrong", lambda: "wrong", None],
    ids=["str", "bytes", "callable", "missing"],
)
def test_encrypted_key_wrong_password(identities, password):
    identity = identities["ecdsa"]
    ctx = fasttls.newctx()
    with pytest.raises(fasttls.SSLError) as info:
        ctx.set_cert(identity.chain_pem, encrypted_key(identity), password=password)
    error = info.value
    assert not isinstance(error, fasttls.SSLCertVerificationError)
    message = str(error).lower()
    assert "key" in message
    assert "password" in message or "decrypt" in message


def test_key_does_not_match_certificate(identities):
    ctx = fasttls.newctx()
    with pytest.raises(fasttls.SSLError) as info:
        ctx.set_cert(identities["rsa"].chain_pem, identities["ecdsa"].key_pem)
    assert "match" in str(info.value).lower() or info.value.reason == "KEY_VALUES_MISMATCH"


def test_garbage_certificate(identities):
    ctx = fasttls.newctx()
    with pytest.raises(fasttls.SSLError):
        ctx.set_cert(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                     identities["rsa"].key_pem)
    with pytest.raises(fasttls.SSLError):
        ctx.set_cert(b"nothing at all", identities["rsa"].key_pem)


def test_missing_certificate_file(tmp_path):
    with pytest.raises(OSError):
        fasttls.newctx().set_cert(tmp_path / "absent.pem")


# ------------------------------------------------------------------------- trust anchors


def trusts(identity, ctx):
    client = fasttls.newtls("client", ctx, "localhost")
    server = fasttls.newtls("server", server_ctx(identity))
    pump(client, server)
    return client.getpeercert()["subjectAltName"] != ()


def test_cadata_forms(identities):
    identity = identities["ecdsa"]
    der = ssl.PEM_cert_to_DER_cert(identity.ca_pem.decode())
    for cadata in (identity.ca_pem, identity.ca_pem.decode(), der):
        ctx = fasttls.newctx()
        ctx.load_verify_locations(cadata=cadata)
        assert trusts(identity, ctx)
    assert trusts(identity, fasttls.newctx(cadata=der))


def test_cafile(identities, tmp_path):
    identity = identities["rsa"]
    cafile = identity.write(tmp_path)["ca"]
    assert trusts(identity, fasttls.newctx(cafile=cafile))
    ctx = fasttls.newctx()
    ctx.load_verify_locations(cafile=str(cafile))
    assert trusts(identity, ctx)


def test_capath(identities, tmp_path):
    openssl = require_program("openssl")
    identity = identities["rsa"]
    capath = tmp_path / "hashed"
    capath.mkdir()
    (capath / "ca.pem").write_bytes(identity.ca_pem)
    subprocess.run([openssl, "rehash", str(capath)], check=True, timeout=30,
                   capture_output=True)
    assert trusts(identity, fasttls.newctx(capath=capath))


def test_bad_cadata():
    with pytest.raises(fasttls.SSLError):
        fasttls.newctx(cadata=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_trusting_another_ca_fails(identities):
    ctx = fasttls.newctx(cadata=identities["rsa"].ca_pem)
    with pytest.raises(fasttls.SSLCertVerificationError):
        trusts(identities["ecdsa"], ctx)


# ------------------------------------------------------------------------------- keylog

KEYLOG_LINE = re.compile(r"^([A-Z_0-9]+) ([0-9a-f]{64}) ([0-9a-f]{64,})$")
TLS13_LABELS = {"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET"}


def keylog_lines(path):
    lines = [line for line in pathlib.Path(path).read_text().splitlines()
             if line and not line.startswith("#")]
    for line in lines:
        assert KEYLOG_LINE.match(line), line
    return set(lines)


@pytest.mark.parametrize("version", VERSIONS)
def test_keylog_matches_the_peer(identities, version, tmp_path):
    """Our client's key-log lines are exactly the secrets the stdlib server logged for the same
    connection (so Wireshark could decrypt it)."""
    identity = identities["ecdsa"]
    ours, theirs = tmp_path / "fasttls.keys", tmp_path / "stdlib.keys"
    sctx = stdlib_server_context(identity, version)
    sctx.keylog_filename = str(theirs)
    tls = fasttls.newtls("client", client_ctx(identity, keylog_filename=str(ours)),
                         "localhost")
    peer = StdlibPeer(sctx, server_side=True)
    handshake_with_stdlib(tls, peer)
    assert peer.receive(tls.write(b"x")) == b"x"
    lines = keylog_lines(ours)
    labels = {line.split()[0] for line in lines}
    if version == TLS13:
        assert labels == TLS13_LABELS
    else:
        assert labels == {"CLIENT_RANDOM"}
    assert len({line.split()[1] for line in lines}) == 1  # one connection, one client random
    assert lines == keylog_lines(theirs)


def test_keylog_both_roles_and_append(identities, tmp_path):
    path = tmp_path / "keys.log"
    path.write_text("# existing content is kept\n")
    ctx_options = {"keylog_filename": path}
    for _ in range(2):
        connected_pair(identities["rsa"], TLS13, client_options=ctx_options,
                       server_options=ctx_options)
    lines = keylog_lines(path)
    assert path.read_text().startswith("# existing content is kept\n")
    # two connections, each logged by both ends with identical lines
    assert len({line.split()[1] for line in lines}) == 2
    assert len(lines) == 2 * len(TLS13_LABELS)


def test_keylog_never_from_environment(identities, tmp_path, monkeypatch):
    """The native API never writes secrets because of SSLKEYLOGFILE (only an explicit
    keylog_filename does; the drop-in's create_default_context reads it, as the stdlib's)."""
    path = tmp_path / "env.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    cctx = client_ctx(identities["ecdsa"])
    assert cctx.keylog_filename is None
    assert fasttls.newctx().keylog_filename is None
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", server_ctx(identities["ecdsa"]))
    pump(client, server)
    assert not path.exists()


def test_keylog_explicit_from_environment(identities, tmp_path, monkeypatch):
    path = tmp_path / "env.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(path))
    cctx = client_ctx(identities["ecdsa"], keylog_filename=os.environ.get("SSLKEYLOGFILE"))
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", server_ctx(identities["ecdsa"]))
    pump(client, server)
    assert path.read_text().startswith("# TLS secrets log file, generated by OpenSSL / Python\n")
    labels = {line.split()[0] for line in keylog_lines(path)}
    assert labels == TLS13_LABELS


def test_no_keylog_by_default(identities, tmp_path, monkeypatch):
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    ctx = fasttls.newctx()
    assert ctx.keylog_filename is None


# ------------------------------------------------------------- sessions and idle buffers


@pytest.mark.parametrize("version", VERSIONS)
def test_session_resumption(identities, version):
    identity = identities["ecdsa"]
    cctx = client_ctx(identity, minimum_version=version, maximum_version=version)
    sctx = server_ctx(identity)
    first = fasttls.newtls("client", cctx, "localhost")
    pump(first, fasttls.newtls("server", sctx))
    assert not first.session_reused()
    session = first.session
    assert session is not None
    second = fasttls.newtls("client", cctx, "localhost", session=session)
    server = fasttls.newtls("server", sctx)
    pump(second, server)
    assert second.session_reused()
    assert server.session_reused()
    assert server.read(second.write(b"resumed")) == b"resumed"


def test_release_buffers_when_idle(identities):
    client, server = connected_pair(identities["ecdsa"], TLS13)
    for _ in range(3):
        client.release_buffers()
        server.release_buffers()
        assert server.read(client.write(b"a" * 20000)) == b"a" * 20000
        assert client.read(server.write(b"b")) == b"b"
