"""``python -m fasttls.bench.keyless``: signatures per second through one KeylessClient.

A key server (``python -m fasttls keyserver``) runs in a child process on loopback with one
ECDSA P-256 key; this process measures, for a fixed time each:

- baseline: the same key signing in this process (PrivateKey.sign), no network;
- sync, 1 in flight: one thread calling client.sign() in a loop;
- sync, 64 in flight: 64 threads sharing the one client;
- async, 1 / 64 in flight: tasks on one event loop awaiting client.sign_async();
- full TLS 1.3 handshakes in memory (a fasttls client and server in this process): the key in
  the server's context (baseline) against the key on the key server, one at a time (the pause
  resolved blocking) and 64 at once on one loop (awaited), each beside a baseline with the same
  driver. Same client context, same certificate and key, no tickets: the only difference is
  where the key is (and so the round trip, and the engine's check of the returned signature
  against the certificate, which is part of the keyless path).

`key_server()`, `handshake_contexts()` and `handshake()` are shared with bench/test_bench_keyless.py
(pytest-benchmark).

Certificates are made in memory (fasttls's self-signed P-256, each its own trust anchor).
"""
import argparse
import asyncio
import contextlib
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import types
from typing import Any, Awaitable, Callable, Dict, Iterator, List

from fasttls._binding import make_self_signed

__all__ = ["main", "key_server", "handshake", "handshake_contexts"]

_TLS13_INPUT = b"\x20" * 64 + b"TLS 1.3, server CertificateVerify\x00" + os.urandom(32)


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _run_threads(sign: Callable[[], object], threads: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts: List[int] = [0] * threads

    def work(i: int) -> None:
        n = 0
        while time.monotonic() < stop:
            sign()
            n += 1
        counts[i] = n

    started = time.monotonic()
    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(seconds + 30)
    return _rate(sum(counts), time.monotonic() - started)


async def _run_tasks(sign: Callable[[], Awaitable[object]], tasks: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts: List[int] = [0] * tasks

    async def work(i: int) -> None:
        while time.monotonic() < stop:
            await sign()
            counts[i] += 1

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(work(i) for i in range(tasks))), seconds + 30)
    return _rate(sum(counts), time.monotonic() - started)


def _handshake_pauses(client_ctx: Any, server_ctx: Any) -> Iterator[Any]:
    """One full in-memory TLS 1.3 handshake between two fasttls ends, yielding the server's
    signature pause each time it waits: the caller resolves it (blocking or awaited) before
    asking for the next, so the blocking and the aio handshakes share one loop."""
    from fasttls import newtls
    client = newtls("client", client_ctx, "www.bench")
    server = newtls("server", server_ctx)
    to_server = client.handshake()
    for _ in range(20):
        to_client = server.handshake(to_server)
        while server.pause is not None:
            yield server.pause
            to_client += server.handshake()
        to_server = client.handshake(to_client)
        if client.finished() and server.finished():
            return
    raise RuntimeError("the handshake did not finish")


def handshake(client_ctx: Any, server_ctx: Any) -> None:
    """One full in-memory TLS 1.3 handshake between two fasttls ends, the server's signature
    pause (if any) resolved blocking."""
    for pause in _handshake_pauses(client_ctx, server_ctx):
        pause.resolve(10.0)


async def _handshake_async(client_ctx: Any, server_ctx: Any) -> None:
    """The same, the pause awaited (fasttls.aio's way)."""
    for pause in _handshake_pauses(client_ctx, server_ctx):
        await pause.resolve_async()


def handshake_contexts(files: Dict[str, str], signer: Any) -> "tuple[Any, Any, Any]":
    """(client, local-key server, keyless server) native contexts for `handshake`: the same
    client, the same certificate and key (P-256), TLS 1.3, no tickets on either server; the
    only difference between the two servers is where the key is (the keyless one asks
    `signer`)."""
    from fasttls import newctx
    with open(files["web-cert"], "rb") as f:
        cert = f.read()
    with open(files["web"], "rb") as f:
        both = f.read()
    client_ctx = newctx(cadata=cert, maximum_version=ssl.TLSVersion.TLSv1_3,
                        minimum_version=ssl.TLSVersion.TLSv1_3)
    local = newctx(certfile=both)
    keyless = newctx()
    keyless.set_keyless_cert(cert, signer)
    for server in (local, keyless):
        server.num_tickets = 0  # a ticket costs the same on both; the rows time handshakes
    return client_ctx, local, keyless


