"""Issue 9's keyless demonstration, end to end: `python -m fasttls keyserver --answer-delay-ms 50`
in a child process (mutual TLS, edge1 allow-listed), a fasttls.aio edge whose keyless context
signs through a KeylessClient, and 100 concurrent stdlib asyncio TLS clients.

- All 100 handshakes complete (verified, data echoed) at once, not one after another: the wall
  time is printed, and a ticker on the edge's loop records the longest gap between its ticks
  and the most signatures awaited at once (a blocked loop would await one at a time).
- The key server killed with handshakes in flight: their clients get an alert at once, the edge's
  handshakes raise KeylessError naming the lost connection; after a restart new ones succeed.
- A resumed connection needs no signature.

The edge accepts with `loop.connect_accepted_socket` (the same fasttls transport as
start_server), so the handshake's exception reaches the test instead of asyncio's debug log."""
import asyncio
import os
import signal
import socket
import ssl
import sys
import threading
import time

import pytest

import fasttls
import fasttls.aio
import fasttls.keyless as keyless

from .conftest import start_key_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP/SIGKILL")

CLIENTS = 100
DELAY_MS = 50
BOUND = 5.0  # the issue says "well under a second"; this only guards against a hang
# 100 signatures of 50 ms one after another take 5 s; a loop blocked in them would stall for
# many of them at once. The gap allows a loaded 2-core machine's scheduling hiccups.
GAP_BOUND = 0.5
HOSTNAME = "www-p256.example"


class AioEdge:
    """A keyless edge on a fasttls.aio loop in a thread of its own: echoes what each client
    sends. `errors` keeps what each failed handshake raised; a ticker task measures the loop's
    longest gap between ticks and samples the signer's requests in flight."""

    TICK = 0.005

    def __init__(self, ctx, signer):
        self.ctx, self.signer = ctx, signer
        self.errors = []
        self.served = 0
        self.largest_gap = 0.0
        self.most_in_flight = 0
        self.loop = fasttls.aio.new_event_loop()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=CLIENTS * 2)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), name="edge")
        self.thread.start()
        assert started.wait(10)

    def _run(self, started):
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        self._tasks = [self.loop.create_task(self._accept()),
                       self.loop.create_task(self._tick())]
        self.loop.run_forever()

    async def _tick(self):
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.TICK)
            now = time.monotonic()
            self.largest_gap = max(self.largest_gap, now - last)
            self.most_in_flight = max(self.most_in_flight, self.signer.in_flight)
            last = now

    def reset_measures(self):
        async def reset():
            self.largest_gap = 0.0
            self.most_in_flight = 0

        asyncio.run_coroutine_threadsafe(reset(), self.loop).result(5)

    async def _accept(self):
        while True:
            sock, _ = await self.loop.sock_accept(self.listener)
            self.loop.create_task(self._serve(sock))

    async def _serve(self, sock):
        try:
            reader = asyncio.StreamReader(limit=2 ** 16)
            transport, _ = await self.loop.connect_accepted_socket(
                lambda: asyncio.StreamReaderProtocol(reader), sock, ssl=self.ctx,
                ssl_handshake_timeout=BOUND)
        except Exception as exc:  # the handshake's failure, for the test to assert on
            self.errors.append(exc)
            return
        try:
            data = await asyncio.wait_for(reader.read(100), BOUND)
            transport.write(data)
            self.served += 1
        finally:
            transport.close()

    def close(self):
        def stop():
            for task in self._tasks:
                task.cancel()
            self.loop.call_later(0.05, self.loop.stop)

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)
        self.listener.close()
        if not self.thread.is_alive():
            self.loop.close()


def web_context(pki, signer):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf = pki.signing["p256"]
    chain = pki.dir / "fleet-web-p256-chain.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    ctx.load_keyless_cert_chain(str(chain), signer)
    return ctx


def web_client_context(pki):
    ctx = ssl.create_default_context(cafile=str(pki.web_ca))  # verifies chain and host name
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


async def one_client(port, ctx, i):
    """A stdlib asyncio TLS client: (echoed data, the edge's certificate's subject), or the
    exception it ended with."""
    message = f"hello {i}".encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname=HOSTNAME)
    except (ssl.SSLError, OSError) as exc:
        return exc
    try:
        peer = writer.get_extra_info("peercert")
        writer.write(message)
        await writer.drain()
        data = await reader.read(100)
        return data == message, peer
    finally:
        writer.close()


async def many_clients(port, ctx, count):
    started = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(*(one_client(port, ctx, i) for i in range(count))), BOUND * 2)
    return results, time.monotonic() - started


def blocking_client(pki, port, session=None, ctx=None):
    """A stdlib blocking client: (session, reused)."""
    ctx = ctx or web_client_context(pki)
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOSTNAME, session=session) as tls:
            tls.sendall(b"ping")
            assert tls.recv(100) == b"ping"
            return tls.session, tls.session_reused


