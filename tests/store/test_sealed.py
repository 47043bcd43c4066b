"""SealedStore: session blobs sealed with AES-256-GCM under a fleet key (in the C engine):
unreadable and useless without the key, bound to their store key, tamper-evident; rotation
opens blobs of previous keys; servers sharing the sealed store resume each other's sessions."""
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from support.pairs import VERSIONS, client_ctx, server_ctx, version_options
from support.pump import pump

import fasttls
from fasttls.store import MemoryStore, SealedStore, SealingKey

KEY = b"\x11" * 32
OTHER = b"\x22" * 32


@pytest.fixture(scope="module")
def ident(identities):
    return identities["ecdsa"]


def test_a_sealed_value_is_aes_256_gcm_bound_to_its_store_key():
    inner = MemoryStore()
    store = SealedStore(inner, SealingKey(KEY, key_id=b"k1"))
    store.set(b"A" * 32, b"secret session", 60)
    sealed = inner.get(b"A" * 32)
    assert b"secret session" not in sealed
    assert sealed[:4] == b"\x01\x02k1"
    # An independent AES-256-GCM implementation opens it: header + nonce + the store key are
    # the associated data, the tag comes last.
    header, nonce, body = sealed[:4], sealed[4:16], sealed[16:]
    assert AESGCM(KEY).decrypt(nonce, body, header + nonce + b"A" * 32) == b"secret session"
    assert store.get(b"A" * 32) == b"secret session"
    # Moved under another key, altered, or opened with another fleet's key: not found.
    inner.set(b"B" * 32, sealed, 60)
    assert store.get(b"B" * 32) is None
    altered = bytearray(sealed)
    altered[-1] ^= 1
    inner.set(b"A" * 32, bytes(altered), 60)
    assert store.get(b"A" * 32) is None
    inner.set(b"A" * 32, sealed, 60)
    assert SealedStore(inner, SealingKey(OTHER, key_id=b"k1")).get(b"A" * 32) is None
    assert store.rejected == 2


def test_rotation():
    inner = MemoryStore()
    old, new = SealingKey(KEY), SealingKey(OTHER)
    assert old.key_id != new.key_id
    store = SealedStore(inner, [old])
    store.set(b"o" * 32, b"under the old key", 60)
    store.rotate([new, old])
    store.set(b"n" * 32, b"under the new key", 60)
    assert inner.get(b"n" * 32)[2:2 + len(new.key_id)] == new.key_id
    assert store.get(b"o" * 32) == b"under the old key"  # a previous key still opens
    assert store.get(b"n" * 32) == b"under the new key"
    store.rotate([new])  # the old key retired: its blobs are "not found"
    assert store.get(b"o" * 32) is None
    assert store.get(b"n" * 32) == b"under the new key"


def test_keys_are_wiped_and_checked(tmp_path):
    secret = bytearray(KEY)
    key = SealingKey(secret)
    assert secret == bytearray(32) and key.key_id
    with pytest.raises(ValueError):
        SealingKey(b"short")
    with pytest.raises(ValueError):
        SealingKey(KEY, key_id=b"")
    path = tmp_path / "fleet.key"
    path.write_text(SealingKey.new_secret().hex() + "\n")
    from_file = SealingKey.from_file(path)
    store = SealedStore(MemoryStore(), from_file)
    store.set(b"x" * 32, b"v", 60)
    assert store.get(b"x" * 32) == b"v"
    with pytest.raises(TypeError):
        SealedStore(MemoryStore(), [])


@pytest.mark.parametrize("version", VERSIONS)
def test_servers_resume_through_a_sealed_store_and_only_with_the_key(ident, version):
    inner = MemoryStore()
    key = SealingKey(KEY)

    def ctx(store):
        c = server_ctx(ident)
        c.set_session_store(store)
        return c

    cctx = client_ctx(ident, **version_options(version))
    client = fasttls.newtls("client", cctx, "localhost")
    pump(client, fasttls.newtls("server", ctx(SealedStore(inner, key))))
    client.read(b"")
    for sealed in (inner.get(k) for k in inner.keys()):
        assert sealed[0] == 1  # nothing stored in the clear
    session = client.session
    # Same key, another context: resumes.
    again = fasttls.newtls("client", cctx, "localhost", session=session)
    server = fasttls.newtls("server", ctx(SealedStore(inner, SealingKey(KEY))))
    pump(again, server)
    assert server.session_reused()
    # Without the key (the raw store), or with another key: a full handshake.
    for store in (inner, SealedStore(inner, SealingKey(OTHER))):
        again = fasttls.newtls("client", cctx, "localhost", session=session)
        server = fasttls.newtls("server", ctx(store))
        pump(again, server)
        assert not server.session_reused() and again.finished()
