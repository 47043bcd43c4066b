"""The certificates of the hostile-peer tests (support.hostile), made at test time: trustme for
the ordinary ones, ``cryptography`` for what trustme will not make (RSA-1024 keys, SHA-1
signatures, a self-signed leaf), which fasttls at OpenSSL security level 2 must reject."""
import datetime
import ipaddress

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fasttls hostile tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Cert:
    """A leaf (chain PEM, key PEM) and the PEM of the CA that a verifier should trust."""

    def __init__(self, name, chain_pem, key_pem, ca_pem):
        self.name, self.chain_pem, self.key_pem, self.ca_pem = name, chain_pem, key_pem, ca_pem
        self.paths = None

    @classmethod
    def from_trustme(cls, name, ca, leaf, send_chain=True):
        pems = leaf.cert_chain_pems if send_chain else leaf.cert_chain_pems[:1]
        return cls(name, b"".join(p.bytes() for p in pems), leaf.private_key_pem.bytes(),
                   ca.cert_pem.bytes())

    def write(self, directory):
        """Write cert/key files (for the stdlib and openssl peers) once; return their paths."""
        if self.paths is None:
            cert, key = directory / f"{self.name}-cert.pem", directory / f"{self.name}-key.pem"
            cert.write_bytes(self.chain_pem)
            key.write_bytes(self.key_pem)
            self.paths = (str(cert), str(key))
        return self.paths


SHA256_WITH_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
SHA1_WITH_RSA = bytes.fromhex("300d06092a864886f70d0101050500")


def _der(tag, body):
    n = len(body)
    size = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body


def _resign_sha1(cert, ca_key):
    """The same certificate signed with SHA-1 (cryptography no longer signs certificates with
    SHA-1, so the algorithm identifier in the TBS part is swapped and the TBS signed by hand)."""
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(SHA256_WITH_RSA) == 1
    tbs = tbs.replace(SHA256_WITH_RSA, SHA1_WITH_RSA)
    signature = ca_key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())
    der = _der(0x30, tbs + SHA1_WITH_RSA + _der(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def crafted_cert(name, names, key_bits=2048, ca_bits=2048, sha1=False, self_signed=False):
    """A CA and a leaf made with `cryptography`, to get what trustme will not make: small RSA
    keys, SHA-1 signatures, a self-signed leaf."""
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    if self_signed:
        ca_key, ca_subject = leaf_key, _name(name)
    else:
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=ca_bits)
        ca_subject = _name(f"{name} CA")
        ca_cert = (
            x509.CertificateBuilder().subject_name(ca_subject).issuer_name(ca_subject)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
    sans = [x509.IPAddress(ipaddress.ip_address(n)) if n[0].isdigit() else x509.DNSName(n)
            for n in names]
    leaf = (
        x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca_subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    if sha1:
        leaf = _resign_sha1(leaf, ca_key)
    ca_pem = _pem(leaf) if self_signed else _pem(ca_cert)
    return Cert(name, _pem(leaf), _key_pem(leaf_key), ca_pem)


class Certs:
    """Every certificate the cases use, made once per session."""

    def __init__(self):
        ecdsa, rsa_type = trustme.KeyType.ECDSA, trustme.KeyType.RSA
        server_ca = trustme.CA(key_type=ecdsa)
        client_ca = trustme.CA(key_type=ecdsa)
        stranger_ca = trustme.CA(key_type=ecdsa)
        rsa_ca = trustme.CA(key_type=rsa_type)
        names = ("localhost", "127.0.0.1")
        past = (datetime.datetime(2019, 1, 1), datetime.datetime(2020, 1, 1))
        future = (datetime.datetime(2090, 1, 1), datetime.datetime(2091, 1, 1))

        def leaf(name, ca, *idents, when=(None, None), key_type=ecdsa, chain=True):
            issued = ca.issue_cert(*idents, not_before=when[0], not_after=when[1],
                                   key_type=key_type)
            return Cert.from_trustme(name, ca, issued, send_chain=chain)

        self.server = leaf("server", server_ca, *names)
        self.server_rsa = leaf("server-rsa", rsa_ca, *names, key_type=rsa_type)
        self.expired = leaf("expired", server_ca, *names, when=past)
        self.not_yet_valid = leaf("not-yet-valid", server_ca, *names, when=future)
        self.untrusted = leaf("untrusted", stranger_ca, *names)
        self.other_host = leaf("other-host", server_ca, "other.example", "10.1.2.3")
        self.self_signed = crafted_cert("self-signed", names, self_signed=True)
        self.rsa1024 = crafted_cert("rsa1024", names, key_bits=1024)
        self.rsa1024_ca = crafted_cert("rsa1024-ca", names, ca_bits=1024)
        self.sha1 = crafted_cert("sha1", names, sha1=True)
        intermediate = server_ca.create_child_ca(key_type=ecdsa)
        self.leaf_only = Cert.from_trustme(
            "leaf-only", server_ca, intermediate.issue_cert(*names, key_type=ecdsa), False)
        self.client = leaf("client", client_ca, "client.example")
        self.client_stranger = leaf("client-stranger", stranger_ca, "client.example")
        self.client_expired = leaf("client-expired", client_ca, "client.example", when=past)
        self.client_self_signed = crafted_cert("client-self-signed", ["client.example"],
                                               self_signed=True)
        self.client_rsa1024 = crafted_cert("client-rsa1024", ["client.example"], key_bits=1024)
        self.client_sha1 = crafted_cert("client-sha1", ["client.example"], sha1=True)
        self.client_ca_pem = client_ca.cert_pem.bytes()
