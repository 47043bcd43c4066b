"""The ciphertext stream cut anywhere: handshake and application data delivered in random
fragments (down to one byte at a time), records glued together, a 64 MiB transfer checked by
digest, and server-speaks-first exchanges where the server's first data arrives glued to (or right
after) the end of the handshake."""
import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.certs import KEY_TYPES
from support.pairs import TLS12, TLS13, VERSIONS, VERSION_NAME, connected_pair, make_pair
from support.pump import deliver

FRAGMENT_SIZES = st.lists(st.integers(min_value=1, max_value=1500), min_size=1, max_size=12)
SOME_VERSION = st.sampled_from([TLS12, TLS13])
SOME_KEY_TYPE = st.sampled_from(sorted(KEY_TYPES))
GREETING = b"220 mail.example ESMTP ready\r\n"


def feed_fragmented(tls, data, sizes):
    """Deliver `data` to tls in pieces whose sizes cycle through `sizes` (through handshake()
    until it finishes, read() after). Returns (all bytes to send back, all plaintext)."""
    to_send, plaintext = [], []
    pos = count = 0
    while pos < len(data):
        size = sizes[count % len(sizes)]
        out, plain = deliver(tls, data[pos:pos + size])
        to_send.append(out)
        plaintext.append(plain)
        pos += size
        count += 1
    return b"".join(to_send), b"".join(plaintext)


def fragmented_handshake(client, server, sizes, limit=50):
    to_server = client.handshake()
    for _ in range(limit):
        to_client, plaintext = feed_fragmented(server, to_server, sizes)
        assert plaintext == b""
        to_server, plaintext = feed_fragmented(client, to_client, sizes)
        assert plaintext == b""
        if client.finished() and server.finished() and not to_server:
            return
    raise AssertionError(f"fragmented handshake did not complete within {limit} round trips")


def send_fragmented(sender, receiver, messages, sizes):
    """Each message through its own write(); the concatenated ciphertext delivered in
    fragments. Returns the plaintext the receiver produced (including anything buffered)."""
    stream = b"".join(sender.write(message) for message in messages)
    to_send, plaintext = feed_fragmented(receiver, stream, sizes)
    assert to_send == b""
    return plaintext + receiver.read()


@pytest.mark.parametrize("version", VERSIONS)
def test_one_byte_at_a_time(identity, version):
    client, server = make_pair(identity, version)
    fragmented_handshake(client, server, [1])
    assert client.version() == server.version() == VERSION_NAME[version]
    message = bytes(range(256)) * 20
    assert send_fragmented(client, server, [message, b"x"], [1]) == message + b"x"
    assert send_fragmented(server, client, [message[::-1]], [1]) == message[::-1]


@settings(max_examples=30, deadline=None)
@given(key_type=SOME_KEY_TYPE, version=SOME_VERSION, sizes=FRAGMENT_SIZES)
def test_handshake_survives_any_fragmentation(identities, key_type, version, sizes):
    client, server = make_pair(identities[key_type], version)
    fragmented_handshake(client, server, sizes)
    assert client.version() == server.version() == VERSION_NAME[version]
    assert client.cipher() == server.cipher()
    assert server.read(client.write(b"after")) == b"after"


@settings(max_examples=30, deadline=None)
@given(
    version=SOME_VERSION,
    lengths=st.lists(st.integers(min_value=0, max_value=40000), min_size=1, max_size=6),
    sizes=FRAGMENT_SIZES,
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_data_survives_any_fragmentation(identities, version, lengths, sizes, seed):
    rng = random.Random(seed)
    messages = [rng.randbytes(n) for n in lengths]
    client, server = connected_pair(identities["ecdsa"], version)
    assert send_fragmented(client, server, messages, sizes) == b"".join(messages)
    assert send_fragmented(server, client, messages[::-1], sizes) == b"".join(messages[::-1])


def test_many_records_in_one_read(identities):
    client, server = connected_pair(identities["rsa"], TLS13)
    messages = [b"%05d" % i for i in range(2000)]
    stream = b"".join(client.write(m) for m in messages)
    assert server.read(stream) == b"".join(messages)


def test_transfer_64_mib_sha256(identities):
    """64 MiB client -> server in 1 MiB writes, each chunk different, the ciphertext of each
    write cut at a different place; both ends hash what they saw."""
    client, server = connected_pair(identities["ecdsa"], TLS13)
    block = random.Random(64).randbytes(1 << 20)
    sent, received = hashlib.sha256(), hashlib.sha256()
    received_bytes = 0
    for i in range(64):
        chunk = block[i * 4099:] + block[:i * 4099]
        sent.update(chunk)
        ciphertext = client.write(chunk)
        cut = (i * 7919) % len(ciphertext)
        for piece in (ciphertext[:cut], ciphertext[cut:]):
            plaintext = server.read(piece)
            received.update(plaintext)
            received_bytes += len(plaintext)
    assert received_bytes == 64 << 20
    assert received.hexdigest() == sent.hexdigest()


def test_server_speaks_first_tls13(identity):
    """TLS 1.3: the server writes right after its handshake completes; the client receives it
    without sending anything after its Finished."""
    client, server = make_pair(identity, TLS13)
    server_flight = server.handshake(client.handshake())
    assert not server.finished()
    client_finished = client.handshake(server_flight)
    assert client.finished()
    assert client_finished, "the step completing the client handshake must return its Finished"
    after_handshake = server.handshake(client_finished)
    assert server.finished()
    assert client.read(after_handshake + server.write(GREETING)) == GREETING
    assert not client.pending_output
    assert client.write() == b""  # the client had nothing to say


def test_server_speaks_first_tls12(identity):
    """TLS 1.2: the server's final flight (ChangeCipherSpec, Finished) comes from the step that
    completes its handshake, glued here to its first data."""
    client, server = make_pair(identity, TLS12)
    client_flight = client.handshake(server.handshake(client.handshake()))
    assert client_flight and not client.finished()
    final_flight = server.handshake(client_flight)
    assert server.finished()
    assert final_flight, "the step completing the server handshake must return its Finished"
    assert client.handshake(final_flight + server.write(GREETING)) == b""
    assert client.finished()
    assert client.read() == GREETING


@settings(max_examples=30, deadline=None)
@given(version=SOME_VERSION, sizes=FRAGMENT_SIZES)
def test_server_speaks_first_fragmented(identities, version, sizes):
    client, server = make_pair(identities["ecdsa"], version)
    to_server = client.handshake()
    for _ in range(10):
        to_client, plaintext = feed_fragmented(server, to_server, sizes)
        if server.finished():
            break
        to_server, plaintext = feed_fragmented(client, to_client, sizes)
        assert plaintext == b""
    assert server.finished()
    to_server, plaintext = feed_fragmented(client, to_client + server.write(GREETING), sizes)
    assert client.finished()
    assert to_server == b""
    assert plaintext + client.read() == GREETING


@pytest.mark.parametrize("version", VERSIONS)
def test_client_data_glued_to_its_last_flight(identity, version):
    """A client that writes right after its handshake: its Finished and first data arrive in
    one buffer; the server completes its handshake and the data waits for its next read()."""
    client, server = make_pair(identity, version)
    flight = server.handshake(client.handshake())
    to_server = client.handshake(flight)
    if not client.finished():  # TLS 1.2: the server's final flight comes next
        final = server.handshake(to_server)
        assert server.finished()
        assert client.handshake(final) == b""
        to_server = b""
    assert client.finished()
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    glued = to_server + client.write(request)
    if server.finished():
        assert server.read(glued) == request
    else:
        server.handshake(glued)
        assert server.finished()
        assert server.read() == request
