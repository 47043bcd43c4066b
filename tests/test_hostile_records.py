"""Hostile peers, records (issue 4, section 3): garbage and malformed records (some sealed under
the real session keys), and close_notify as the end of the data. The case runner and the rules
every case follows: support.hostile."""
import os

import pytest

from support.hostile import (
    Case,
    Error,
    params,
    raw_to_client,
    raw_to_server,
    run_case,
    sealed_session,
)
from support.pairs import TLS12, TLS13
from support.records import ALERT, APPLICATION_DATA, CLOSE_NOTIFY, HANDSHAKE, record


def tampered_record(fasttls_role, version):
    """A real application-data record from the stdlib peer with one ciphertext byte flipped."""

    def scenario(env):
        tls, sealer = sealed_session(env, fasttls_role, version, env.certs)
        good = sealer.seal(APPLICATION_DATA, b"authentic")
        env.got(tls.read(good))
        bad = bytearray(sealer.seal(APPLICATION_DATA, b"forged payload"))
        bad[-20] ^= 0x01
        env.got(tls.read(bytes(bad)))
        env.got(tls.read(b""))
        raise AssertionError("fasttls accepted a tampered record")

    return scenario


def oversized_record(fasttls_role, version, length):
    """A record header announcing `length` bytes of ciphertext (the limit is 2^14+256 for TLS
    1.3, 2^14+2048 for 1.2), and that many bytes, after a finished handshake."""

    def scenario(env):
        tls, sealer = sealed_session(env, fasttls_role, version, env.certs)
        env.got(tls.read(sealer.seal(APPLICATION_DATA, b"authentic")))
        env.got(tls.read(record(APPLICATION_DATA, os.urandom(length))))
        raise AssertionError("fasttls accepted an oversized record")

    return scenario


def record_after_close_notify(fasttls_role, version, together):
    """The peer sends data, close_notify, then a perfectly authentic record after it (sealed
    with the next sequence number). fasttls must stop at close_notify."""

    def scenario(env):
        tls, sealer = sealed_session(env, fasttls_role, version, env.certs)
        flights = [sealer.seal(APPLICATION_DATA, b"before close"),
                   sealer.seal(ALERT, CLOSE_NOTIFY),
                   sealer.seal(APPLICATION_DATA, b"INJECTED after close_notify")]
        if together:
            flights = [b"".join(flights)]
        for data in flights:
            env.got(tls.read(data))
        for _ in range(3):
            env.got(tls.read(b""))
        assert tls.eof, "close_notify was not noticed"
        env.got(tls.read(sealer.seal(APPLICATION_DATA, b"INJECTED again")))

    return scenario


def garbage_after_close_notify(env):
    """A stdlib peer sends data and close_notify (real ones), then junk follows."""
    tls, sealer = sealed_session(env, "client", TLS13, env.certs)
    env.got(tls.read(sealer.seal(APPLICATION_DATA, b"before close")))
    env.got(tls.read(sealer.seal(ALERT, CLOSE_NOTIFY) + b"\x17\x03\x03\x00\x05junk!"))
    assert tls.eof
    env.got(tls.read(b"GET / HTTP/1.0\r\n\r\n"))


CASES = [
    # ---- garbage and malformed records
    Case("http-request-to-server", "server", "raw",
         raw_to_server(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"), Error, "http request",
         reason="HTTP_REQUEST"),
    Case("garbage-to-server", "server", "raw", raw_to_server(b"\x00\x01garbage" * 64), Error,
         "wrong version number"),
    Case("garbage-reply-to-client", "client", "raw", raw_to_client(b"\xffgarbage" * 64), Error,
         "wrong version number"),
    Case("tampered-record-to-client-tls13", "client", "raw", tampered_record("client", TLS13),
         Error, "bad record mac", allowed=b"authentic"),
    Case("tampered-record-to-server-tls12", "server", "raw", tampered_record("server", TLS12),
         Error, "bad record mac", allowed=b"authentic"),
    Case("oversized-handshake-record", "server", "raw",
         raw_to_server(record(HANDSHAKE, b"\x01" + b"\x00" * (2 ** 14 + 256))), Error,
         "length too long"),
    Case("oversized-record-to-client-tls13", "client", "raw",
         oversized_record("client", TLS13, 2 ** 14 + 256 + 1), Error, "length too long",
         allowed=b"authentic"),
    Case("oversized-record-to-server-tls12", "server", "raw",
         oversized_record("server", TLS12, 2 ** 14 + 2048 + 1), Error, "length too long",
         allowed=b"authentic"),
    # ---- close_notify is the end
    Case("record-after-close-notify-tls13-client", "client", "raw",
         record_after_close_notify("client", TLS13, together=False), None,
         allowed=b"before close"),
    Case("record-after-close-notify-tls13-server", "server", "raw",
         record_after_close_notify("server", TLS13, together=True), None,
         allowed=b"before close"),
    Case("record-after-close-notify-tls12-server", "server", "raw",
         record_after_close_notify("server", TLS12, together=True), None,
         allowed=b"before close"),
    Case("garbage-after-close-notify", "client", "raw", garbage_after_close_notify, None,
         allowed=b"before close"),
]


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_peer(case, hostile_certs, tmp_path):
    run_case(case, hostile_certs, tmp_path)
