"""KeyServer and KeylessClient in this process: signatures for every scheme verified with
`cryptography`, request ids and out-of-order answers, budgets, refusals, the allow-list."""
import asyncio
import socket
import ssl
import threading
import time

import pytest

import fasttls
import fasttls.keyless as keyless
from fasttls.keyless import _protocol as p
from support.signers import verify_signature
from support.threads import start_and_join

from .conftest import ALLOWED_EDGE, request, tls12_input, tls13_input

SCHEMES = {"p256": [0x0403], "p384": [0x0503],
           "rsa": [0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601]}


def verify(pki, name, scheme, signature, data):
    """Check a signature with the web server certificate's public key."""
    verify_signature(pki.public_key(name), scheme, signature, data)


class RawEdge:
    """An edge speaking the protocol by hand over the stdlib's ssl, to choose ids and batches."""

    def __init__(self, pki, port, cert=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(pki.server_ca)
        ctx.load_cert_chain(cert or pki.edge)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.reader = p.FrameReader()
        self.ready = []

    def send(self, *frames):
        self.sock.sendall(b"".join(frames))

    def responses(self, count):
        for _ in range(1000):
            if len(self.ready) >= count:
                break
            data = self.sock.recv(65536)
            if not data:
                break
            self.ready += [p.decode_response(body) for body in self.reader.feed(data)]
        got, self.ready = self.ready[:count], self.ready[count:]
        return got

    def close(self):
        self.sock.close()


@pytest.fixture
def raw_edge(pki, key_server):
    edges = []

    def make(cert=None):
        edge = RawEdge(pki, key_server.port, cert)
        edges.append(edge)
        return edge

    yield make
    for edge in edges:
        edge.close()


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_every_scheme_signed_through_the_key_server(pki, key_server, make_client, name):
    client = make_client(key_server.port)
    for scheme in SCHEMES[name]:
        for data in (tls13_input(32), tls13_input(48), tls12_input()):
            if scheme < 0x0800 and scheme != 0x0403 and data.startswith(b"\x20" * 64):
                continue  # PKCS#1 v1.5 is TLS 1.2 only (test_refused_input covers it)
            signature = client.sign(request(pki, name, scheme, data))
            verify(pki, name, scheme, signature, data)
    assert client.connects == 1  # one connection for everything


def test_answers_out_of_order_matched_by_id(pki, raw_edge):
    edge = raw_edge()
    rsa, p256 = pki.key_id("rsa"), pki.key_id("p256")
    # One write: the RSA request goes to the signing threads, the ECDSA one is signed inline,
    # so its answer comes first although it was sent second.
    edge.send(p.encode_request(41, 5000, rsa, 0x0804, None, tls13_input()),
              p.encode_request(7, 5000, p256, 0x0403, None, tls13_input()))
    first, second = edge.responses(2)
    assert (first.id, first.status) == (7, p.Status.OK)
    assert (second.id, second.status) == (41, p.Status.OK)


def test_many_threads_share_one_connection(pki, key_server, make_client):
    client = make_client(key_server.port)
    failures, done = [], []

    def work():
        for _ in range(30):
            data = tls13_input()
            try:
                verify(pki, "p256", 0x0403, client.sign(request(pki, data=data)), data)
                done.append(1)
            except Exception as exc:  # collected, asserted below
                failures.append(exc)

    start_and_join([threading.Thread(target=work) for _ in range(8)], 30)
    assert failures == [] and len(done) == 240
    assert client.connects == 1


def test_sign_async_on_the_callers_loop(pki, key_server, make_client):
    client = make_client(key_server.port)

    async def main():
        datas = [tls13_input() for _ in range(64)]
        ticks = 0

        async def ticker():  # the loop keeps running while signatures are awaited
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        sigs = await asyncio.wait_for(asyncio.gather(
            *(client.sign_async(request(pki, data=d)) for d in datas)), 10)
        task.cancel()
        for d, s in zip(datas, sigs):
            verify(pki, "p256", 0x0403, s, d)
        return ticks

    assert asyncio.run(main()) > 0


def test_unknown_key_id(pki, key_server, make_client):
    client = make_client(key_server.port)
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki, key_id=b"\x01" * 32))
    assert info.value.reason == "UNKNOWN_KEY_ID"
    assert "01" * 32 in str(info.value)
    assert isinstance(info.value, fasttls.SSLError) and isinstance(info.value, ssl.SSLError)
    client.sign(request(pki))  # the connection is still good


