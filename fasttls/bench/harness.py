"""``python -m fasttls bench``: fasttls against the stdlib ``ssl`` module, same work, same process.

Every row runs one workload twice, once through fasttls and once through the stdlib, on the same
TLS 1.3 cipher suite (checked on both ends of every connection), with the same ephemeral ECDSA
P-256 certificate made in memory. Runs alternate between the two sides and the best of several
repeats is kept. Everything received is checked (lengths, contents), so a row cannot silently
measure nothing.

Each row's ``setup(env, side)`` returns ``run(n)``, which does n units of work and returns what it
received (checked by the caller); the pytest-benchmark suite in ``bench/`` drives the same
functions.
"""
import gc
import hashlib
import os
import platform
import random
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List

SUITE = "TLS_AES_256_GCM_SHA384"
HOSTNAME = "localhost"
BLOCK = 1 << 20             # socket bulk: unit of transfer (1 MiB)
READ_CHUNK = 16384          # stdlib read size: one full TLS record
HEADER_LEN = 17             # peer command: 1-byte verb, two 8-byte big-endian numbers
ACK_LEN = 10                # bulk ack: b"A", 8-byte byte count, 1-byte ok flag
PINGPONG_SIZE = 64
SIDES = ("fasttls", "stdlib")


class BenchError(AssertionError):
    """A workload produced something other than what was sent (or the wrong cipher)."""


# ---------------------------------------------------------------------------------------------
# environment: certificate, contexts, peer process


class Env:
    """Certificate, one client and one server context per library, and (lazily) the peer process.

    Use as a context manager; ``close()`` stops the peer and removes the stdlib's temporary files.
    """

    def __init__(self):
        import fasttls
        from fasttls import _binding

        self.fasttls = fasttls
        self.cert_pem, self.key_pem = _binding.make_self_signed(HOSTNAME)
        self._tmp = tempfile.TemporaryDirectory(prefix="fasttls-bench-")
        self.certfile = os.path.join(self._tmp.name, "cert.pem")
        self.keyfile = os.path.join(self._tmp.name, "key.pem")
        with open(self.certfile, "wb") as f:
            f.write(self.cert_pem)
        with open(self.keyfile, "wb") as f:
            f.write(self.key_pem)

        tls13 = ssl.TLSVersion.TLSv1_3
        # fasttls: the suite is forced with set_ciphersuites on both roles.
        self.ft_client_ctx = fasttls.newctx(minimum_version=tls13, ciphersuites=SUITE,
                                            cadata=self.cert_pem)
        self.ft_server_ctx = fasttls.newctx(minimum_version=tls13, ciphersuites=SUITE)
        self.ft_server_ctx.set_cert(self.cert_pem, self.key_pem)
        # stdlib: no set_ciphersuites; OpenSSL's default TLS 1.3 order puts AES-256-GCM first,
        # which every connection below checks with cipher() on both ends.
        self.std_client_ctx = make_std_client_ctx(self.cert_pem)
        self.std_server_ctx = make_std_server_ctx(self.certfile, self.keyfile)

        self._peers: List[subprocess.Popen] = []
        self.peer_addr = None
        self._closers: List[Callable[[], None]] = []
        self.negotiated = set()     # (library, role, cipher, version) seen on every connection

    # -- peer ---------------------------------------------------------------------------------

    def peer(self):
        """Address of the stdlib-ssl echo/sink server process (started on first use)."""
        if self.peer_addr is None:
            self.peer_addr = self.spawn_peer("fasttls._bench:peer_main")
        return self.peer_addr

    def spawn_peer(self, entry: str):
        """Start `module:function` in a child process with argv = certfile keyfile; it prints
        "host port" (see announce_peer) and exits when its stdin closes, which close() does."""
        module, function = entry.split(":")
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(self.fasttls.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = pkg_parent + os.pathsep + env.get("PYTHONPATH", "")
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from {module} import {function}; {function}()",
             self.certfile, self.keyfile],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._peers.append(proc)
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark peer {entry} failed to start")
        host, port = line.decode().split()
        return host, int(port)

    def on_close(self, fn):
        self._closers.append(fn)

    def close(self):
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:
                pass
        while self._peers:
            proc = self._peers.pop()
            try:
                proc.stdin.close()        # the peer exits when its stdin closes
                proc.wait(5)
            except Exception:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_cipher(self, library, role, obj):
        name, version, _bits = obj.cipher()
        if name != SUITE or version != "TLSv1.3":
            raise BenchError(f"{library} {role} negotiated {name} {version}, expected {SUITE} TLSv1.3")
        self.negotiated.add((library, role, name, version))


