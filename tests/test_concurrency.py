"""Concurrency: 16 threads x 1,000 in-memory connections sharing one client Context and one
server Context, while another thread keeps changing their settings (ALPN, TLS 1.2 ciphers, the
maximum version, the server certificate reloaded between two, keylog on and off, sni_callback
swapped, and the certificate of the context the callback switches to reloaded as well).

Checked: no crash, no cross-talk (each thread sends its own unique payload both ways and checks
what arrives), every negotiated value is one the settings allowed at some point, and no deadlock
(every join has a timeout; on a timeout, the stacks of all threads are printed). The drop-in
layer (fasttls.SSLContext over ssl.MemoryBIO) is checked the same way, on a smaller scale.

FASTTLS_CONCURRENCY_CONNECTIONS sets the connections per thread (default 1000)."""
import faulthandler
import hashlib
import os
import ssl
import sys
import threading
import time

import pytest

import fasttls
from support.pump import pump

THREADS = 16
CONNECTIONS = int(os.environ.get("FASTTLS_CONCURRENCY_CONNECTIONS", "1000"))
DEADLINE = 300.0  # seconds for everything; a deadlock fails the test instead of hanging it
ALPN_CHOICES = (["h2", "http/1.1"], ["http/1.1"], ["h2"], [])
CIPHER_CHOICES = ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305",
                  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")


@pytest.fixture(scope="module")
def leaves(ec_ca):
    """Three certificates for localhost from one CA: A and B alternate on the shared server
    context, C and A on the context the sni_callback switches to."""
    out = {"ca": ec_ca.cert_pem.bytes()}
    for name in "ABC":
        leaf = ec_ca.issue_cert("localhost")
        chain = b"".join(b.bytes() for b in leaf.cert_chain_pems)
        der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
        out[name] = (chain, leaf.private_key_pem.bytes(), hashlib.sha256(der).hexdigest())
    return out




def join_all(threads, deadline):
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0.1))
    stuck = [t.name for t in threads if t.is_alive()]
    if stuck:
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        pytest.fail(f"deadlock or stall: threads still running after {DEADLINE} s: {stuck}")


