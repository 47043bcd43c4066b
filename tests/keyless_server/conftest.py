"""The keyless PKI for the key server tests: a CA for key servers, a dedicated edge CA, edges on
and off the allow-list, a stranger edge from another CA, and the signing keys (the private
halves of three web server certificates) the key server holds."""
import hashlib
import os
import sys
import types

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import fasttls.keyless as keyless
from support.interop import Process, wait_for_output

ALLOWED_EDGE = "edge1.example"


class Pki:
    def __init__(self, directory):
        self.dir = directory
        server_ca = trustme.CA()
        edge_ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        other_ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        self.server_ca = self._write("server-ca.pem", server_ca.cert_pem.bytes())
        self.edge_ca = self._write("edge-ca.pem", edge_ca.cert_pem.bytes())
        self.server = self._leaf("keyserver", server_ca.issue_cert("keys.example", "127.0.0.1"))
        self.edge = self._leaf("edge1", edge_ca.issue_cert(ALLOWED_EDGE))
        self.unlisted = self._leaf("edge2", edge_ca.issue_cert("edge2.example"))
        self.stranger = self._leaf("stranger", other_ca.issue_cert(ALLOWED_EDGE))
        with open(self.unlisted, "rb") as f:
            pem = f.read()
        der = __import__("ssl").PEM_cert_to_DER_cert(
            pem[pem.index(b"-----BEGIN CERTIFICATE"):].decode())
        self.unlisted_fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
        # The web servers' certificates whose keys live on the key server.
        web_ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
        self.web_ca = self._write("web-ca.pem", web_ca.cert_pem.bytes())
        self.unknown_web = web_ca.issue_cert("www-unknown.example",
                                             key_type=trustme.KeyType.ECDSA)
        self.signing = {}
        self.signing_files = {}
        for name, key_type in (("p256", trustme.KeyType.ECDSA), ("rsa", trustme.KeyType.RSA)):
            leaf = web_ca.issue_cert(f"www-{name}.example", key_type=key_type)
            self.signing[name] = leaf
            self.signing_files[name] = self._write(f"www-{name}.key",
                                                   leaf.private_key_pem.bytes())
        # A P-384 key too (trustme issues P-256 and RSA only): no certificate, its id from the key.
        self.p384 = ec.generate_private_key(ec.SECP384R1())
        self.signing_files["p384"] = self._write("www-p384.key", self.p384.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    def _write(self, name, data):
        path = self.dir / name
        path.write_bytes(data)
        return path

    def _leaf(self, name, leaf):
        return self._write(f"{name}.pem", leaf.private_key_and_cert_chain_pem.bytes())

    def public_key(self, name):
        if name == "p384":
            return self.p384.public_key()
        return x509.load_pem_x509_certificate(
            self.signing[name].cert_chain_pems[0].bytes()).public_key()

    def key_id(self, name):
        if name == "p384":
            return keyless.PrivateKey(self.signing_files["p384"].read_bytes()).key_id
        return keyless.certificate_key_id(self.signing[name].cert_chain_pems[0].bytes())

    def server_context(self):
        return keyless.server_context(self.server, None, self.edge_ca)

    def client_context(self, cert=None):
        return keyless.client_context(cert or self.edge, None, self.server_ca)

    def keys(self):
        return [keyless.PrivateKey(path.read_bytes()) for path in self.signing_files.values()]


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("keyless-pki"))


def tls13_input(hash_len=32):
    return b"\x20" * 64 + b"TLS 1.3, server CertificateVerify\x00" + os.urandom(hash_len)


def tls12_input():
    point = b"\x04" + os.urandom(64)
    return os.urandom(64) + b"\x03\x00\x17" + bytes([len(point)]) + point


def request(pki, key="p256", scheme=0x0403, data=None, key_id=None, server_name="www.example"):
    """A SigningRequest-shaped object (the KeylessClient takes anything with these four)."""
    return types.SimpleNamespace(data=tls13_input() if data is None else data, scheme=scheme,
                                 key_id=key_id or pki.key_id(key), server_name=server_name)


@pytest.fixture
def key_server(pki):
    """A key server in this process (on a thread of its own), allowing edge1 only."""
    server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE]).start_thread()
    yield server
    server.stop_thread()


@pytest.fixture
def make_client(pki):
    """KeylessClients closed at teardown."""
    clients = []

    def make(port, cert=None, **kwargs):
        kwargs.setdefault("timeout", 5.0)
        client = keyless.KeylessClient("127.0.0.1", port, pki.client_context(cert), **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def start_key_server(pki, tmp_path, port, name="keyserver", extra=()):
    """`python -m fasttls keyserver` in a child process holding every signing key, allowing
    edge1 only; returns once it listens (a support.interop.Process with .port; stop()
    kills it)."""
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    for key_type, path in pki.signing_files.items():
        (keys / f"{key_type}.pem").write_bytes(path.read_bytes())
    proc = Process([sys.executable, "-m", "fasttls", "keyserver", "--listen", f"127.0.0.1:{port}",
                    "--key", keys, "--cert", pki.server, "--client-ca", pki.edge_ca,
                    "--allow", ALLOWED_EDGE, "--log-level", "WARNING", *extra], tmp_path, name)
    listening = wait_for_output(proc.out, rb"listening on 127\.0\.0\.1:(\d+)", proc.proc)
    proc.port = int(listening.group(1))
    return proc