def make_std_client_ctx(cert_pem):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)      # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=cert_pem.decode("ascii"))
    return ctx


def make_std_server_ctx(certfile, keyfile):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


# ---------------------------------------------------------------------------------------------
# in-memory pairs


def ft_pair(env):
    """A connected fasttls client/server pair (handshake done, session tickets consumed)."""
    ft = env.fasttls
    client = ft.newtls("client", env.ft_client_ctx, HOSTNAME)
    server = ft.newtls("server", env.ft_server_ctx)
    to_server = client.handshake()
    for _ in range(20):
        to_client = server.handshake(to_server)
        if client.finished():
            if client.read(to_client) != b"":
                raise BenchError("unexpected plaintext during the fasttls handshake")
            break
        to_server = client.handshake(to_client)
        if client.finished() and server.finished() and not to_server:
            break
    if not (client.finished() and server.finished()):
        raise BenchError("fasttls handshake did not complete")
    env.check_cipher("fasttls", "client", client)
    env.check_cipher("fasttls", "server", server)
    return client, server


class StdPair:
    """A connected stdlib SSLObject pair over four MemoryBIOs."""

    def __init__(self, env):
        self.c_in, self.c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.s_in, self.s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = env.std_client_ctx.wrap_bio(self.c_in, self.c_out, server_hostname=HOSTNAME)
        self.server = env.std_server_ctx.wrap_bio(self.s_in, self.s_out, server_side=True)
        done_c = done_s = False
        for _ in range(20):
            if not done_c:
                try:
                    self.client.do_handshake()
                    done_c = True
                except ssl.SSLWantReadError:
                    pass
            self.s_in.write(self.c_out.read())
            if not done_s:
                try:
                    self.server.do_handshake()
                    done_s = True
                except ssl.SSLWantReadError:
                    pass
            self.c_in.write(self.s_out.read())
            if done_c and done_s:
                break
        else:
            raise BenchError("stdlib handshake did not complete")
        try:                                # consume the session tickets, like the fasttls pair
            if self.client.read(READ_CHUNK):
                raise BenchError("unexpected plaintext during the stdlib handshake")
        except ssl.SSLWantReadError:
            pass
        env.check_cipher("stdlib", "client", self.client)
        env.check_cipher("stdlib", "server", self.server)


def std_read_all(sslobj, incoming):
    """The stdlib idiom for "all plaintext available now" (no exception when the input ends
    exactly on a record boundary)."""
    parts = []
    while incoming.pending:
        try:
            parts.append(sslobj.read(READ_CHUNK))
        except ssl.SSLWantReadError:
            break
    return b"".join(parts)


def setup_transfer(env, side, size):
    """``run(n)``: n messages of ``size`` bytes, client write -> server read. Returns bytes read."""
    msg = os.urandom(size)
    digest = hashlib.sha256(msg).digest()
    if side == "fasttls":
        client, server = ft_pair(env)
        if hashlib.sha256(server.read(client.write(msg))).digest() != digest:
            raise BenchError("fasttls: received plaintext differs from what was sent")

        def run(n):
            cw = client.write
            sr = server.read
            m = msg
            total = 0
            for _ in range(n):
                total += len(sr(cw(m)))
            return total
    else:
        pair = StdPair(env)
        if std_read_all(pair.server, pair.s_in):
            raise BenchError("stdlib: stray plaintext before the first message")
        pair.client.write(msg)
        pair.s_in.write(pair.c_out.read())
        if hashlib.sha256(std_read_all(pair.server, pair.s_in)).digest() != digest:
            raise BenchError("stdlib: received plaintext differs from what was sent")

        def run(n):
            cw = pair.client.write
            drain = pair.c_out.read
            feed = pair.s_in.write
            incoming = pair.s_in
            sr = pair.server.read
            WantRead = ssl.SSLWantReadError
            m = msg
            total = 0
            for _ in range(n):
                cw(m)
                feed(drain())
                parts = []
                while incoming.pending:
                    try:
                        parts.append(sr(READ_CHUNK))
                    except WantRead:
                        break
                total += len(b"".join(parts))
            return total
    return run