def _handshake_rows(files: Dict[str, str], client: Any,
                    seconds: float) -> "list[tuple[str, float]]":
    """Full handshakes per second, in memory (both ends in this process): the key in the
    context (baseline) against the key on the key server."""
    client_ctx, local, keyless = handshake_contexts(files, client)
    rows = [("baseline: handshakes, key in the context",
             _run_threads(lambda: handshake(client_ctx, local), 1, seconds)),
            ("keyless handshakes, 1 at a time (blocking resolve)",
             _run_threads(lambda: handshake(client_ctx, keyless), 1, seconds))]
    # The awaited row's own baseline: the same driver (tasks on one loop), the key local.
    rate = asyncio.run(_run_tasks(lambda: _handshake_async(client_ctx, local), 64, seconds))
    rows.append(("baseline: handshakes, key in the context, 64 tasks", rate))
    rate = asyncio.run(_run_tasks(lambda: _handshake_async(client_ctx, keyless), 64, seconds))
    rows.append(("keyless handshakes, 64 at once on one loop (awaited)", rate))
    return rows


@contextlib.contextmanager
def key_server(signing: str = "auto", answer_delay_ms: float = 0.0) -> Iterator[
        "tuple[Dict[str, str], int]"]:
    """`python -m fasttls keyserver` in a child process on loopback holding one P-256 key,
    with certificates made in memory: yields (files, port); `files` names the PEM files
    ("web"/"web-cert": the key and certificate the key server signs for; "edge",
    "server-cert": the edge's client identity and what it trusts). Killed on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, host in (("server", "127.0.0.1"), ("edge", "edge.bench"),
                           ("web", "www.bench")):
            cert, key = make_self_signed(host)
            files[name] = os.path.join(tmp, f"{name}.pem")
            with open(files[name], "wb") as f:
                f.write(key + cert)
            files[name + "-cert"] = os.path.join(tmp, f"{name}-cert.pem")
            with open(files[name + "-cert"], "wb") as f:
                f.write(cert)
        proc = subprocess.Popen(
            [sys.executable, "-m", "fasttls", "keyserver", "--listen", "127.0.0.1:0",
             "--key", files["web"], "--cert", files["server"], "--client-ca",
             files["edge-cert"], "--allow", "edge.bench", "--log-level", "WARNING",
             "--signing", signing, "--answer-delay-ms", str(answer_delay_ms)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if not match:
                raise RuntimeError(f"the key server did not start: {line!r}")
            yield files, int(match.group(1))
        finally:
            proc.terminate()
            proc.wait(10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fasttls.bench.keyless")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per row (default 2)")
    parser.add_argument("--signing", choices=("auto", "inline", "threads"), default="auto",
                        help="the key server's --signing (default auto: ECDSA inline)")
    args = parser.parse_args(argv)
    try:
        return _measure(args)
    except RuntimeError as exc:  # the key server did not start
        print(exc, file=sys.stderr)
        return 1


def _measure(args: argparse.Namespace) -> int:
    from fasttls.keyless import KeylessClient, PrivateKey, certificate_key_id, client_context

    with key_server(args.signing) as (files, port):
        with open(files["web-cert"], "rb") as f:
            key_id = certificate_key_id(f.read())
        request = types.SimpleNamespace(data=_TLS13_INPUT, scheme=0x0403, key_id=key_id,
                                        server_name="www.bench")
        with open(files["web"], "rb") as f:
            local = PrivateKey(f.read())
        ctx = client_context(files["edge"], None, files["server-cert"])
        with KeylessClient("127.0.0.1", port, ctx, timeout=10) as client:
            client.sign(request)  # connect
            s = args.seconds
            rows = [("baseline: PrivateKey.sign in process, 1 thread",
                     _run_threads(lambda: local.sign(0x0403, _TLS13_INPUT), 1, s))]
            rows.append(("KeylessClient.sign, 1 in flight",
                         _run_threads(lambda: client.sign(request), 1, s)))
            rows.append(("KeylessClient.sign, 64 in flight (64 threads)",
                         _run_threads(lambda: client.sign(request), 64, s)))
            for n in (1, 64):
                rate = asyncio.run(_run_tasks(lambda: client.sign_async(request), n, s))
                rows.append((f"KeylessClient.sign_async, {n} in flight (1 loop)", rate))
            assert client.connects == 1
            handshake_rows = _handshake_rows(files, client, s)
    cpus = os.cpu_count()
    print(f"keyless signatures per second, ECDSA P-256, key server in a child process on "
          f"loopback ({cpus} CPUs shared), signing {args.signing}, {args.seconds:g} s per row:")
    for name, rate in rows:
        print(f"  {name:<55} {rate:>10,.0f}/s")
    print("TLS 1.3 full handshakes per second, in memory (fasttls client and server in this "
          "process, P-256, no tickets):")
    for name, rate in handshake_rows:
        print(f"  {name:<55} {rate:>10,.0f}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
