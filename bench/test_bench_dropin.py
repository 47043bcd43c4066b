"""Drop-in benchmarks, fasttls and the stdlib side by side in one run (issue 3, section 6):

    python -m pytest bench/test_bench_dropin.py --benchmark-only

Rows (each a benchmark group with a "stdlib" and a "fasttls" side doing the same work):
- requests_session: `requests.get` (a new Session per request) on loopback, with a CA bundle the
  size of a real one (certifi's plus the test CA), so each request pays for its trust store as
  requests does; the fasttls side runs with `fasttls.inject_into_ssl()`.
- default_context: `create_default_context()` repeated (system trust store).
- asyncio_echo_64b / asyncio_echo_1mib: asyncio streams over TLS in one loop, both ends on the
  same engine: 64-byte request/response round trips, and 1 MiB echoed whole.
- http_client_keepalive: http.client GETs on one kept-alive connection.

The HTTPS peer of the HTTP rows is a stdlib server in a separate process (the same for both
sides), so the measured process holds only the client. After the rows, a table gives the
fasttls/stdlib speed ratios measured in this run. Every loop has a fixed count, every socket a
timeout, and everything runs on 127.0.0.1."""
import asyncio
import contextlib
import http.client
import os
import select
import ssl
import subprocess
import sys

import certifi
import pytest
import requests
import trustme

import fasttls
from support.dropin import (
    HOST,
    IO_TIMEOUT,
    JOIN_TIMEOUT,
    STDLIB_SSLContext,
    STDLIB_create_default_context,
    body_for,
)

SIDES = ["stdlib", "fasttls"]

