"""Certificate verification: the default context verifies chain and hostname, failures are
SSLCertVerificationError naming the cause, IP SANs, client certificates, the explicit opt-out, and
the alert a failing side hands out (which makes the peer fail with an error naming it)."""
import ssl

import pytest

import fasttls
from support.certs import Identity
from support.pairs import TLS13, VERSIONS, client_ctx, handshake_error, make_pair, server_ctx
from support.peers import (
    StdlibPeer,
    handshake_with_stdlib,
    stdlib_client_context,
    stdlib_server_context,
)
from support.pump import deliver, pump

# OpenSSL's X509_V_ERR_* numbers
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
CERT_HAS_EXPIRED = 10
HOSTNAME_MISMATCH = 62
IP_ADDRESS_MISMATCH = 64


def client_failure(server_identity, trusted_identity, hostname="localhost", version=None,
                   **client_options):
    """Handshake a client trusting `trusted_identity`'s CA with a server presenting
    `server_identity`; return (the verification error the client raised, the server)."""
    options = {} if version is None else {"minimum_version": version, "maximum_version": version}
    cctx = fasttls.newctx(cadata=trusted_identity.ca_pem, **options, **client_options)
    client = fasttls.newtls("client", cctx, hostname)
    server = fasttls.newtls("server", server_ctx(server_identity))
    error, failed, other = handshake_error(client, server)
    assert failed is client, f"expected the client to fail, the server did: {error!r}"
    assert isinstance(error, fasttls.SSLCertVerificationError), repr(error)
    assert isinstance(error, ssl.SSLCertVerificationError)
    assert isinstance(error, fasttls.SSLError)
    return error, server


def check_alert_reaches_fasttls_peer(error, peer, reason):
    """The failing side's alert, fed to the peer, makes the peer raise an error naming it."""
    assert isinstance(error.alert, bytes) and error.alert
    with pytest.raises(fasttls.SSLError) as told:
        deliver(peer, error.alert)
    assert told.value.reason == reason
    assert reason.split("_ALERT_")[1].lower().replace("_", " ") in str(told.value).lower()


# ------------------------------------------------------------------ server certificate checks


@pytest.mark.parametrize("version", VERSIONS)
def test_untrusted_ca(identities, stranger_identity, version):
    error, server = client_failure(stranger_identity, identities["ecdsa"], version=version)
    assert error.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    assert "unable to get local issuer certificate" in error.verify_message
    assert "unable to get local issuer certificate" in str(error)
    assert error.verify_message == "unable to get local issuer certificate"  # the stdlib's text
    assert stranger_identity.subject_ou() in error.verify_subject  # names the certificate
    assert error.verify_depth == 0 and stranger_identity.subject_ou() in str(error)
    check_alert_reaches_fasttls_peer(error, server, "TLSV1_ALERT_UNKNOWN_CA")


@pytest.mark.parametrize("version", VERSIONS)
def test_expired_certificate(expired_identity, version):
    error, server = client_failure(expired_identity, expired_identity, version=version)
    assert error.verify_code == CERT_HAS_EXPIRED
    assert "certificate has expired" in error.verify_message
    assert "certificate has expired" in str(error)
    assert expired_identity.subject_ou() in error.verify_subject
    assert expired_identity.subject_ou() in str(error)
    check_alert_reaches_fasttls_peer(error, server, "SSLV3_ALERT_CERTIFICATE_EXPIRED")


@pytest.mark.parametrize("version", VERSIONS)
def test_wrong_hostname(identities, version):
    identity = identities["rsa"]
    error, server = client_failure(identity, identity, hostname="www.example.com",
                                   version=version)
    assert error.verify_code == HOSTNAME_MISMATCH
    assert "Hostname mismatch" in str(error)
    assert "www.example.com" in str(error)
    check_alert_reaches_fasttls_peer(error, server, "SSLV3_ALERT_BAD_CERTIFICATE")


