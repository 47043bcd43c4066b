"""Keyless on fasttls.aio: the signature is awaited in a task (signer.sign_async), never blocking
the loop: 100 concurrent handshakes against a signer that answers after 50 ms all wait at once
and finish well under the bound; a failing signer alerts the client; ssl_handshake_timeout and a
client that leaves while the signature is awaited end the wait (the signer's task is
cancelled, the paused job unwound). Selector loop and uvloop. Clients are stdlib sockets in
threads."""
import asyncio
import concurrent.futures
import socket
import ssl
import time

import pytest
from support.loops import LOOPS, patched_loop
from support.signers import FailingSigner, LocalSigner

import fasttls
import fasttls.aio

CLIENTS = 100
BOUND = 5.0  # "well under a second" for 100 x 50 ms; this only guards against hangs

@pytest.fixture(params=LOOPS)
def loop(request):
    with patched_loop(request.param) as patched:
        yield patched


class DeadlineSigner(LocalSigner):
    """A signer with its own per-request deadline (as a key server client has): a key server
    slower than it raises KeylessError TIMEOUT; requests for other names answer at once."""

    def __init__(self, key_pem, slow_name, deadline):
        super().__init__(key_pem)
        self.slow_name, self.deadline = slow_name, deadline

    async def sign_async(self, request):
        self._note(request)
        if request.server_name == self.slow_name:
            try:
                await asyncio.wait_for(asyncio.sleep(30), self.deadline)
            except asyncio.TimeoutError:
                raise fasttls.KeylessError("the key server did not answer in time",
                                           "TIMEOUT") from None
        return self.signature(request)


class CountingSigner(LocalSigner):
    """Answers after `delay` on the loop; counts the requests in flight at once (with a blocked
    loop, or signatures one after another, there would never be more than one)."""

    def __init__(self, key_pem, delay=0.05):
        super().__init__(key_pem, delay)
        self.in_flight = self.most_in_flight = 0
        self.cancelled = 0

    async def sign_async(self, request):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super().sign_async(request)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1


def keyless_server_context(identity, signer, tmp_path):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    chain = tmp_path / "chain.pem"
    chain.write_bytes(identity.chain_pem)
    ctx.load_keyless_cert_chain(str(chain), signer)
    return ctx


def client_context(identity):
    return ssl.create_default_context(cadata=identity.ca_pem.decode())


def fetch(port, cctx):
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as raw:
        with cctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.recv(2)


async def serve(ctx, **kwargs):
    async def handle(reader, writer):
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, **kwargs)


@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_concurrent_handshakes_never_block_the_loop(loop, identities, tmp_path, key_type):
    identity = identities[key_type]
    signer = CountingSigner(identity.key_pem, delay=0.05)
    cctx = client_context(identity)

    async def main():
        server = await serve(keyless_server_context(identity, signer, tmp_path))
        port = server.sockets[0].getsockname()[1]
        with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
            started = time.monotonic()
            results = await asyncio.wait_for(asyncio.gather(
                *(loop.run_in_executor(pool, fetch, port, cctx) for _ in range(CLIENTS))), BOUND)
            elapsed = time.monotonic() - started
        server.close()
        await server.wait_closed()
        return results, elapsed

    results, elapsed = loop.run_until_complete(main())
    print(f"\n{CLIENTS} concurrent keyless {key_type} handshakes (signer 50 ms): "
          f"{elapsed:.3f} s; at most {signer.most_in_flight} signatures awaited at once")
    assert results == [b"ok"] * CLIENTS
    assert len(signer.requests) == CLIENTS
    assert signer.most_in_flight > CLIENTS // 2  # they waited together, not one by one
    assert elapsed < BOUND


def test_failing_signer_alerts_the_client(loop, identities, tmp_path):
    identity = identities["ecdsa"]
    cctx = client_context(identity)

    async def main():
        server = await serve(keyless_server_context(identity, FailingSigner(identity.key_pem),
                                                    tmp_path))
        port = server.sockets[0].getsockname()[1]
        try:
            await loop.run_in_executor(None, fetch, port, cctx)
        finally:
            server.close()
            await server.wait_closed()

    with pytest.raises(ssl.SSLError, match="(?i)internal.error"):
        loop.run_until_complete(main())


def test_handshake_timeout_while_signing(loop, identities, tmp_path):
    identity = identities["ecdsa"]
    signer = CountingSigner(identity.key_pem, delay=30.0)
    cctx = client_context(identity)

    async def main():
        server = await serve(keyless_server_context(identity, signer, tmp_path),
                             ssl_handshake_timeout=0.3)
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        try:
            # the client is told (an alert), not just cut off
            with pytest.raises(ssl.SSLError, match="(?i)internal.error"):
                await asyncio.wait_for(loop.run_in_executor(None, fetch, port, cctx), BOUND)
        finally:
            server.close()
            await server.wait_closed()
        return time.monotonic() - started

    elapsed = loop.run_until_complete(main())
    assert elapsed < BOUND
    assert signer.cancelled == 1 and signer.in_flight == 0


def test_client_leaves_while_signing(loop, identities, tmp_path):
    identity = identities["ecdsa"]
    signer = CountingSigner(identity.key_pem, delay=30.0)

    async def main():
        server = await serve(keyless_server_context(identity, signer, tmp_path))
        port = server.sockets[0].getsockname()[1]
        # a client that sends its ClientHello and leaves while the signature is awaited
        hello = fasttls.newtls("client", fasttls.newctx(cadata=identity.ca_pem), "localhost")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(hello.handshake())
        await writer.drain()
        for _ in range(500):
            if signer.in_flight:
                break
            await asyncio.sleep(0.01)
        assert signer.in_flight == 1
        writer.close()
        for _ in range(500):
            if signer.cancelled:
                break
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())
    assert signer.cancelled == 1 and signer.in_flight == 0


def test_slow_signer_alerts_within_its_deadline_others_unaffected(loop, identities, tmp_path):
    identity = identities["ecdsa"]
    signer = DeadlineSigner(identity.key_pem, "localhost", deadline=0.3)
    slow_ctx = client_context(identity)
    fast_ctx = client_context(identity)
    fast_ctx.check_hostname = False  # the certificate does not name fast.example

    def fetch_as(cctx, name):
        with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as raw:
            with cctx.wrap_socket(raw, server_hostname=name) as tls:
                return tls.recv(2), time.monotonic()

    async def main():
        nonlocal port
        server = await serve(keyless_server_context(identity, signer, tmp_path))
        port = server.sockets[0].getsockname()[1]
        started = time.monotonic()
        slow = loop.run_in_executor(None, fetch_as, slow_ctx, "localhost")
        fast = [loop.run_in_executor(None, fetch_as, fast_ctx, "fast.example") for _ in range(5)]
        fast_results = await asyncio.wait_for(asyncio.gather(*fast), BOUND)
        with pytest.raises(ssl.SSLError, match="(?i)internal.error"):
            await asyncio.wait_for(slow, BOUND)
        failed_at = time.monotonic()
        server.close()
        await server.wait_closed()
        return started, fast_results, failed_at

    port = None
    started, fast_results, failed_at = loop.run_until_complete(main())
    assert [data for data, _ in fast_results] == [b"ok"] * 5
    assert failed_at - started < BOUND  # the signer's 0.3 s deadline, not its 30 s
    assert len(signer.requests) == 6