def setup_handshake(env, side):
    """``run(n)``: n full TLS 1.3 handshakes, new connection objects each time, contexts reused.

    The client verifies the server certificate (CA and hostname) and consumes the session
    tickets, on both sides. Returns the number of completed pairs."""
    if side == "fasttls":
        newtls = env.fasttls.newtls
        cctx, sctx = env.ft_client_ctx, env.ft_server_ctx

        def run(n):
            done = 0
            for _ in range(n):
                c = newtls("client", cctx, HOSTNAME)
                s = newtls("server", sctx)
                server_flight = s.handshake(c.handshake())
                tickets = s.handshake(c.handshake(server_flight))
                if c.read(tickets) or not (c.finished() and s.finished()):
                    raise BenchError("fasttls handshake did not complete in one round trip")
                done += 1
            return done

        c, s = ft_pair(env)          # cipher/verification check on a representative pair
        if c.getpeercert() in (None, {}):
            raise BenchError("fasttls client did not verify the server certificate")
    else:
        cctx, sctx = env.std_client_ctx, env.std_server_ctx
        MemoryBIO = ssl.MemoryBIO

        def run(n):
            WantRead = ssl.SSLWantReadError
            done = 0
            for _ in range(n):
                c_in, c_out, s_in, s_out = MemoryBIO(), MemoryBIO(), MemoryBIO(), MemoryBIO()
                c = cctx.wrap_bio(c_in, c_out, server_hostname=HOSTNAME)
                s = sctx.wrap_bio(s_in, s_out, server_side=True)
                try:
                    c.do_handshake()
                except WantRead:
                    pass
                s_in.write(c_out.read())
                try:
                    s.do_handshake()
                except WantRead:
                    pass
                c_in.write(s_out.read())
                c.do_handshake()            # raises if not complete
                s_in.write(c_out.read())
                s.do_handshake()
                c_in.write(s_out.read())    # session tickets
                try:
                    c.read(READ_CHUNK)
                except WantRead:
                    pass
                done += 1
            return done

        pair = StdPair(env)
        if not pair.client.getpeercert():
            raise BenchError("stdlib client did not verify the server certificate")
    if run(2) != 2:
        raise BenchError(f"{side}: handshake count mismatch")
    return run


# ---------------------------------------------------------------------------------------------
# socket workloads (client in this process, stdlib-ssl peer in another)


def header(verb, a, b=0):
    return verb + a.to_bytes(8, "big") + b.to_bytes(8, "big")


def pattern(seed):
    """The bulk payload: a pseudo-random 1 MiB block (repeated), plus a wrap-around tail so any
    record-sized window of the stream is a plain slice."""
    block = random.Random(seed).randbytes(BLOCK)
    return block + block[:READ_CHUNK]


class _Client:
    """One connection to the peer through either library: sendall / recv_exact / close."""

    def __init__(self, env, side):
        self.side = side
        sock = socket.create_connection(env.peer())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if side == "fasttls":
            ft = env.fasttls
            from fasttls import helpers
            tls = ft.newtls("client", env.ft_client_ctx, HOSTNAME)
            helpers.init_requestfunc(sock, tls)()
            env.check_cipher("fasttls", "client", tls)
            self.tls = tls
            self.write = helpers.writefunc(sock, tls)
            self.read_exact = helpers.readfunc(sock, tls)       # f(sz): exactly sz bytes
            close = helpers.closefunc(tls)

            def closer():
                try:
                    close()
                finally:
                    sock.close()
        else:
            ssock = env.std_client_ctx.wrap_socket(sock, server_hostname=HOSTNAME)
            env.check_cipher("stdlib", "client", ssock)
            self.ssock = ssock
            self.write = ssock.sendall
            self.read_exact = lambda sz: std_recv_exact(ssock.recv, sz)
            closer = ssock.close
        self.sock = sock
        self.close = closer
        env.on_close(closer)


