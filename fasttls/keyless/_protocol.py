"""The keyless wire protocol, version 1 (docs/KEYLESS.md): length-prefixed binary frames.

Every frame is a u32 length (big-endian, counting what follows) and a body. The edge sends
requests, the key server answers each with one response carrying the request's id; answers
come in any order. Integers are big-endian.

    request  = version u8 (1) | id u64 | budget_ms u32 | key_id [32] | scheme u16
               | name_len u8 | server_name [name_len] (UTF-8, may be empty)
               | payload_len u16 | payload [payload_len]
    response = version u8 (1) | id u64 | status u8 | len u16 | signature, or (status != OK)
               a UTF-8 message saying why [len]

Response id 0 with a failure status is about the connection, not a request (e.g. the edge is
not on the allow-list): the key server closes the connection after it.
"""
import enum
import struct
from typing import Iterator, List, NamedTuple, Optional

__all__ = ["VERSION", "MAX_FRAME", "Status", "Request", "Response", "FrameReader",
           "ProtocolError", "encode_request", "decode_request", "encode_response",
           "decode_response"]

VERSION = 1
# The largest body either side accepts: a TLS signature input is under 200 bytes, an RSA-8192
# signature 1 KiB; anything far bigger is not this protocol.
MAX_FRAME = 8192

_REQUEST_HEAD = struct.Struct(">BQI32sHB")   # version, id, budget, key id, scheme, name length
_RESPONSE_HEAD = struct.Struct(">BQBH")       # version, id, status, length
_LENGTH = struct.Struct(">I")
_U16 = struct.Struct(">H")


class Status(enum.IntEnum):
    OK = 0
    UNKNOWN_KEY = 1      # no key with that key id
    REFUSED_INPUT = 2    # not a TLS server signature input
    BAD_SCHEME = 3       # unknown scheme, or one that does not fit the key
    OVERLOADED = 4       # too many requests in flight on the key server
    INTERNAL = 5         # the key server failed, or the request is malformed
    EXPIRED = 6          # the request's budget ran out before it could be signed
    REFUSED_EDGE = 7     # (id 0) the edge's certificate is not on the allow-list

    @property
    def reason(self) -> str:
        """The KeylessError reason an edge raises for this status."""
        return _REASONS[self]


_REASONS = {Status.OK: "OK", Status.UNKNOWN_KEY: "UNKNOWN_KEY_ID",
            Status.REFUSED_INPUT: "REFUSED_INPUT", Status.BAD_SCHEME: "BAD_SCHEME",
            Status.OVERLOADED: "OVERLOADED", Status.INTERNAL: "INTERNAL",
            Status.EXPIRED: "TIMEOUT", Status.REFUSED_EDGE: "REFUSED_EDGE"}


class ProtocolError(ValueError):
    """A frame that is not this protocol (the connection cannot continue)."""


class Request(NamedTuple):
    id: int
    budget_ms: int
    key_id: bytes
    scheme: int
    server_name: Optional[str]
    payload: bytes


class Response(NamedTuple):
    id: int
    status: int          # a Status, or a number this version does not know
    body: bytes          # the signature (OK) or the message

    @property
    def message(self) -> str:
        return self.body.decode("utf-8", "replace")


def encode_request(request_id: int, budget_ms: int, key_id: bytes, scheme: int,
                   server_name: Optional[str], payload: bytes) -> bytes:
    name = (server_name or "").encode("utf-8")
    if len(key_id) != 32:
        raise ValueError("a key id is 32 bytes (SHA-256 of the SubjectPublicKeyInfo)")
    if len(name) > 255:
        raise ValueError("server name longer than 255 bytes")
    if len(payload) > 0xFFFF:
        raise ValueError("payload longer than 65535 bytes")
    budget = max(0, min(int(budget_ms), 0xFFFFFFFF))
    body = b"".join((_REQUEST_HEAD.pack(VERSION, request_id, budget, key_id, scheme, len(name)),
                     name, _U16.pack(len(payload)), payload))
    return _LENGTH.pack(len(body)) + body


def decode_request(body: bytes) -> Request:
    """A request body (without its length prefix). ProtocolError if malformed; the error's
    args[1], when given, is the request id to answer with."""
    if len(body) < 1 or body[0] != VERSION:
        raise ProtocolError(f"unsupported protocol version {body[0] if body else None}")
    if len(body) < _REQUEST_HEAD.size + 2:
        raise ProtocolError("request too short")
    _, request_id, budget, key_id, scheme, name_len = _REQUEST_HEAD.unpack_from(body)
    at = _REQUEST_HEAD.size
    name = body[at:at + name_len]
    at += name_len
    if len(body) < at + 2:
        raise ProtocolError("request too short", request_id)
    (payload_len,) = _U16.unpack_from(body, at)
    at += 2
    if len(body) != at + payload_len:
        raise ProtocolError("request length does not match its fields", request_id)
    try:
        server_name = name.decode("utf-8") if name else None
    except UnicodeDecodeError:
        raise ProtocolError("server name is not UTF-8", request_id) from None
    return Request(request_id, budget, key_id, scheme, server_name, body[at:])


def encode_response(request_id: int, status: int, body: bytes = b"") -> bytes:
    if len(body) > 0xFFFF:
        raise ValueError("response body longer than 65535 bytes")
    frame = _RESPONSE_HEAD.pack(VERSION, request_id, status, len(body)) + body
    return _LENGTH.pack(len(frame)) + frame


def decode_response(body: bytes) -> Response:
    if len(body) < 1 or body[0] != VERSION:
        raise ProtocolError(f"unsupported protocol version {body[0] if body else None}")
    if len(body) < _RESPONSE_HEAD.size:
        raise ProtocolError("response too short")
    _, request_id, status, length = _RESPONSE_HEAD.unpack_from(body)
    if len(body) != _RESPONSE_HEAD.size + length:
        raise ProtocolError("response length does not match its fields")
    return Response(request_id, status, body[_RESPONSE_HEAD.size:])


class FrameReader:
    """Cuts a byte stream into frame bodies."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> List[bytes]:
        """The frames `data` completes (maybe none). ProtocolError for an oversized frame."""
        self._buffer += data
        return list(self._frames())

    def _frames(self) -> Iterator[bytes]:
        buf = self._buffer
        at = 0
        while len(buf) - at >= 4:
            (length,) = _LENGTH.unpack_from(buf, at)
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes (the limit is {self._max})")
            if len(buf) - at - 4 < length:
                break
            yield bytes(buf[at + 4:at + 4 + length])
            at += 4 + length
        del buf[:at]