class Changer(threading.Thread):
    """Keeps changing the shared contexts until stopped; counts its changes."""

    def __init__(self, steps):
        super().__init__(name="changer", daemon=True)
        self.steps = steps
        self.stop = threading.Event()
        self.changes = 0
        self.errors = []

    def run(self):
        i = 0
        try:
            while not self.stop.is_set():
                self.steps[i % len(self.steps)](i // len(self.steps))
                i += 1
                self.changes += 1
                if i % len(self.steps) == 0:
                    time.sleep(0.0005)  # let the workers take the GIL too
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            self.errors.append(exc)


def test_shared_contexts_changed_while_in_use(leaves, tmp_path):
    ca = leaves["ca"]
    client_ctx = fasttls.newctx(cadata=ca)
    client_ctx.set_alpn_protocols(ALPN_CHOICES[0])
    server_ctx = fasttls.newctx()
    server_ctx.set_cert(*leaves["A"][:2])
    server_ctx.set_alpn_protocols(ALPN_CHOICES[0])
    sni_ctx = fasttls.newctx()
    sni_ctx.set_cert(*leaves["C"][:2])
    allowed_certs = {leaves[n][2] for n in "ABC"}
    keylog = tmp_path / "keylog.txt"
    sni_seen = []

    def keep(tls, name):
        sni_seen.append(name)  # and keep serving from server_ctx (None)

    def switch(tls, name):
        sni_seen.append(name)
        return sni_ctx

    steps = [
        lambda n: server_ctx.set_alpn_protocols(ALPN_CHOICES[n % 4]),
        lambda n: client_ctx.set_alpn_protocols(ALPN_CHOICES[(n // 2) % 4] or ["h2"]),
        lambda n: server_ctx.set_ciphers(CIPHER_CHOICES[n % 3]),
        lambda n: setattr(client_ctx, "maximum_version",
                          (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)[n % 2]),
        lambda n: server_ctx.set_cert(*leaves["AB"[n % 2]][:2]),
        lambda n: setattr(server_ctx, "keylog_filename", (str(keylog), None)[n % 2]),
        lambda n: setattr(server_ctx, "sni_callback", (None, keep, switch)[n % 3]),
        lambda n: sni_ctx.set_cert(*leaves["CA"[n % 2]][:2]),
    ]
    changer = Changer(steps)
    errors = []
    stats = {"versions": set(), "alpn": set(), "certs": set(), "done": 0}
    stats_lock = threading.Lock()

    def worker(number):
        try:
            versions, alpn, certs = set(), set(), set()
            for k in range(CONNECTIONS):
                client = fasttls.newtls("client", client_ctx, "localhost")
                server = fasttls.newtls("server", server_ctx)
                pump(client, server)
                unique = b"thread %2d connection %4d " % (number, k)
                payload = unique + hashlib.sha256(unique).digest() * (1 + (number + k) % 40)
                received = server.read(client.write(payload))
                assert received == payload, f"cross-talk: thread {number} got {received[:40]!r}"
                answer = payload[::-1]
                assert client.read(server.write(answer)) == answer, f"cross-talk in {number}"
                versions.add(client.version())
                alpn.add(client.selected_alpn_protocol())
                certs.add(hashlib.sha256(client.getpeercert(True)).hexdigest())
                assert server.read(client.close()) == b"" and server.eof
                assert client.read(server.close()) == b"" and client.eof
            with stats_lock:
                stats["versions"] |= versions
                stats["alpn"] |= alpn
                stats["certs"] |= certs
                stats["done"] += 1
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append((number, exc))

    workers = [threading.Thread(target=worker, args=(n,), name=f"worker-{n}", daemon=True)
               for n in range(THREADS)]
    started = time.monotonic()
    deadline = started + DEADLINE
    changer.start()
    for thread in workers:
        thread.start()
    try:
        join_all(workers, deadline)
    finally:
        changer.stop.set()
        changer.join(max(deadline - time.monotonic(), 5))
    elapsed = time.monotonic() - started
    assert not changer.is_alive(), "the settings thread is stuck"
    print(f"{THREADS} threads x {CONNECTIONS} connections in {elapsed:.1f} s, "
          f"{changer.changes} setting changes; versions {sorted(stats['versions'])}, "
          f"ALPN {sorted(stats['alpn'], key=str)}, {len(stats['certs'])} certificates, "
          f"{len(sni_seen)} sni_callback calls")
    assert not errors, errors[:3]
    assert not changer.errors, changer.errors
    assert stats["done"] == THREADS
    assert stats["certs"] <= allowed_certs
    assert stats["alpn"] <= {None, "h2", "http/1.1"}
    assert stats["versions"] <= {"TLSv1.2", "TLSv1.3"}
    assert changer.changes > len(steps)  # the settings really changed during the run
    if keylog.exists() and keylog.stat().st_size:
        for line in keylog.read_text().splitlines():  # whole lines, never interleaved
            if line.startswith("#"):  # the header of a new key-log file
                continue
            _label, client_random, secret = line.split(" ")
            assert len(client_random) == 64 and len(secret) in (64, 96), line


def test_dropin_shared_contexts_changed_while_in_use(leaves, tmp_path):
    """The same through fasttls.SSLContext (ssl.SSLObject over MemoryBIOs), 8 x 250."""
    threads, connections = 8, max(CONNECTIONS // 4, 1)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(leaves["ca"])
    cert_files = {}
    for name in "AB":
        chain, key, _ = leaves[name]
        (tmp_path / f"{name}.pem").write_bytes(chain + key)
        cert_files[name] = str(tmp_path / f"{name}.pem")
    client_ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(str(ca_file))
    server_ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_files["A"])
    steps = [
        lambda n: server_ctx.set_alpn_protocols(ALPN_CHOICES[n % 4]),
        lambda n: client_ctx.set_alpn_protocols(ALPN_CHOICES[(n // 2) % 4]),
        lambda n: server_ctx.set_ciphers(CIPHER_CHOICES[n % 3]),
        lambda n: server_ctx.load_cert_chain(cert_files["AB"[n % 2]]),
        lambda n: setattr(client_ctx, "maximum_version",
                          (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)[n % 2]),
    ]
    changer = Changer(steps)
    errors = []

    def step(obj):
        try:
            obj.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def worker(number):
        try:
            for k in range(connections):
                c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
                client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
                server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
                done_c = done_s = False
                for _ in range(20):
                    done_c = step(client) or done_c
                    s_in.write(c_out.read())
                    done_s = step(server) or done_s
                    c_in.write(s_out.read())
                    if done_c and done_s:
                        break
                assert done_c and done_s, "drop-in handshake did not complete"
                payload = b"dropin thread %d connection %d " % (number, k) * 20
                client.write(payload)
                s_in.write(c_out.read())
                received = b""
                while len(received) < len(payload):
                    received += server.read(65536)
                assert received == payload, f"cross-talk in drop-in thread {number}"
                server.write(payload[::-1])
                c_in.write(s_out.read())
                got = b""
                while len(got) < len(payload):
                    got += client.read(65536)
                assert got == payload[::-1], f"cross-talk in drop-in thread {number}"
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append((number, exc))

    workers = [threading.Thread(target=worker, args=(n,), name=f"dropin-{n}", daemon=True)
               for n in range(threads)]
    deadline = time.monotonic() + DEADLINE
    changer.start()
    for thread in workers:
        thread.start()
    try:
        join_all(workers, deadline)
    finally:
        changer.stop.set()
        changer.join(max(deadline - time.monotonic(), 5))
    assert not changer.is_alive(), "the settings thread is stuck"
    assert not errors, errors[:3]
    assert not changer.errors, changer.errors
    assert changer.changes > len(steps)
