"""fasttls_sign.c through fasttls.keyless.PrivateKey: every scheme, verified with
`cryptography`; schemes that do not fit the key refused; key ids match the certificate's."""
import hashlib
import threading

import pytest
import trustme
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

import fasttls
from fasttls.keyless import KeylessError, KeyStore, PrivateKey, certificate_key_id
from support.signers import SCHEME_HASHES, verify_signature
from support.threads import start_and_join

FITS = {"p256": {0x0403}, "p384": {0x0503},
        "rsa": {0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601}}


def _pem(key, password=None):
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


@pytest.fixture(scope="module")
def keys():
    return {"p256": ec.generate_private_key(ec.SECP256R1()),
            "p384": ec.generate_private_key(ec.SECP384R1()),
            "rsa": rsa.generate_private_key(65537, 2048)}


@pytest.mark.parametrize("kind", sorted(FITS))
def test_every_scheme_signs_or_is_refused(keys, kind):
    key = keys[kind]
    loaded = PrivateKey(_pem(key))
    data = b"\x20" * 64 + b"TLS 1.3, server CertificateVerify\x00" + bytes(range(32))
    for scheme in sorted(SCHEME_HASHES) + [0x0807, 0x0203, 0xFFFF]:
        if scheme in FITS[kind]:
            assert loaded.fits(scheme)
            signature = loaded.sign(scheme, data)
            verify_signature(key.public_key(), scheme, signature, data)
            with pytest.raises(InvalidSignature):
                verify_signature(key.public_key(), scheme, signature, data + b"x")
        else:
            assert not loaded.fits(scheme)
            with pytest.raises(KeylessError) as info:
                loaded.sign(scheme, data)
            assert info.value.reason == "BAD_SCHEME"
            assert isinstance(info.value, fasttls.SSLError)


def test_pss_salt_is_the_hash_length(keys):
    key = keys["rsa"]
    loaded = PrivateKey(_pem(key))
    for scheme, h in ((0x0804, hashes.SHA256), (0x0806, hashes.SHA512)):
        signature = loaded.sign(scheme, b"m")
        key.public_key().verify(signature, b"m", padding.PSS(padding.MGF1(h()), h.digest_size),
                                h())
        with pytest.raises(InvalidSignature):  # another salt length does not verify
            key.public_key().verify(signature, b"m", padding.PSS(padding.MGF1(h()), 20), h())


def test_key_id_is_sha256_of_spki_and_matches_the_certificate():
    for key_type in (trustme.KeyType.ECDSA, trustme.KeyType.RSA):
        ca = trustme.CA(key_type=key_type)
        leaf = ca.issue_cert("edge.example", key_type=key_type)
        cert_pem = leaf.cert_chain_pems[0].bytes()
        spki = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        key = PrivateKey(leaf.private_key_pem.bytes())
        assert key.key_id == hashlib.sha256(spki).digest() == certificate_key_id(cert_pem)


def test_encrypted_key_needs_its_password(keys):
    pem = _pem(keys["p256"], b"secret")
    assert PrivateKey(pem, b"secret").key_type == "ec-p256"
    with pytest.raises(fasttls.SSLError):
        PrivateKey(pem)
    with pytest.raises(fasttls.SSLError):
        PrivateKey(pem, "wrong")


def test_unsupported_and_garbage_keys_are_refused():
    with pytest.raises(fasttls.SSLError, match="UNSUPPORTED"):
        PrivateKey(_pem(ec.generate_private_key(ec.SECP521R1())))
    with pytest.raises(fasttls.SSLError):
        PrivateKey(b"not a key")
    with pytest.raises(fasttls.SSLError):
        certificate_key_id(b"not a certificate")


def test_key_store_loads_files_and_directories(tmp_path, keys):
    (tmp_path / "a.pem").write_bytes(_pem(keys["p256"]))
    (tmp_path / "b.key").write_bytes(_pem(keys["rsa"]))
    (tmp_path / "notes.txt").write_text("ignored")
    store = KeyStore()
    store.load(tmp_path)
    assert len(store) == 2
    assert store.get(PrivateKey(_pem(keys["rsa"])).key_id).key_type == "rsa"
    assert store.get(b"\0" * 32) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeylessError):
        store.load(empty)


def test_one_key_signs_on_many_threads_at_once(keys):
    key = keys["p256"]
    loaded = PrivateKey(_pem(key))
    failures = []

    def work(i):
        for j in range(50):
            data = f"{i}-{j}".encode()
            try:
                verify_signature(key.public_key(), 0x0403, loaded.sign(0x0403, data), data)
            except Exception as exc:  # collected and asserted below
                failures.append(exc)

    assert not start_and_join([threading.Thread(target=work, args=(i,)) for i in range(8)], 30)
    assert failures == []
