"""The record layer under abuse: close_notify versus truncation, garbage instead of TLS, forged
(bit-flipped) and truncated records. Every failure must be a fasttls exception with a meaningful
reason, nothing may crash, and a forged record must never yield plaintext."""
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fasttls
from support.pairs import TLS12, TLS13, VERSIONS, connected_pair, make_pair, server_ctx

SECRET = b"attack at dawn, the password is swordfish"
SOME_VERSION = st.sampled_from([TLS12, TLS13])


# ---------------------------------------------------------------- close_notify and truncation


@pytest.mark.parametrize("version", VERSIONS)
def test_close_notify_sets_eof(identities, version):
    client, server = connected_pair(identities["ecdsa"], version)
    assert not server.eof
    stream = client.write(b"last words") + client.close()
    assert server.read(stream) == b"last words"
    assert server.eof
    assert server.read() == b""
    assert server.eof


@pytest.mark.parametrize("version", VERSIONS)
def test_close_notify_alone(identities, version):
    client, server = connected_pair(identities["rsa"], version)
    alert = client.close()
    assert alert[:1] in (b"\x15", b"\x17")  # an alert record (TLS 1.3: disguised as data)
    assert server.read(alert) == b""
    assert server.eof
    # and the other way round: the server answers with its own close_notify
    reply = server.close()
    assert reply
    assert client.read(reply) == b""
    assert client.eof


@pytest.mark.parametrize("version", VERSIONS)
def test_nothing_after_close_notify_is_returned(identities, version):
    client, server = connected_pair(identities["ecdsa"], version)
    first = client.write(b"first ")
    second = client.write(b"before")
    alert = client.close()
    assert server.read(first + second + alert + first) == b"first before"
    assert server.eof
    # a genuine record of this connection, replayed after the close, is not returned
    assert server.read(second) == b""
    assert server.read(b"\x17\x03\x03\x00\x05hello") == b""
    assert server.eof


@pytest.mark.parametrize("version", VERSIONS)
def test_fatal_alert_is_not_close_notify(identities, version):
    """A fatal alert after the handshake (here bad_record_mac, provoked by a forged record) is
    an error naming it, not a clean end: eof stays False."""
    client, server = connected_pair(identities["ecdsa"], version)
    forged = bytearray(client.write(SECRET))
    forged[-1] ^= 0x01
    with pytest.raises(fasttls.SSLError) as info:
        server.read(bytes(forged))
    alert = info.value.alert
    assert alert
    with pytest.raises(fasttls.SSLError) as told:
        client.read(alert)
    assert told.value.reason == "SSLV3_ALERT_BAD_RECORD_MAC"
    assert not client.eof


@pytest.mark.parametrize("version", VERSIONS)
def test_write_after_close_raises_zero_return(identities, version):
    client, server = connected_pair(identities["ecdsa"], version)
    assert client.close()
    with pytest.raises(fasttls.SSLZeroReturnError) as info:
        client.write(b"more")
    assert isinstance(info.value, ssl.SSLZeroReturnError)


def test_close_twice_is_safe(identities):
    client, server = connected_pair(identities["ecdsa"], TLS13)
    first = client.close()
    assert first
    assert client.close() == b""
    assert server.read(first) == b"" and server.eof


def test_close_before_handshake_sends_nothing(identities):
    client, _ = make_pair(identities["ecdsa"])
    assert client.close() == b""


def test_context_manager(identities):
    client, server = connected_pair(identities["ecdsa"], TLS13)
    with client as entered:
        assert entered is client
        assert server.read(client.write(b"inside")) == b"inside"


@pytest.mark.parametrize("version", VERSIONS)
def test_truncation_is_not_eof(identities, version):
    """A record cut short is just 'not yet': no plaintext, no eof, no error; the rest of it
    completes it. Only close_notify sets eof."""
    client, server = connected_pair(identities["ecdsa"], version)
    record = client.write(SECRET)
    for cut in (1, 5, len(record) // 2, len(record) - 1):
        assert server.read(record[:cut]) == b""
        assert not server.eof
        assert server.read(record[cut:]) == SECRET
        record = client.write(SECRET)
    assert server.read(b"") == b""
    assert not server.eof


# ---------------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    "garbage, reason, alerts",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP_REQUEST", False, id="http"),
        pytest.param(b"\x00" * 64, "WRONG_VERSION_NUMBER", False, id="zeros"),
        pytest.param(b"\x16\x03\x01\x00\x05hello", "UNEXPECTED_MESSAGE", True, id="bad-hello"),
        pytest.param(b"\x17\x03\x03\x00\x10" + b"a" * 16, "UNEXPECTED_MESSAGE", True,
                     id="data-first"),
        pytest.param(b"\x16\x03\x03\xff\xff" + b"a" * 100, "PACKET_LENGTH_TOO_LONG", True,
                     id="oversized"),
    ],
)
def test_garbage_to_server(identities, garbage, reason, alerts):
    server = fasttls.newtls("server", server_ctx(identities["rsa"]))
    with pytest.raises(fasttls.SSLError) as info:
        server.handshake(garbage)
    error = info.value
    assert isinstance(error, ssl.SSLError)
    assert error.reason == reason
    assert error.library == "SSL"
    assert reason.lower().replace("_", " ") in str(error).lower()
    if alerts:  # a plaintext fatal alert (level 2) naming the problem
        assert error.alert[:1] == b"\x15" and error.alert[5:6] == b"\x02", error.alert
    else:
        assert isinstance(error.alert, bytes)