@pytest.mark.parametrize("data, scheme", [
    (b"a certificate's TBSCertificate, say", 0x0403),
    (b"\x20" * 64 + b"TLS 1.3, client CertificateVerify\x00" + b"h" * 32, 0x0403),
    (tls13_input(32), 0x0401),
])
def test_refused_input(pki, key_server, make_client, data, scheme):
    client = make_client(key_server.port)
    name = "rsa" if scheme == 0x0401 else "p256"
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki, name, scheme, data))
    assert info.value.reason == "REFUSED_INPUT"
    assert key_server.stats["REFUSED_INPUT"] >= 1 and key_server.stats["OK"] == 0


def test_scheme_that_does_not_fit_the_key(pki, key_server, make_client):
    client = make_client(key_server.port)
    for name, scheme in (("p256", 0x0804), ("p256", 0x0503), ("rsa", 0x0403), ("rsa", 0x1234)):
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki, name, scheme))
        assert info.value.reason == "BAD_SCHEME"


def test_spent_budget_is_answered_expired_not_signed(pki, raw_edge):
    edge = raw_edge()
    edge.send(p.encode_request(1, 0, pki.key_id("rsa"), 0x0804, None, tls13_input()),
              p.encode_request(2, 0, pki.key_id("p256"), 0x0403, None, tls13_input()),
              p.encode_request(3, 5000, pki.key_id("p256"), 0x0403, None, tls13_input()))
    answers = {a.id: a for a in edge.responses(3)}
    assert answers[1].status == answers[2].status == p.Status.EXPIRED
    assert "budget" in answers[1].message
    assert answers[3].status == p.Status.OK


def rsa_burst(pki, count, budget, **server_options):
    """Start a key server with `server_options`, send it `count` RSA-PSS requests (ids 1 to
    `count`, each with `budget` ms) in one write from one raw edge, and return the answers."""
    server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE],
                               **server_options).start_thread()
    try:
        edge = RawEdge(pki, server.port)
        rsa = pki.key_id("rsa")
        edge.send(*(p.encode_request(i, budget, rsa, 0x0804, None, tls13_input())
                    for i in range(1, count + 1)))
        answers = edge.responses(count)
        edge.close()
    finally:
        server.stop_thread()
    return answers


def test_budget_spent_in_the_queue_is_answered_expired(pki):
    # One signing thread, RSA (about 0.45 ms each here), 2 ms budgets: requests
    # handled together queue behind each other, and those whose budget ran out in the queue
    # are answered EXPIRED instead of signed. Every request is answered.
    answers = rsa_burst(pki, 60, 2, workers=1)
    assert sorted(a.id for a in answers) == list(range(1, 61))
    statuses = {a.status for a in answers}
    # (Whether the first ones make it depends on thread scheduling; that later ones do not,
    # on the cost of the signatures before them.)
    assert p.Status.EXPIRED in statuses and statuses <= {p.Status.OK, p.Status.EXPIRED}


def test_overloaded(pki):
    answers = rsa_burst(pki, 10, 5000, workers=1, max_pending=2)
    by_status = {}
    for a in answers:
        by_status.setdefault(a.status, []).append(a.id)
    assert by_status[p.Status.OK][:2] == [1, 2]
    assert p.Status.OVERLOADED in by_status


def test_overloaded_reaches_the_client_as_its_reason(pki, make_client):
    server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE], workers=1,
                               max_pending=1).start_thread()
    try:
        client = make_client(server.port)
        reasons = set()

        def one():
            try:
                client.sign(request(pki, "rsa", 0x0804))
                reasons.add("ok")
            except keyless.KeylessError as exc:
                reasons.add(exc.reason)

        start_and_join([threading.Thread(target=one) for _ in range(40)], 30)
        assert "ok" in reasons and reasons <= {"ok", "OVERLOADED"}
    finally:
        server.stop_thread()


