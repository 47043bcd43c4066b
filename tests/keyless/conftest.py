"""Keyless fixtures: server contexts whose certificate's key is held by a test signer
(support.signers) instead of the context."""
import pytest

import fasttls
from support.signers import LocalSigner


@pytest.fixture
def keyless_ctx():
    """keyless_ctx(identity, signer=None, **newctx options) -> (context, signer)."""

    def make(identity, signer=None, **options):
        signer = signer if signer is not None else LocalSigner(identity.key_pem)
        ctx = fasttls.newctx(**options)
        ctx.set_keyless_cert(identity.chain_pem, signer)
        return ctx, signer

    return make


class P384Identity:
    """An ECDSA P-384 CA and leaf for localhost (trustme makes only P-256), with the fields of
    support.certs.Identity that these tests use."""

    def __init__(self):
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = ec.generate_private_key(ec.SECP384R1())
        key = ec.generate_private_key(ec.SECP384R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fasttls P-384 test CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=7))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .sign(ca_key, hashes.SHA384()))
        leaf = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
                .issuer_name(ca_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=7))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                               critical=False)
                .sign(ca_key, hashes.SHA384()))
        pem = serialization.Encoding.PEM
        self.key_type = "p384"
        self.ca_pem = ca.public_bytes(pem)
        self.leaf_pem = leaf.public_bytes(pem)
        self.chain_pem = self.leaf_pem + self.ca_pem
        self.key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        self.spki_der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="session")
def p384_identity():
    return P384Identity()