def std_recv_exact(recv, sz):
    data = recv(sz)
    while len(data) < sz:
        more = recv(sz - len(data))
        if not more:
            raise ssl.SSLEOFError("peer closed early")
        data += more
    return data


def setup_socket_bulk(env, side):
    """``run(n)``: send n MiB to the peer (1 MiB writes), wait for its ack. The peer compares
    every byte with the expected pattern; returns the byte count it acknowledged."""
    seed = random.getrandbits(63)
    blocks = pattern(seed)[:BLOCK]
    conn = _Client(env, side)
    write, read_exact = conn.write, conn.read_exact

    def run(n):
        write(header(b"B", n * BLOCK, seed))
        for _ in range(n):
            write(blocks)
        ack = read_exact(ACK_LEN)
        if ack[:1] != b"A" or ack[9:10] != b"\x01":
            raise BenchError(f"{side}: peer reports corrupted bulk data: {ack!r}")
        return int.from_bytes(ack[1:9], "big")

    if run(1) != BLOCK:
        raise BenchError(f"{side}: peer acknowledged a wrong byte count")
    return run


def setup_socket_pingpong(env, side):
    """``run(n)``: n round trips of a 64 B message echoed by the peer. Returns bytes received."""
    msg = os.urandom(PINGPONG_SIZE)
    conn = _Client(env, side)
    write, read_exact = conn.write, conn.read_exact

    def run(n):
        write(header(b"P", n, PINGPONG_SIZE))
        total = 0
        for _ in range(n):
            write(msg)
            echo = read_exact(PINGPONG_SIZE)
            if echo != msg:
                raise BenchError(f"{side}: echo differs from what was sent")
            total += len(echo)
        return total

    run(2)
    return run


# -- the peer process (stdlib ssl only) --------------------------------------------------------


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
                verb, a, b = hdr[:1], int.from_bytes(hdr[1:9], "big"), int.from_bytes(hdr[9:17], "big")
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


def announce_peer(host, port):
    """In a peer process: tell the parent where to connect; exit when the parent goes away."""
    sys.stdout.write(f"{host} {port}\n")
    sys.stdout.flush()

    def watchdog():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()


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


# ---------------------------------------------------------------------------------------------
# rows and measurement


@dataclass
class Row:
    name: str
    title: str
    unit: str
    per_op: float           # units per operation of run(n)
    check: int              # what run(1) returns when correct (bytes or count)
    target: float
    setup: Callable         # setup(env, side) -> run(n)
    uses_socket: bool = False
    seconds: float = 0.3    # per timed run
    repeat: int = 7         # timed runs per side (best kept)
    requires: str = ""      # a module the row needs (not a fasttls dependency)

    def available(self) -> bool:
        if not self.requires:
            return True
        import importlib.util

        return importlib.util.find_spec(self.requires) is not None


ROWS: Dict[str, Row] = {r.name: r for r in [
    Row("msg64", "64 B messages", "msgs/s", 1, 64, 1.5,
        lambda env, side: setup_transfer(env, side, 64)),
    Row("rec16k", "16 KiB records", "MB/s", 16384 / 1e6, 16384, 1.15,
        lambda env, side: setup_transfer(env, side, 16384)),
    Row("write1m", "1 MiB writes", "MB/s", BLOCK / 1e6, BLOCK, 1.3,
        lambda env, side: setup_transfer(env, side, BLOCK)),
    Row("handshake", "full handshakes", "pairs/s", 1, 1, 1.0, setup_handshake),
    # Loopback rows depend on wake-up latency across processes: more, shorter runs give a
    # steadier best-of.
    Row("sock_bulk", "socket bulk, 1 MiB writes", "MB/s", BLOCK / 1e6, BLOCK, 1.0,
        setup_socket_bulk, True, 0.1, 21),
    Row("sock_pingpong", "socket 64 B ping-pong", "round trips/s", 1, PINGPONG_SIZE, 1.0,
        setup_socket_pingpong, True, 0.1, 21),
]}