def test_wildcard_does_not_cover_two_labels():
    identity = Identity("ecdsa", "*.example.com")
    client, server = make_pair(identity, hostname="a.example.com")
    pump(client, server)
    assert client.getpeercert()["subjectAltName"] == (("DNS", "*.example.com"),)
    error, _ = client_failure(identity, identity, hostname="a.b.example.com")
    assert error.verify_code == HOSTNAME_MISMATCH


@pytest.fixture(scope="module")
def ip_only_identity():
    return Identity("ecdsa", "127.0.0.1", "::1")


@pytest.mark.parametrize("hostname", ["127.0.0.1", "::1"])
def test_ip_san_match(ip_only_identity, hostname):
    client, server = make_pair(ip_only_identity, hostname=hostname)
    pump(client, server)
    assert ("IP Address", "127.0.0.1") in client.getpeercert()["subjectAltName"]
    assert server.read(client.write(b"ok")) == b"ok"


@pytest.mark.parametrize("hostname", ["127.0.0.2", "::2"])
def test_ip_san_mismatch(ip_only_identity, hostname):
    error, server = client_failure(ip_only_identity, ip_only_identity, hostname=hostname)
    assert error.verify_code == IP_ADDRESS_MISMATCH
    assert "IP address mismatch" in str(error)
    assert hostname in str(error)


def test_ip_does_not_match_dns_san():
    """127.0.0.1 written as a DNS name in the certificate is not an IP SAN."""
    identity = Identity("ecdsa", "localhost")
    error, _ = client_failure(identity, identity, hostname="127.0.0.1")
    assert error.verify_code == IP_ADDRESS_MISMATCH


def test_default_context_verifies(identities):
    """No CA given: the system store is used, which does not trust a trustme CA."""
    client = fasttls.newtls("client", fasttls.newctx(), "localhost")
    server = fasttls.newtls("server", server_ctx(identities["ecdsa"]))
    error, failed, _ = handshake_error(client, server)
    assert failed is client
    assert isinstance(error, fasttls.SSLCertVerificationError)
    assert error.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY


def test_default_context_attributes():
    ctx = fasttls.newctx()
    assert ctx.check_hostname is True
    assert ctx.verify_mode in (None, ssl.CERT_REQUIRED)


def test_opt_out_accepts_anything(stranger_identity):
    ctx = fasttls.newctx(verify_mode=ssl.CERT_NONE, check_hostname=False)
    client = fasttls.newtls("client", ctx, "not-the-name.example")
    server = fasttls.newtls("server", server_ctx(stranger_identity))
    pump(client, server)
    assert client.getpeercert() == {}  # not verified: no decoded fields
    assert client.getpeercert(binary_form=True) == stranger_identity.leaf_der
    assert server.read(client.write(b"insecure but explicit")) == b"insecure but explicit"


def test_opt_out_with_strings(stranger_identity):
    ctx = fasttls.newctx(verify_mode="none", check_hostname=False)
    client = fasttls.newtls("client", ctx, "localhost")
    pump(client, fasttls.newtls("server", server_ctx(stranger_identity)))
    assert client.finished()


def test_check_hostname_off_still_verifies_chain(identities, stranger_identity):
    identity = identities["ecdsa"]
    client, server = make_pair(identity, hostname="wrong.example",
                               client_options={"check_hostname": False})
    pump(client, server)
    assert client.getpeercert()["subjectAltName"]
    error, _ = client_failure(stranger_identity, identity, check_hostname=False)
    assert error.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY


def test_alert_reaches_stdlib_server(stranger_identity, identities):
    """The alert from a client-side verification failure makes a stdlib server fail too."""
    tls = fasttls.newtls("client", client_ctx(identities["ecdsa"]), "localhost")
    peer = StdlibPeer(stdlib_server_context(stranger_identity, TLS13), server_side=True)
    with pytest.raises(fasttls.SSLCertVerificationError) as info:
        handshake_with_stdlib(tls, peer)
    assert info.value.alert
    peer.incoming.write(info.value.alert)
    with pytest.raises(ssl.SSLError) as told:
        peer.obj.do_handshake()
    assert told.value.reason == "TLSV1_ALERT_UNKNOWN_CA"