@pytest.fixture
def fleet(pki, tmp_path):
    """(key server process, KeylessClient, edge); everything stopped at teardown."""
    made = {}
    proc = start_key_server(pki, tmp_path, 0, "fleet-keyserver",
                            ("--answer-delay-ms", str(DELAY_MS)))
    made["procs"] = [proc]
    client = keyless.KeylessClient("127.0.0.1", proc.port, pki.client_context(), timeout=BOUND)
    edge = AioEdge(web_context(pki, client), client)
    try:
        yield proc, client, edge
    finally:
        edge.close()
        client.close()
        for p in made["procs"]:
            if p.proc.poll() is None:
                os.kill(p.proc.pid, signal.SIGCONT)
            p.stop()


def test_100_concurrent_keyless_handshakes_through_the_key_server(pki, fleet):
    proc, client, edge = fleet
    ctx = web_client_context(pki)
    blocking_client(pki, edge.port)  # the edge's link to the key server is up
    edge.reset_measures()
    signed = client.signatures

    results, elapsed = asyncio.run(many_clients(edge.port, ctx, CLIENTS))

    gap, most = edge.largest_gap, edge.most_in_flight
    print(f"\n{CLIENTS} concurrent keyless handshakes through `python -m fasttls keyserver "
          f"--answer-delay-ms {DELAY_MS}`: {elapsed:.3f} s wall; edge loop's largest gap "
          f"{gap * 1000:.1f} ms; at most {most} signatures awaited at once")
    failures = [r for r in results if not isinstance(r, tuple)]
    assert not failures, failures[:3]
    assert all(ok for ok, _ in results)
    assert all(("DNS", HOSTNAME) in peer["subjectAltName"] for _, peer in results)
    assert edge.errors == [] and edge.served == CLIENTS + 1
    assert client.signatures - signed == CLIENTS  # one signature per full handshake
    assert elapsed < BOUND
    # Never blocked: the signatures were awaited together (one at a time if the loop waited
    # in each), and no tick waited anywhere near the serial 100 x 50 ms.
    assert most > CLIENTS // 2
    assert gap < GAP_BOUND


def test_key_server_killed_mid_run(pki, fleet, tmp_path):
    proc, client, edge = fleet
    ctx = web_client_context(pki)
    blocking_client(pki, edge.port)
    in_flight = 10

    async def run_killed():
        # Stopped, the key server reads nothing: the handshakes' requests stay in flight...
        os.kill(proc.proc.pid, signal.SIGSTOP)
        clients = asyncio.ensure_future(many_clients(edge.port, ctx, in_flight))
        for _ in range(500):
            if client.in_flight == in_flight:
                break
            await asyncio.sleep(0.01)
        assert client.in_flight == in_flight
        killed = time.monotonic()
        os.kill(proc.proc.pid, signal.SIGKILL)  # ...until it dies with them
        results, _ = await clients
        return results, time.monotonic() - killed

    results, after_kill = asyncio.run(run_killed())
    proc.proc.wait(10)
    assert all(isinstance(r, ssl.SSLError) and "INTERNAL_ERROR" in str(r) for r in results), \
        results
    assert after_kill < BOUND  # on the loss, not at the handshake's or the client's deadline
    for _ in range(200):
        if len(edge.errors) == in_flight:
            break
        time.sleep(0.01)
    assert len(edge.errors) == in_flight
    print(f"\nkey server killed with {in_flight} handshakes in flight: their clients failed "
          f"{after_kill:.3f} s later; the edge raised: {edge.errors[0]}")
    for error in edge.errors:
        assert isinstance(error, fasttls.KeylessError), error
        assert error.reason == "CONNECTION_LOST", error
        assert "CONNECTION_LOST" in str(error) and "connection" in str(error).lower()

    # Back on the same port: new handshakes succeed, the client reconnecting by itself (no
    # attempt failed meanwhile, so no back-off delays it).
    back = start_key_server(pki, tmp_path, proc.port, "fleet-keyserver-back",
                            ("--answer-delay-ms", str(DELAY_MS)))
    try:
        results, _ = asyncio.run(many_clients(edge.port, ctx, 20))
        assert all(isinstance(r, tuple) and r[0] for r in results), results
        assert client.connects == 2
    finally:
        back.stop()


def test_resumed_connection_needs_no_signature(pki, fleet):
    proc, client, edge = fleet
    ctx = web_client_context(pki)
    session, reused = blocking_client(pki, edge.port, ctx=ctx)
    assert not reused
    signed = client.signatures
    assert signed == 1
    _, reused = blocking_client(pki, edge.port, session, ctx)
    assert reused
    assert client.signatures == signed  # resumed: nothing signed
    blocking_client(pki, edge.port)  # a full handshake again: signed
    assert client.signatures == signed + 1