@dataclass
class Result:
    row: Row
    rates: Dict[str, float] = field(default_factory=dict)    # best rate per side
    samples: Dict[str, List[float]] = field(default_factory=dict)
    n: int = 0

    @property
    def ratio(self):
        return self.rates["fasttls"] / self.rates["stdlib"]

    @property
    def met(self):
        return self.ratio >= self.row.target

    def as_dict(self):
        return {
            "name": self.row.name, "workload": self.row.title, "unit": self.row.unit,
            "fasttls": self.rates["fasttls"], "stdlib": self.rates["stdlib"],
            "ratio": self.ratio, "target": self.row.target, "met": self.met,
            "ops_per_run": self.n,
            "runs_per_side": len(self.samples["fasttls"]),
            "samples": self.samples,
        }


def timed(run, n, expect):
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        got = run(n)
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    if got != expect:
        raise BenchError(f"run({n}) returned {got}, expected {expect}")
    return dt


def measure(row, runs, seconds, repeat):
    """Calibrate n so the slower side takes ~seconds, then alternate the sides `repeat` times
    (swapping which goes first) and keep the best rate of each."""
    n = 1
    while True:
        worst = max(timed(runs[s], n, n * row.check) for s in SIDES)
        if worst >= seconds / 5 or worst >= 0.02 and n >= 1 << 20:
            break
        n = n * 4 if worst < seconds / 50 else n * 2
    n = max(1, int(n * seconds / worst))
    res = Result(row, n=n, samples={s: [] for s in SIDES})
    for i in range(repeat):
        order = SIDES if i % 2 == 0 else SIDES[::-1]
        for side in order:
            dt = timed(runs[side], n, n * row.check)
            res.samples[side].append(n * row.per_op / dt)
    res.rates = {s: max(res.samples[s]) for s in SIDES}
    return res


def versions(env=None):
    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "stdlib_openssl": ssl.OPENSSL_VERSION,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        from fasttls import _binding
        lib, ffi = _binding.lib, _binding.ffi
        info["fasttls_openssl"] = ffi.string(lib.OpenSSL_version(0)).decode()
    except Exception:
        info["fasttls_openssl"] = None
    try:
        from fasttls._version import __version__
        info["fasttls"] = __version__
    except Exception:
        info["fasttls"] = None
    return info


