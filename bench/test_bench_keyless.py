"""Keyless TLS 1.3 handshakes (pytest-benchmark): the key in the server's context against the key
on a key server (``python -m fasttls keyserver`` in a child process on loopback), one group, the
same client, certificate and handshakes per round; the only difference is where the key is.
The handshakes run in memory (fasttls.bench.keyless.handshake); the keyless one resolves its
signing pause blocking through a KeylessClient."""
import pytest

import fasttls.keyless as keyless
from fasttls.bench.keyless import handshake, handshake_contexts, key_server

HANDSHAKES = 20  # per round


@pytest.fixture(scope="module")
def contexts():
    with key_server() as (files, port):
        ctx = keyless.client_context(files["edge"], None, files["server-cert"])
        with keyless.KeylessClient("127.0.0.1", port, ctx, timeout=10) as client:
            yield handshake_contexts(files, client), client


def run(client_ctx, server_ctx):
    for _ in range(HANDSHAKES):
        handshake(client_ctx, server_ctx)
    return HANDSHAKES


@pytest.mark.parametrize("where", ["local_key", "key_server"])
def test_keyless_handshake(benchmark, contexts, where):
    (client_ctx, local, remote), client = contexts
    server_ctx = local if where == "local_key" else remote
    signed = client.signatures
    benchmark.group = f"TLS 1.3 full handshakes (P-256), {HANDSHAKES} per round"
    benchmark.extra_info.update(where=where, ops_per_round=HANDSHAKES)
    got = benchmark.pedantic(run, args=(client_ctx, server_ctx), rounds=10, warmup_rounds=1,
                             iterations=1)
    assert got == HANDSHAKES
    # The keyless rows really went to the key server, the local ones never did.
    assert (client.signatures > signed) == (where == "key_server")
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["rate"] = HANDSHAKES / benchmark.stats.stats.min