def test_malformed_request_answered_with_its_id(pki, raw_edge):
    edge = raw_edge()
    good = p.encode_request(12, 1000, pki.key_id("p256"), 0x0403, None, tls13_input())
    body = good[4:] + b"junk"
    edge.send(len(body).to_bytes(4, "big") + body, good)
    bad, ok = edge.responses(2)
    assert (bad.id, bad.status) == (12, p.Status.INTERNAL) and "malformed" in bad.message
    assert (ok.id, ok.status) == (12, p.Status.OK)


def test_other_protocol_version_ends_the_connection(pki, raw_edge):
    edge = raw_edge()
    frame = bytearray(p.encode_request(3, 1000, pki.key_id("p256"), 0x0403, None, b"x"))
    frame[4] = 9
    edge.send(bytes(frame))
    (answer,) = edge.responses(1)
    assert (answer.id, answer.status) == (0, p.Status.INTERNAL)
    assert "version 9" in answer.message
    assert edge.responses(1) == []  # then the connection ends


def test_edge_not_on_the_allow_list(pki, key_server, make_client):
    client = make_client(key_server.port, cert=pki.unlisted)
    started = time.monotonic()
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki))
    assert time.monotonic() - started < 4  # told, not left to time out
    assert info.value.reason == "REFUSED_EDGE"
    assert "edge2.example" in str(info.value) and "allow-list" in str(info.value)
    assert key_server.stats["edges_refused"] >= 1 and key_server.stats["OK"] == 0


def test_edge_allowed_by_fingerprint(pki, make_client):
    server = keyless.KeyServer(pki.keys(), pki.server_context(),
                               [pki.unlisted_fingerprint]).start_thread()
    try:
        assert make_client(server.port, cert=pki.unlisted).sign(request(pki))
        with pytest.raises(keyless.KeylessError) as info:
            make_client(server.port).sign(request(pki))  # edge1: its name is not listed here
        assert info.value.reason == "REFUSED_EDGE"
    finally:
        server.stop_thread()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_edge_certificate_from_another_ca(pki, key_server, version):
    ctx = pki.client_context(pki.stranger)
    ctx.maximum_version = version
    client = keyless.KeylessClient("127.0.0.1", key_server.port, ctx, timeout=5)
    try:
        started = time.monotonic()
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki))
        assert time.monotonic() - started < 4
        assert info.value.reason == "REFUSED_EDGE", info.value
        assert "UNKNOWN_CA" in str(info.value)
    finally:
        client.close()
    assert key_server.stats["OK"] == 0


def test_edge_without_a_certificate(pki, key_server):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.server_ca)
    client = keyless.KeylessClient("127.0.0.1", key_server.port, ctx, timeout=5)
    try:
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki))
        assert info.value.reason == "REFUSED_EDGE", info.value
    finally:
        client.close()


def test_key_server_context_must_require_client_certificates(pki):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server)
    with pytest.raises(ValueError, match="CERT_REQUIRED"):
        keyless.KeyServer(pki.keys(), ctx, [ALLOWED_EDGE])
    with pytest.raises(ValueError, match="allow-list"):
        keyless.KeyServer(pki.keys(), pki.server_context(), [])
    for bad in ("sha256:" + "ab" * 31, "sha256:" + "zz" * 32, "sha256:" + "a b" * 21 + "a"):
        with pytest.raises(ValueError, match="64 hex digits") as info:
            keyless.KeyServer(pki.keys(), pki.server_context(), [bad])
        assert repr(bad) in str(info.value)  # names the entry
    with pytest.raises(TypeError):
        keyless.KeyServer(pki.keys(), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), [ALLOWED_EDGE])


def test_untrusted_key_server(pki, key_server):
    ctx = keyless.client_context(pki.edge, None, pki.edge_ca)  # trusts the wrong CA
    client = keyless.KeylessClient("127.0.0.1", key_server.port, ctx, timeout=5)
    try:
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki))
        assert info.value.reason == "UNREACHABLE"
        assert "verif" in str(info.value)
    finally:
        client.close()


def test_close_leaves_no_thread_and_fails_later_calls(pki, key_server):
    before = {t.ident for t in threading.enumerate()}
    client = keyless.KeylessClient("127.0.0.1", key_server.port, pki.client_context())
    client.sign(request(pki))
    assert client.connected
    client.close()
    client.close()  # idempotent
    assert {t.ident for t in threading.enumerate()} <= before
    assert client._loop.is_closed()
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki))
    assert info.value.reason == "CLOSED"


