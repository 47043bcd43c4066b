"""Certificates made at test time with trustme: a CA and a leaf it issued, in the forms the
tests feed to fasttls and to the stdlib."""
import ssl

import trustme

KEY_TYPES = {"rsa": trustme.KeyType.RSA, "ecdsa": trustme.KeyType.ECDSA}


class Identity:
    """A CA and a leaf certificate it issued, with the PEM/DER forms the tests need."""

    def __init__(self, key_type, *names, not_before=None, not_after=None, ca=None):
        self.key_type = key_type
        self.ca = ca or trustme.CA(key_type=KEY_TYPES[key_type])
        self.leaf = self.ca.issue_cert(
            *names, key_type=KEY_TYPES[key_type], not_before=not_before, not_after=not_after
        )
        self.ca_pem = self.ca.cert_pem.bytes()
        self.key_pem = self.leaf.private_key_pem.bytes()
        self.chain_pem = b"".join(blob.bytes() for blob in self.leaf.cert_chain_pems)
        self.leaf_pem = self.leaf.cert_chain_pems[0].bytes()
        self.leaf_der = ssl.PEM_cert_to_DER_cert(self.leaf_pem.decode("ascii"))

    def write(self, directory):
        """Write ca.pem, cert.pem (chain), key.pem under `directory`; return their paths."""
        paths = {}
        for name, blob in (("ca", self.ca_pem), ("cert", self.chain_pem), ("key", self.key_pem)):
            path = directory / f"{self.key_type}-{name}.pem"
            path.write_bytes(blob)
            paths[name] = path
        return paths

    def stdlib_decoded(self, directory):
        """The stdlib's own decoding of the leaf (what getpeercert() returns in `ssl`)."""
        path = directory / f"{self.key_type}-leaf-decode.pem"
        path.write_bytes(self.leaf_pem)
        return ssl._ssl._test_decode_cert(str(path))

    def subject_ou(self):
        """The organizationalUnitName of the leaf: trustme makes it unique per certificate."""
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(self.leaf_pem)
        return cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
