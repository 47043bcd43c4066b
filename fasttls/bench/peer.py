"""The benchmark's peer processes: how the parent starts one and learns its address, and the
stdlib-ssl echo/sink server the socket rows talk to.

A peer is ``module:function`` run in a child process with argv = certfile keyfile. It prints
"host port" on one line (announce_peer) and exits when its standard input closes, so a parent
that dies or forgets to stop it never leaves it behind. The parent side is spawn_peer and
stop_peer; ``harness.Env`` keeps track of the peers it started.

The echo/sink protocol over TLS: a 17-byte command (1-byte verb, two 8-byte big-endian numbers,
see header), then
- ``B total seed``: the client sends ``total`` bytes of pattern(seed); the peer compares every
  byte and answers a 10-byte ack: b"A", the byte count, and b"\\x01" if all matched (b"\\x00" if
  not);
- ``P count size``: ``count`` round trips of a ``size``-byte message echoed back.
Anything else ends the connection.

This module imports nothing else of the benchmark, so a peer process loads only what it runs.
"""
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
from typing import Sequence, Tuple

BLOCK = 1 << 20             # socket bulk: unit of transfer (1 MiB)
READ_CHUNK = 16384          # stdlib read size: one full TLS record
HEADER_LEN = 17             # peer command: 1-byte verb, two 8-byte big-endian numbers
ACK_LEN = 10                # bulk ack: b"A", 8-byte byte count, 1-byte ok flag
STOP_TIMEOUT = 5            # seconds a peer gets to exit once its stdin is closed


def make_std_server_ctx(certfile, keyfile):
    """The stdlib server context of every peer, and of the in-memory stdlib side."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


# ---------------------------------------------------------------------------------------------
# parent side


def spawn_peer(entry: str, args: Sequence[str]) -> Tuple[subprocess.Popen, Tuple[str, int]]:
    """Start `module:function` in a child process with `args` as its argv; return the process
    and the (host, port) it announced. The checkout's (or the installed) fasttls stays
    importable in the child whatever the current directory."""
    module, function = entry.split(":")
    pkg_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from {module} import {function}; {function}()", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stdin is not None  # both are pipes
    line = proc.stdout.readline()
    if not line:
        stop_peer(proc)
        raise RuntimeError(f"benchmark peer {entry} failed to start")
    host, port = line.decode().split()
    return proc, (host, int(port))


def stop_peer(proc: subprocess.Popen) -> None:
    """Close the peer's stdin (it exits), wait a bounded time, kill it if it is still there."""
    assert proc.stdout is not None and proc.stdin is not None  # spawn_peer made both pipes
    try:
        proc.stdin.close()
        proc.wait(STOP_TIMEOUT)
    except Exception:
        proc.kill()
        proc.wait()
    proc.stdout.close()


# ---------------------------------------------------------------------------------------------
# peer side


def announce_peer(host, port):
    """In a peer process: tell the parent where to connect; exit when the parent goes away."""
    sys.stdout.write(f"{host} {port}\n")
    sys.stdout.flush()

    def watchdog():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()


def header(verb, a, b=0):
    return verb + a.to_bytes(8, "big") + b.to_bytes(8, "big")


def pattern(seed):
    """The bulk payload: a pseudo-random 1 MiB block (repeated), plus a wrap-around tail so any
    record-sized window of the stream is a plain slice."""
    block = random.Random(seed).randbytes(BLOCK)
    return block + block[:READ_CHUNK]


class _PeerConn:
    """Server end of one connection: stdlib SSLObject over a raw socket with large receives
    (faster than SSLSocket, which does two recv() calls per record), so the peer keeps up."""

    def __init__(self, ctx, sock):
        self.sock = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.rbuf = bytearray(256 * 1024)
        self.rview = memoryview(self.rbuf)
        self.plain = bytearray()

    def flush(self):
        data = self.out.read()
        if data:
            self.sock.sendall(data)

    def fill(self):
        n = self.sock.recv_into(self.rbuf)
        if not n:
            raise EOFError
        self.inc.write(self.rview[:n])

    def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
        self.flush()

    def read_some(self):
        """At least one chunk of plaintext (blocking); EOFError at close_notify or TCP EOF."""
        while True:
            parts = []
            while self.inc.pending:
                try:
                    chunk = self.obj.read(READ_CHUNK)
                except ssl.SSLWantReadError:
                    break
                if not chunk:
                    raise EOFError
                parts.append(chunk)
            if parts:
                return parts
            self.fill()

    def read_exact(self, n):
        while len(self.plain) < n:
            for p in self.read_some():
                self.plain += p
        data = bytes(self.plain[:n])
        del self.plain[:n]
        return data

    def write(self, data):
        self.obj.write(data)
        self.flush()

    def bulk(self, total, seed, patterns):
        pat = patterns.get(seed)
        if pat is None:
            pat = patterns[seed] = pattern(seed)
        got = 0
        ok = True
        parts = [bytes(self.plain)] if self.plain else []
        self.plain.clear()
        while True:
            for p in parts:
                take = min(len(p), total - got)
                while take:          # a leftover buffer may be longer than one record
                    step = min(take, READ_CHUNK)
                    piece = p if step == len(p) else p[:step]
                    if not pat.startswith(piece, got % BLOCK):     # memcmp, no copy
                        ok = False
                    got += step
                    take -= step
                    p = p[step:]
                if p:
                    self.plain += p
            if got >= total:
                break
            parts = self.read_some()
        self.write(b"A" + got.to_bytes(8, "big") + (b"\x01" if ok else b"\x00"))

    def pingpong(self, count, size):
        for _ in range(count):
            if not self.plain:
                parts = self.read_some()
                if len(parts) == 1 and len(parts[0]) == size:
                    self.write(parts[0])
                    continue
                for p in parts:
                    self.plain += p
            self.write(self.read_exact(size))

    def serve(self):
        patterns = {}
        try:
            self.handshake()
            while True:
                hdr = self.read_exact(HEADER_LEN)
                verb = hdr[:1]
                a, b = int.from_bytes(hdr[1:9], "big"), int.from_bytes(hdr[9:17], "big")
                if verb == b"B":
                    self.bulk(a, b, patterns)
                elif verb == b"P":
                    self.pingpong(a, b)
                else:
                    break
        except (EOFError, OSError, ssl.SSLError):
            pass
        finally:
            self.sock.close()


def peer_main():
    """Entry point of the peer process: argv = certfile keyfile. Prints "host port", serves one
    thread per connection, exits when stdin closes (i.e. when the parent goes away)."""
    certfile, keyfile = sys.argv[1], sys.argv[2]
    ctx = make_std_server_ctx(certfile, keyfile)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    announce_peer(*lsock.getsockname())
    while True:
        sock, _ = lsock.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_PeerConn(ctx, sock).serve, daemon=True).start()