def test_garbage_to_client(identities):
    client, _ = make_pair(identities["rsa"])
    client.handshake()
    with pytest.raises(fasttls.SSLError) as info:
        client.handshake(b"\x00" * 64)
    assert info.value.reason == "WRONG_VERSION_NUMBER"


@pytest.mark.parametrize("version", VERSIONS)
def test_garbage_after_handshake(identities, version):
    client, server = connected_pair(identities["rsa"], version)
    with pytest.raises(fasttls.SSLError) as info:
        server.read(b"\x00" * 64)
    assert info.value.reason
    assert str(info.value)


@settings(max_examples=60, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=600), stage=st.sampled_from(["server", "client"]))
def test_random_bytes_during_handshake_never_crash(identities, garbage, stage):
    client, server = make_pair(identities["ecdsa"])
    client_hello = client.handshake()
    tls = server if stage == "server" else client
    try:
        tls.handshake(garbage)
        if stage == "server":  # garbage was at most an incomplete record: the real hello then
            tls.handshake(client_hello)
    except fasttls.SSLError as error:
        assert error.reason
        assert isinstance(error.alert, bytes)
        # a broken connection stays broken and keeps raising our errors, never crashing
        with pytest.raises(fasttls.SSLError):
            for _ in range(3):
                tls.handshake(client_hello)
                if tls.finished():
                    raise AssertionError("a connection that failed went on to finish")


@settings(max_examples=60, deadline=None)
@given(version=SOME_VERSION, garbage=st.binary(min_size=1, max_size=600))
def test_random_bytes_after_handshake_never_yield_plaintext(identities, version, garbage):
    client, server = connected_pair(identities["ecdsa"], version)
    try:
        plaintext = server.read(garbage)
    except fasttls.SSLError as error:
        assert error.reason
    else:
        assert plaintext == b""  # at most the beginning of a record


# ---------------------------------------------------------------------------------- forgery


@pytest.mark.parametrize("version", VERSIONS)
def test_forged_record_is_rejected(identities, version):
    client, server = connected_pair(identities["ecdsa"], version)
    record = bytearray(client.write(SECRET))
    following = client.write(b"the next record")
    record[len(record) // 2] ^= 0x01
    with pytest.raises(fasttls.SSLError) as info:
        server.read(bytes(record))
    error = info.value
    assert error.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
    assert "bad record mac" in str(error)
    assert error.alert, "a bad_record_mac alert should be handed out"
    # the client, told about it, fails with an error naming the alert
    with pytest.raises(fasttls.SSLError) as told:
        client.read(error.alert)
    assert told.value.reason == "SSLV3_ALERT_BAD_RECORD_MAC"
    # the broken connection never yields plaintext again, even for a genuine record
    try:
        plaintext = server.read(following)
    except fasttls.SSLError:
        pass
    else:
        assert plaintext == b""


@settings(max_examples=60, deadline=None)
@given(version=SOME_VERSION, position=st.integers(min_value=0), mask=st.integers(1, 255))
def test_any_flipped_byte_never_yields_plaintext(identities, version, position, mask):
    client, server = connected_pair(identities["ecdsa"], version)
    record = bytearray(client.write(SECRET))
    position %= len(record)
    record[position] ^= mask
    try:
        plaintext = server.read(bytes(record))
    except fasttls.SSLError as error:
        assert error.reason
        return
    # only a damaged header can make the record look incomplete: then nothing comes out
    assert position < 5, "a forged record body was accepted without error"
    assert plaintext == b""


@pytest.mark.parametrize("version", VERSIONS)
def test_error_after_good_records_is_not_lost(identities, version):
    """Good records then a forged one in the same input: the good plaintext may be returned
    first, but the failure must then surface (never silently dropped)."""
    client, server = connected_pair(identities["ecdsa"], version)
    good = client.write(b"good")
    forged = bytearray(client.write(SECRET))
    forged[-3] ^= 0x80
    try:
        first = server.read(good + bytes(forged))
    except fasttls.SSLError as error:
        assert error.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"
        return
    assert first == b"good"
    with pytest.raises(fasttls.SSLError) as info:
        server.read()
    assert info.value.reason == "DECRYPTION_FAILED_OR_BAD_RECORD_MAC"


@pytest.mark.parametrize("version", VERSIONS)
def test_truncated_record_followed_by_more_is_rejected(identities, version):
    """A record missing its last byte, then the next record: the bytes no longer line up, the
    first record fails authentication, and nothing of either is returned."""
    client, server = connected_pair(identities["ecdsa"], version)
    first = client.write(SECRET)
    second = client.write(b"second " + SECRET)
    with pytest.raises(fasttls.SSLError) as info:
        assert server.read(first[:-1]) == b""
        server.read(second)
    assert info.value.reason


def test_forged_handshake_message_fails(identities):
    """A byte flipped inside the server's first flight makes the client fail (TLS 1.3 encrypts
    most of it; TLS 1.2's Finished covers the transcript)."""
    for version in (TLS12, TLS13):
        client, server = make_pair(identities["ecdsa"], version)
        flight = bytearray(server.handshake(client.handshake()))
        flight[-10] ^= 0x40
        with pytest.raises(fasttls.SSLError) as info:
            out = client.handshake(bytes(flight))
            server.handshake(out)  # TLS 1.2: the server notices when checking the Finished
        assert info.value.reason