# Operations per round, the same for both sides of a row.
BATCH = {
    "requests_session": 20,       # requests
    "default_context": 20,        # contexts
    "asyncio_echo_64b": 2000,     # round trips
    "asyncio_echo_1mib": 8,       # MiB echoed
    "http_client_keepalive": 200,  # requests
}
TITLES = {
    "requests_session": "requests.get, new Session each, injected vs stdlib",
    "default_context": "create_default_context()",
    "asyncio_echo_64b": "asyncio TLS echo, 64 B round trips",
    "asyncio_echo_1mib": "asyncio TLS echo, 1 MiB messages",
    "http_client_keepalive": "http.client keep-alive GET loop",
}
TARGETS = {     # fasttls speed / stdlib speed, from the issue
    "requests_session": 3.0,
    "default_context": 50.0,
    "asyncio_echo_64b": 1.3,
    "asyncio_echo_1mib": 1.1,
    "http_client_keepalive": 1.0,
}
MIB = 1 << 20
BEST = {}       # (row, side) -> best seconds per round, for the ratio table


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """The test CA file, a real-size bundle that includes it, and a server key+chain file."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    where = tmp_path_factory.mktemp("dropin-bench")
    ca_file = str(where / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    bundle = str(where / "bundle.pem")
    with open(certifi.where(), "rb") as system, open(bundle, "wb") as out:
        out.write(system.read() + b"\n" + ca.cert_pem.bytes())
    chain = str(where / "server.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(chain)
    return {"ca": ca, "cert": cert, "ca_file": ca_file, "bundle": bundle, "chain": chain}


@pytest.fixture(scope="module")
def server_port(certs):
    """A stdlib HTTPS server (tests/support/dropin.py) in its own process."""
    tests_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from support.dropin import serve_until_stdin_closes as s; s(sys.argv[2])")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, tests_dir, certs["chain"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], IO_TIMEOUT)
        assert ready, "the benchmark server did not start within %s s" % IO_TIMEOUT
        yield int(proc.stdout.readline())
    finally:
        proc.stdin.close()
        try:
            proc.wait(JOIN_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(JOIN_TIMEOUT)
        proc.stdout.close()


def client_context(side, ca_file):
    make = fasttls.create_default_context if side == "fasttls" else STDLIB_create_default_context
    return make(cafile=ca_file)


def server_context(side, cert):
    ctx = (fasttls.SSLContext if side == "fasttls" else STDLIB_SSLContext)(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    return ctx


def run_row(benchmark, row, side, work, rounds):
    """Benchmark `work(n)` (which returns what it checked) for one side of one row."""
    n = BATCH[row]
    benchmark.group = "%s: %s, %d per round" % (row, TITLES[row], n)
    benchmark.extra_info.update(side=side, ops_per_round=n, target=TARGETS[row])
    got = benchmark.pedantic(work, args=(n,), rounds=rounds, warmup_rounds=1, iterations=1)
    assert got == n, "the workload did %r of %d operations" % (got, n)
    if benchmark.stats is not None:     # None under --benchmark-disable
        BEST[(row, side)] = benchmark.stats.stats.min


# --- rows --------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", SIDES)
def test_requests_session(benchmark, side, certs, server_port):
    url = "https://%s:%d/bench" % (HOST, server_port)
    expected = body_for("/bench")

    def work(n):
        ok = 0
        for _ in range(n):
            resp = requests.get(url, verify=certs["bundle"], timeout=IO_TIMEOUT)
            ok += resp.content == expected
        return ok

    if side == "fasttls":
        fasttls.inject_into_ssl()
    try:
        run_row(benchmark, "requests_session", side, work, rounds=10)
    finally:
        if side == "fasttls":
            fasttls.extract_from_ssl()


@pytest.mark.parametrize("side", SIDES)
def test_default_context(benchmark, side):
    make = fasttls.create_default_context if side == "fasttls" else STDLIB_create_default_context

    def work(n):
        return sum(isinstance(make(), ssl.SSLContext) for _ in range(n))

    run_row(benchmark, "default_context", side, work, rounds=10)


@contextlib.contextmanager
def echo_pair(side, certs):
    """An asyncio loop with a TLS echo server and one client connection to it, both on `side`."""
    loop = asyncio.new_event_loop()

    async def echo(reader, writer):
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def start():
        server = await asyncio.start_server(
            echo, HOST, 0, ssl=server_context(side, certs["cert"])
        )
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            HOST, port, ssl=client_context(side, certs["ca_file"]), server_hostname="localhost"
        )
        return server, reader, writer

    server, reader, writer = loop.run_until_complete(asyncio.wait_for(start(), IO_TIMEOUT))
    try:
        yield loop, reader, writer
    finally:
        async def stop():
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT)
            server.close()
            await asyncio.wait_for(server.wait_closed(), IO_TIMEOUT)

        try:
            loop.run_until_complete(stop())
        finally:
            loop.close()


@pytest.mark.parametrize("side", SIDES)
def test_asyncio_echo_64b(benchmark, side, certs):
    message = b"m" * 64

    async def round_trips(reader, writer, n):
        ok = 0
        for _ in range(n):
            writer.write(message)
            ok += await reader.readexactly(64) == message
        return ok

    with echo_pair(side, certs) as (loop, reader, writer):
        def work(n):
            return loop.run_until_complete(
                asyncio.wait_for(round_trips(reader, writer, n), 60)
            )

        run_row(benchmark, "asyncio_echo_64b", side, work, rounds=10)


@pytest.mark.parametrize("side", SIDES)
def test_asyncio_echo_1mib(benchmark, side, certs):
    message = os.urandom(MIB)

    async def bulk(reader, writer, n):
        ok = 0
        for _ in range(n):
            writer.write(message)
            await writer.drain()
            ok += await reader.readexactly(MIB) == message
        return ok

    with echo_pair(side, certs) as (loop, reader, writer):
        def work(n):
            return loop.run_until_complete(asyncio.wait_for(bulk(reader, writer, n), 60))

        run_row(benchmark, "asyncio_echo_1mib", side, work, rounds=10)


@pytest.mark.parametrize("side", SIDES)
def test_http_client_keepalive(benchmark, side, certs, server_port):
    conn = http.client.HTTPSConnection(
        HOST, server_port, timeout=IO_TIMEOUT, context=client_context(side, certs["ca_file"])
    )
    expected = body_for("/keepalive")

    def work(n):
        ok = 0
        for _ in range(n):
            conn.request("GET", "/keepalive")
            ok += conn.getresponse().read() == expected
        return ok

    try:
        run_row(benchmark, "http_client_keepalive", side, work, rounds=10)
    finally:
        conn.close()


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request):
    """After the rows: the fasttls/stdlib speed ratio of each row measured in this run."""
    yield
    lines = ["", "drop-in rows: fasttls speed / stdlib speed (best rounds), target from issue 3"]
    for row in BATCH:
        stdlib, fast = BEST.get((row, "stdlib")), BEST.get((row, "fasttls"))
        if stdlib and fast:
            ratio = stdlib / fast
            mark = "ok" if ratio >= TARGETS[row] else "MISSED"
            lines.append("  %-24s %7.2fx   (>= %.1fx: %s)" % (row, ratio, TARGETS[row], mark))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if len(lines) > 2 and reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            for line in lines:
                reporter.write_line(line)
