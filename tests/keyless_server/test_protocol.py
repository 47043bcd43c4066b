"""The wire format (fasttls.keyless._protocol) and the signing policy (_inputs), without
sockets."""
import os

import pytest

from fasttls.keyless import _protocol as p
from fasttls.keyless import refusal

from .conftest import tls12_input, tls13_input


def test_request_round_trip_and_frame_cutting():
    key_id = os.urandom(32)
    frames = [p.encode_request(i, 250, key_id, 0x0804, name, b"payload%d" % i)
              for i, name in ((1, "www.example"), (2**64 - 1, None), (7, "ü.example"))]
    stream = b"".join(frames)
    reader = p.FrameReader()
    bodies = []
    for i in range(0, len(stream), 5):  # arbitrary cuts, as TCP may deliver them
        bodies += reader.feed(stream[i:i + 5])
    requests = [p.decode_request(body) for body in bodies]
    assert [r.id for r in requests] == [1, 2**64 - 1, 7]
    assert [r.server_name for r in requests] == ["www.example", None, "ü.example"]
    assert all(r.key_id == key_id and r.scheme == 0x0804 and r.budget_ms == 250
               for r in requests)
    assert requests[2].payload == b"payload7"


def test_response_round_trip():
    reader = p.FrameReader()
    (body,) = reader.feed(p.encode_response(9, p.Status.OK, b"sig"))
    response = p.decode_response(body)
    assert (response.id, response.status, response.body) == (9, p.Status.OK, b"sig")
    (body,) = reader.feed(p.encode_response(3, p.Status.UNKNOWN_KEY, "no such key".encode()))
    assert p.decode_response(body).message == "no such key"
    assert p.Status.EXPIRED.reason == "TIMEOUT"
    assert p.Status.REFUSED_EDGE.reason == "REFUSED_EDGE"


def test_malformed_frames_are_protocol_errors():
    good = p.encode_request(5, 10, b"k" * 32, 0x0403, "x", b"data")[4:]
    with pytest.raises(p.ProtocolError, match="version"):
        p.decode_request(b"\x02" + good[1:])
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(good + b"extra")
    assert info.value.args[1] == 5  # the id to answer with
    with pytest.raises(p.ProtocolError):
        p.decode_request(good[:10])
    with pytest.raises(p.ProtocolError, match="limit"):
        p.FrameReader().feed(b"\xff\xff\xff\xff")
    with pytest.raises(p.ProtocolError):
        p.decode_response(b"\x01" + b"\0" * 8 + b"\0\0\x05ab")
    with pytest.raises(ValueError):
        p.encode_request(1, 1, b"short", 0x0403, None, b"")


@pytest.mark.parametrize("data", [tls13_input(32), tls13_input(48), tls12_input()])
def test_tls_server_signature_inputs_are_accepted(data):
    assert refusal(data, 0x0403) is None


def test_tls12_inputs_for_every_named_group():
    for group, size, first in ((23, 65, 4), (24, 97, 4), (25, 133, 4), (29, 32, 9), (30, 56, 9)):
        point = bytes([first]) + os.urandom(size - 1)
        data = os.urandom(64) + b"\x03" + group.to_bytes(2, "big") + bytes([size]) + point
        assert refusal(data, 0x0401) is None, group


@pytest.mark.parametrize("data, scheme, why", [
    (b"hello", 0x0403, "neither"),
    (b"", 0x0403, "neither"),
    (b"\x20" * 64 + b"TLS 1.3, client CertificateVerify\x00" + b"h" * 32, 0x0403, "neither"),
    (tls13_input(32)[:-1], 0x0403, "31-byte"),
    (tls13_input(64), 0x0403, "64-byte"),
    (tls13_input(32), 0x0401, "PKCS#1"),
    (tls12_input() + b"\0", 0x0403, "bytes after"),
    (tls12_input()[:-1], 0x0403, "not the 65 bytes"),
    (os.urandom(64) + b"\x01\x00\x17\x41" + b"\x04" * 65, 0x0403, "curve_type 1"),
    (os.urandom(64) + b"\x03\x01\x00\x41" + b"\x04" * 65, 0x0403, "unknown named group 256"),
    (os.urandom(64) + b"\x03\x00\x17\x41\x02" + b"\x00" * 64, 0x0403, "not uncompressed"),
    (os.urandom(4000), 0x0403, None),
])
def test_anything_else_is_refused(data, scheme, why):
    reason = refusal(data, scheme)
    assert reason is not None
    if why:
        assert why in reason


def test_keyless_error_is_fasttls_own():
    import ssl

    import fasttls
    from fasttls.keyless import KeylessError
    from fasttls.keyless._errors import keyless_error
    assert KeylessError is fasttls.KeylessError
    error = keyless_error("TIMEOUT", "no answer within 2 s")
    assert isinstance(error, ssl.SSLError) and error.reason == "TIMEOUT"
    assert str(error) == "keyless signing failed (TIMEOUT): no answer within 2 s"