def pin_allocator():
    """Fix glibc malloc's mmap and trim thresholds for this process; returns a note, or None.

    By default glibc adapts both thresholds to the allocation history, and whether a 1 MiB
    buffer comes from a warm heap or from freshly faulted pages then depends on which large
    objects happened to be freed together: the 1 MiB row swings 0.4x-1.1x run to run, for both
    libraries, measuring the heap rather than TLS. Both sides run in this process, so pinning
    changes their conditions equally."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3
    size = 32 << 20  # glibc's largest dynamic mmap threshold on 64-bit
    if mallopt(m_mmap_threshold, size) and mallopt(m_trim_threshold, size):
        return "allocator: glibc malloc mmap/trim thresholds pinned at 32 MiB for this process " \
               "(both sides; --no-pin-malloc to leave them adaptive)"
    return None


def register_rows(rows):
    for row in rows:
        ROWS.setdefault(row.name, row)


def _register_dropin_rows():
    # _bench_dropin imports this module; whichever of the two is imported first, the rows are
    # registered once both exist (here, or at the end of _bench_dropin).
    from fasttls import _bench_dropin

    register_rows(getattr(_bench_dropin, "ROWS", ()))


def default_rows():
    """Every row whose optional requirement (e.g. requests) is installed."""
    return [name for name, row in ROWS.items() if row.available()]


def run_bench(rows=None, quick=False, seconds=None, repeat=None, progress=None):
    """Run the chosen rows (names; default all available). Returns a JSON-able dict."""
    names = default_rows() if not rows else list(rows)
    unknown = [r for r in names if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    t0 = time.perf_counter()
    results = []
    with Env() as env:
        for name in names:
            row = ROWS[name]
            runs = {side: row.setup(env, side) for side in SIDES}
            secs = seconds if seconds is not None else (0.02 if quick else row.seconds)
            reps = repeat if repeat is not None else (2 if quick else row.repeat)
            res = measure(row, runs, secs, reps)
            results.append(res)
            if progress:
                progress(res)
        negotiated = sorted(env.negotiated)
    return {
        "versions": versions(),
        "cipher": SUITE,
        "tls_version": "TLSv1.3",
        "negotiated": [list(x) for x in negotiated],
        "quick": quick,
        "elapsed_s": time.perf_counter() - t0,
        "rows": [r.as_dict() for r in results],
    }


def _fmt_rate(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def format_header(v, cipher_note):
    return "\n".join([
        "fasttls bench: fasttls vs stdlib ssl (MemoryBIO/SSLObject, SSLSocket), same process",
        f"Python {v['python']} ({v['implementation']}, {v['machine']}, {v['cpus']} CPUs)",
        f"OpenSSL: stdlib {v['stdlib_openssl']}; fasttls {v['fasttls_openssl'] or '?'}",
        cipher_note,
    ])


def format_row(r):
    mark = "met" if r["met"] else "MISSED"
    work = f"{r['workload']} ({r['unit']})"
    return (f"{work:<38} {_fmt_rate(r['fasttls']):>13} {_fmt_rate(r['stdlib']):>13} "
            f"{r['ratio']:>6.2f}x {'>= %.2fx' % r['target']:>9}  {mark}")


TABLE_HEAD = (f"{'workload':<38} {'fasttls':>13} {'stdlib':>13} {'ratio':>7} {'target':>9}  \n"
              + "-" * 90)


def main(args):
    """`bench` subcommand; args from fasttls.__main__."""
    import json
    rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    try:
        names = default_rows() if not rows else rows
        unknown = [r for r in names if r not in ROWS]
        if unknown:
            raise ValueError(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    except ValueError as e:
        print(f"fasttls bench: {e}", file=sys.stderr)
        return 2
    allocator_note = None if args.no_pin_malloc else pin_allocator()
    cipher_note = (f"cipher: {SUITE} over TLSv1.3 on both sides (fasttls: set_ciphersuites; "
                   "stdlib: OpenSSL default order), checked with cipher() on every connection")
    if not args.json:
        print(format_header(versions(), cipher_note))
        print("each row: same work on both sides, sides alternate, best of "
              + ("2 runs (--quick)" if args.quick else "7 x 0.3 s runs (memory) / 21 x 0.1 s (socket)")
              + " per side")
        print("cert: ephemeral ECDSA P-256 made in memory; clients verify CA + hostname; "
              "socket peer: one stdlib-ssl process for both sides")
        if allocator_note:
            print(allocator_note)
        missing = [f"{row.name} (needs {row.requires})" for row in ROWS.values()
                   if not row.available()]
        if missing and not rows:
            print("rows left out, their library is not installed: " + ", ".join(missing))
        print()
        print(TABLE_HEAD, flush=True)

    def progress(res):
        if not args.json:
            print(format_row(res.as_dict()), flush=True)

    out = run_bench(rows, quick=args.quick, progress=progress)
    out["allocator"] = allocator_note
    if args.memory:
        from fasttls import _bench_memory

        out["memory"] = _bench_memory.measure(args.memory)
        if not args.json:
            print(_bench_memory.format_result(out["memory"]))
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        met = sum(r["met"] for r in out["rows"])
        print("-" * 90)
        print(f"{met}/{len(out['rows'])} targets met; ratio = fasttls/stdlib (higher is better); "
              f"MB = 10^6 bytes; {out['elapsed_s']:.1f} s")
    return 0


_register_dropin_rows()
