"""Leaks: 100,000 in-memory handshakes with data transfer in one process, RSS flat after warm-up.

The workload runs in a child process (this file run as a script) so that pytest's own memory does
not blur the measurement; RSS comes from /proc/self/statm. The child reports RSS after warm-up
(20 % of the handshakes) and at the end; growth must stay under 5 %.

The count is FASTTLS_LEAK_HANDSHAKES (default 100000: about two minutes, so CI runs it in full;
set it lower for a quick local run). Besides the plain
handshake + data + close_notify both ways, the loop regularly takes the other paths that own
memory: TLS 1.2 and 1.3, session resumption, getpeercert() (certificate decoding), a
verification failure, garbage input, an abandoned handshake, release_buffers(), large writes
and fresh contexts."""
import json
import os
import subprocess
import sys

import pytest
from support.pump import pump

DEFAULT_HANDSHAKES = 100_000
MAX_GROWTH = 0.05
# glibc's heap grows (free memory, not memory in use: mallinfo2 shows a constant ~2.6 MiB in use)
# over the first ~10,000 handshakes while the mix of buffer sizes settles; below this many
# handshakes the check would measure that, not leaks.
MIN_MEANINGFUL = 20_000


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")




def child(count, certdir):
    import gc
    import ssl

    import fasttls

    def pem(name):
        with open(os.path.join(certdir, name), "rb") as f:
            return f.read()

    ca, chain, key = pem("ca.pem"), pem("chain.pem"), pem("key.pem")

    def contexts():
        server = fasttls.newctx()
        server.set_cert(chain, key)
        server.set_alpn_protocols(["h2", "http/1.1"])
        c13 = fasttls.newctx(cadata=ca)
        c13.set_alpn_protocols(["http/1.1"])
        c12 = fasttls.newctx(cadata=ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        return server, c13, c12

    server_ctx, client13, client12 = contexts()
    payload = os.urandom(1024)
    big = os.urandom(100_000)
    session = None
    warmup = count // 5
    report = {}
    report["samples"] = samples = []
    for i in range(count):
        if i % max(count // 10, 1) == 0:
            samples.append((i, _rss_bytes()))
        if i == warmup:
            gc.collect()
            report["rss_warm"] = _rss_bytes()
            report["at_warm"] = i
        if i % 1000 == 999:  # contexts come and go too
            server_ctx, client13, client12 = contexts()
        cctx = client12 if i % 2 else client13
        # A session resumes only on its own context (on another it would skip verification).
        resume = session if i % 10 == 0 and session is not None and session._context is cctx \
            else None
        client = fasttls.newtls("client", cctx, "localhost", session=resume)
        server = fasttls.newtls("server", server_ctx)
        pump(client, server)
        data = big if i % 100 == 1 else payload
        received = server.read(client.write(data))
        while len(received) < len(data):
            more = server.read()
            assert more, "lost data"
            received += more
        assert received == data
        assert client.read(server.write(payload[: i % 1000 + 1])) == payload[: i % 1000 + 1]
        if i % 100 == 0:
            assert client.getpeercert()["subjectAltName"]
            client.cipher(), client.version(), client.selected_alpn_protocol()
        if i % 10 == 4:  # made on client13, which the next resumption (i % 10 == 0) uses
            session = client.session
        if i % 7 == 3:
            client.release_buffers()
            server.release_buffers()
        assert server.read(client.close()) == b"" and server.eof
        assert client.read(server.close()) == b"" and client.eof
        if i % 50 == 25:  # failures: garbage, wrong name, an abandoned handshake
            bad = fasttls.newtls("server", server_ctx)
            try:
                bad.handshake(b"\x16\x03\x01\x02\x00" + b"\x01" * 600)
                raise AssertionError("garbage accepted")
            except fasttls.SSLError:
                pass
            wrong = fasttls.newtls("client", cctx, "wrong.example")
            srv = fasttls.newtls("server", server_ctx)
            try:
                pump(wrong, srv)
                raise AssertionError("wrong host accepted")
            except fasttls.SSLCertVerificationError:
                pass
            abandoned = fasttls.newtls("server", server_ctx)
            abandoned.handshake(fasttls.newtls("client", cctx, "localhost").handshake())
    gc.collect()
    report["rss_end"] = _rss_bytes()
    report["count"] = count
    print(json.dumps(report))


def test_rss_flat_over_many_handshakes(tmp_path, ec_ca):
    count = int(os.environ.get("FASTTLS_LEAK_HANDSHAKES", DEFAULT_HANDSHAKES))
    leaf = ec_ca.issue_cert("localhost")
    (tmp_path / "ca.pem").write_bytes(ec_ca.cert_pem.bytes())
    (tmp_path / "chain.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    (tmp_path / "key.pem").write_bytes(leaf.private_key_pem.bytes())
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), str(count), str(tmp_path)],
        capture_output=True, text=True, timeout=max(600, count / 100), check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    warm, end = report["rss_warm"], report["rss_end"]
    growth = (end - warm) / warm
    samples = ", ".join(f"{i}: {rss / 2**20:.1f}" for i, rss in report["samples"])
    print(f"RSS (MiB) by handshake count: {samples}")
    print(f"RSS after {report['at_warm']} handshakes: {warm / 2**20:.1f} MiB; after "
          f"{report['count']}: {end / 2**20:.1f} MiB; growth {growth * 100:+.2f} %")
    if count < MIN_MEANINGFUL:
        pytest.skip(f"{count} handshakes ran cleanly, but fewer than {MIN_MEANINGFUL} is too few "
                    "for the RSS check (heap warm-up)")
    assert growth < MAX_GROWTH, report


if __name__ == "__main__":
    child(int(sys.argv[1]), sys.argv[2])