# ---------------------------------------------------------------------- client certificates


def client_cert_pair(server_identity, client_identity, version, presented):
    """A server that requires a client certificate from client_identity's CA; the client
    presents `presented` (an Identity or None)."""
    sctx = server_ctx(server_identity, verify_mode=ssl.CERT_REQUIRED,
                      cadata=client_identity.ca_pem)
    cctx = client_ctx(server_identity, minimum_version=version, maximum_version=version)
    if presented is not None:
        cctx.set_cert(presented.chain_pem, presented.key_pem)
    return fasttls.newtls("client", cctx, "localhost"), fasttls.newtls("server", sctx)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_certificate_present(identities, client_identity, version, tmp_path):
    client, server = client_cert_pair(identities["rsa"], client_identity, version,
                                      client_identity)
    pump(client, server)
    cert = server.getpeercert()
    expected = client_identity.stdlib_decoded(tmp_path)
    assert cert["subject"] == expected["subject"]
    assert cert["subjectAltName"] == (("DNS", "client.example"),)
    assert server.getpeercert(binary_form=True) == client_identity.leaf_der
    assert server.read(client.write(b"authenticated")) == b"authenticated"


@pytest.mark.parametrize("version", VERSIONS)
def test_client_certificate_absent(identities, client_identity, version):
    client, server = client_cert_pair(identities["rsa"], client_identity, version, None)
    error, failed, other = handshake_error(client, server)
    assert failed is server
    assert error.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"
    expected = ("TLSV13_ALERT_CERTIFICATE_REQUIRED" if version == TLS13
                else "SSLV3_ALERT_HANDSHAKE_FAILURE")
    check_alert_reaches_fasttls_peer(error, client, expected)


@pytest.mark.parametrize("version", VERSIONS)
def test_client_certificate_untrusted(identities, client_identity, stranger_identity, version):
    client, server = client_cert_pair(identities["rsa"], client_identity, version,
                                      stranger_identity)
    error, failed, other = handshake_error(client, server)
    assert failed is server
    assert isinstance(error, fasttls.SSLCertVerificationError)
    assert error.verify_code == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    check_alert_reaches_fasttls_peer(error, client, "TLSV1_ALERT_UNKNOWN_CA")


def test_client_certificate_optional(identities, client_identity):
    sctx = server_ctx(identities["rsa"], verify_mode=ssl.CERT_OPTIONAL,
                      cadata=client_identity.ca_pem)
    client = fasttls.newtls("client", client_ctx(identities["rsa"]), "localhost")
    server = fasttls.newtls("server", sctx)
    pump(client, server)
    assert server.getpeercert() is None


def test_client_certificate_to_stdlib_server(identities, client_identity):
    identity = identities["ecdsa"]
    sctx = stdlib_server_context(identity)
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_verify_locations(cadata=client_identity.ca_pem.decode())
    cctx = client_ctx(identity)
    cctx.set_cert(client_identity.chain_pem, client_identity.key_pem)
    tls = fasttls.newtls("client", cctx, "localhost")
    peer = StdlibPeer(sctx, server_side=True)
    handshake_with_stdlib(tls, peer)
    assert peer.obj.getpeercert(binary_form=True) == client_identity.leaf_der
    assert peer.receive(tls.write(b"hi")) == b"hi"


def test_client_certificate_from_stdlib_client(identities, client_identity, tmp_path):
    identity = identities["ecdsa"]
    sctx = server_ctx(identity, verify_mode="required", cadata=client_identity.ca_pem)
    cctx = stdlib_client_context(identity)
    client_identity.leaf.configure_cert(cctx)
    tls = fasttls.newtls("server", sctx)
    peer = StdlibPeer(cctx, False, "localhost")
    handshake_with_stdlib(tls, peer)
    assert peer.receive() == b""  # consume the tickets: the stdlib client is happy
    assert tls.getpeercert()["subject"] == client_identity.stdlib_decoded(tmp_path)["subject"]
    assert tls.getpeercert(True) == client_identity.leaf_der
