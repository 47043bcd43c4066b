"""Memory per idle connection: RSS growth over N idle TLS connection pairs (client and server
SSLObject over MemoryBIOs, handshake done, one message each way, each end reading until
want-read as asyncio does), fasttls.SSLContext against ssl.SSLContext, each side in a fresh
process.

fasttls frees a connection's record buffers when a read finds nothing more to read (the stdlib
frees them after every record, SSL_MODE_RELEASE_BUFFERS, which costs throughput); a connection
whose last act was a write keeps its write buffer until its next read."""
import json
import os
import subprocess
import sys

TARGET = 0.6  # fasttls bytes per pair / stdlib bytes per pair


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(side: str, pairs: int) -> None:
    import gc
    import ssl

    import fasttls
    from fasttls.bench.harness import HOSTNAME, Env

    lib = fasttls if side == "fasttls" else ssl
    with Env() as env:
        client_ctx = lib.create_default_context(cadata=env.cert_pem.decode())
        server_ctx = lib.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(env.certfile, env.keyfile)

        def pair():
            bios = [ssl.MemoryBIO() for _ in range(4)]
            c_in, c_out, s_in, s_out = bios
            client = client_ctx.wrap_bio(c_in, c_out, server_hostname=HOSTNAME)
            server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
            for _ in range(10):
                for end in (client, server):
                    try:
                        end.do_handshake()
                    except ssl.SSLWantReadError:
                        pass
                s_in.write(c_out.read())
                c_in.write(s_out.read())
            # One message each way, then both ends read until want-read: what an asyncio
            # connection does when it has handled what arrived and waits for more.
            for sender, wire, inbox in ((client, c_out, s_in), (server, s_out, c_in)):
                sender.write(b"x" * 64)
                inbox.write(wire.read())
            for receiver in (server, client):
                if receiver.read(100) != b"x" * 64:
                    raise AssertionError(f"{side}: message lost")
                try:
                    receiver.read(100)
                except ssl.SSLWantReadError:
                    pass
            return client, server, bios

        keep = [pair() for _ in range(50)]  # warm-up: contexts, caches, allocator
        gc.collect()
        before = _rss()
        keep += [pair() for _ in range(pairs)]
        gc.collect()
        print(json.dumps({"side": side, "bytes_per_pair": (_rss() - before) / pairs}))


def measure(pairs: int = 10_000) -> dict:
    """{"fasttls": bytes per pair, "stdlib": ..., "ratio": ..., "met": ...}, one process each."""
    result = {"pairs": pairs, "target": TARGET}
    for side in ("fasttls", "stdlib"):
        out = subprocess.run(
            [sys.executable, "-c", "import sys; from fasttls.bench.memory import _child; "
             "_child(sys.argv[1], int(sys.argv[2]))", side, str(pairs)],
            check=True, capture_output=True, text=True, timeout=600).stdout
        result[side] = json.loads(out.strip().splitlines()[-1])["bytes_per_pair"]
    result["ratio"] = result["fasttls"] / result["stdlib"]
    result["met"] = result["ratio"] <= TARGET
    return result