def test_server_close_disconnects_edges(pki, make_client):
    server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE]).start_thread()
    client = make_client(server.port)
    client.sign(request(pki))
    server.stop_thread()
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki))
    assert info.value.reason in ("CONNECTION_LOST", "UNREACHABLE")


def test_async_server_on_the_callers_loop(pki, make_client):
    async def main():
        async with keyless.KeyServer(pki.keys(), pki.server_context(),
                                     [ALLOWED_EDGE]) as server:
            client = make_client(server.port)
            data = tls12_input()
            signature = await client.sign_async(request(pki, "rsa", 0x0401, data))
            verify(pki, "rsa", 0x0401, signature, data)
            return server.stats["OK"]

    assert asyncio.run(asyncio.wait_for(main(), 20)) == 1


def test_signing_placement_is_checked_and_each_works(pki, make_client):
    with pytest.raises(ValueError, match="signing"):
        keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE], signing="gpu")
    for signing in ("inline", "threads"):
        server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE],
                                   signing=signing).start_thread()
        try:
            client = make_client(server.port)
            for name, scheme in (("p256", 0x0403), ("rsa", 0x0804)):
                data = tls13_input()
                verify(pki, name, scheme, client.sign(request(pki, name, scheme, data)), data)
        finally:
            server.stop_thread()


def test_answer_delay_stands_in_for_a_distant_key_server(pki, make_client):
    server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE],
                               answer_delay=0.05).start_thread()
    try:
        client = make_client(server.port)
        client.sign(request(pki))  # connected

        async def hundred():
            started = time.monotonic()
            await asyncio.wait_for(asyncio.gather(
                *(client.sign_async(request(pki)) for _ in range(100))), 10)
            return time.monotonic() - started

        elapsed = asyncio.run(hundred())
        # All 100 wait out the delay together (multiplexed), not one after another (5 s).
        assert 0.05 <= elapsed < 2.5
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki), 0.01)  # shorter than the delay: times out
        assert info.value.reason == "TIMEOUT"
    finally:
        server.stop_thread()


def test_cancelled_sign_async_is_forgotten(pki, make_client):
    # A handshake aborted while it waits for its signature cancels sign_async: the request is
    # dropped from the client at once, its late answer ignored, the connection kept.
    server = keyless.KeyServer(pki.keys(), pki.server_context(), [ALLOWED_EDGE],
                               answer_delay=0.5).start_thread()
    try:
        client = make_client(server.port)
        client.sign(request(pki))

        async def main():
            task = asyncio.ensure_future(client.sign_async(request(pki)))
            for _ in range(200):
                if client.in_flight:
                    break
                await asyncio.sleep(0.01)
            assert client.in_flight == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(200):
                if not client.in_flight:
                    break
                await asyncio.sleep(0.01)
            return client.in_flight

        assert asyncio.run(asyncio.wait_for(main(), 10)) == 0
        assert client.sign(request(pki))  # the late answer went nowhere; this one is matched
        assert client.connects == 1
    finally:
        server.stop_thread()


def test_reload_keys_reads_the_files_again(pki, tmp_path, make_client):
    keys_dir = tmp_path / "reload-keys"
    keys_dir.mkdir()
    (keys_dir / "p256.pem").write_bytes(pki.signing_files["p256"].read_bytes())
    store = keyless.KeyStore()
    store.load(keys_dir)
    server = keyless.KeyServer(store, pki.server_context(), [ALLOWED_EDGE]).start_thread()
    try:
        client = make_client(server.port)
        assert client.sign(request(pki, "p256"))
        with pytest.raises(keyless.KeylessError, match="UNKNOWN_KEY_ID"):
            client.sign(request(pki, "rsa", 0x0804))
        (keys_dir / "rsa.key").write_bytes(pki.signing_files["rsa"].read_bytes())
        assert server.reload_keys() == 2
        assert client.sign(request(pki, "rsa", 0x0804))
        (keys_dir / "bad.pem").write_text("not a key")
        with pytest.raises(fasttls.SSLError, match="bad.pem"):
            server.reload_keys()
        assert len(server.keys) == 2 and client.sign(request(pki, "rsa", 0x0804))
    finally:
        server.stop_thread()
