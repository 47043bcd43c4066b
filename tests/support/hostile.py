"""Hostile and broken peers (issue 4, section 3): the case runner the tests/test_hostile_*.py
tables share, and what their scenarios are built from.

Every case is a scenario against a peer that nobody here wrote (the stdlib's ``ssl`` over memory
BIOs or loopback sockets, ``openssl s_server``/``s_client``) or raw bytes, some of them sealed
under the real session keys (taken from the stdlib peer's key log) so that fasttls sees records
that are authentic yet hostile: data after close_notify, a renegotiation request, a second
ClientHello. Each case states

* the exact exception class fasttls raises (None: the hostile input is refused without one),
* a substring of its message that names the cause (and, where useful, its ``reason``),
* the only plaintext fasttls may hand out (``allowed``): bytes the real peer authenticated.

run_case also checks that nothing hangs: every socket has a timeout, every loop a count limit,
every thread is joined and every process killed when the case ends, and a case must finish
within CASE_DEADLINE. Stall cases run fasttls.helpers over a socket with a short timeout and
expect the socket's timeout exception within it. Sockets are on 127.0.0.1 only.

Each tests/test_hostile_*.py file is one concern's table of cases (certificates; protocol
versions and handshake alerts; records and close_notify; renegotiation; truncation and stalls
over sockets) and the scenarios only it uses. The certificates are support.hostile_certs (the
stdlib peers serving the weak ones are put at @SECLEVEL=0); the records sealed under real keys
are support.records."""
import contextlib
import dataclasses
import re
import socket
import ssl
import subprocess
import threading
import time
from typing import Callable, Optional

import pytest

import fasttls
from support.hostile_certs import Cert
from support.pairs import TLS12, TLS13
from support.peers import StdlibPeer, loopback_pair, pin_version
from support.pump import deliver
from support.records import HANDSHAKE, Sealer
from support.requires import require_program

TLS10 = ssl.TLSVersion.TLSv1
TLS11 = ssl.TLSVersion.TLSv1_1

SOCKET_TIMEOUT = 10.0  # any socket that is not meant to stall
STALL_TIMEOUT = 0.5  # fasttls's socket in the stall cases
CASE_DEADLINE = 20.0  # a case taking longer than this counts as a hang
JOIN_TIMEOUT = 15.0
PROCESS_TIMEOUT = 15.0
MAX_STEPS = 200  # bounds every loop
WEAK = "DEFAULT:@SECLEVEL=0"  # the stdlib/openssl peers that must be able to use weak things
AES128_GCM_TLS12 = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"


# ============================================================================== fasttls ends


def f_client(trust, hostname="localhost", **options):
    """A fasttls client trusting `trust` (a Cert's CA, or PEM bytes)."""
    cadata = trust.ca_pem if isinstance(trust, Cert) else trust
    return fasttls.newtls("client", fasttls.newctx(cadata=cadata, **options), hostname)


def f_server(cert, client_ca=None, **options):
    """A fasttls server with `cert`; with client_ca, it requires a client certificate."""
    ctx = fasttls.newctx(**options)
    ctx.set_cert(cert.chain_pem, cert.key_pem)
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return fasttls.newtls("server", ctx)


# ================================================================================ stdlib peers


def _std_versions(ctx, version, ciphers, weak):
    """A stdlib peer's protocol versions and ciphers; `weak`: down to TLS 1.0, @SECLEVEL=0 (set
    before a weak certificate is loaded, which the default level refuses)."""
    if weak:
        ctx.set_ciphers(WEAK)
        ctx.minimum_version = TLS10 if version is None else version
    if ciphers:
        ctx.set_ciphers(ciphers)
    pin_version(ctx, version)


def std_server_ctx(env, cert, version=None, ciphers=None, weak=False, tickets=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _std_versions(ctx, version, ciphers, weak)
    ctx.load_cert_chain(*cert.write(env.dir))
    if not tickets:
        ctx.num_tickets = 0
    ctx.keylog_filename = env.keylog
    return ctx


def std_client_ctx(env, trust_pem, cert=None, version=None, ciphers=None, weak=False):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=trust_pem.decode("ascii"))
    _std_versions(ctx, version, ciphers, weak)
    if cert is not None:
        ctx.load_cert_chain(*cert.write(env.dir))
    ctx.keylog_filename = env.keylog
    return ctx


def memory_handshake(env, tls, peer):
    """Handshake fasttls `tls` with a StdlibPeer of the other role, in memory, until both finish
    or fasttls raises (it is then given the peer's alert first, if the peer failed). Plaintext
    fasttls returns goes to env.received. Returns the peer's own error, if any."""
    to_peer = b"" if tls.server_side else tls.handshake()
    peer_error = None
    for _ in range(MAX_STEPS):
        to_tls = b""
        if peer_error is None:
            try:
                to_tls = peer.step(to_peer)
            except ssl.SSLError as exc:  # the stdlib refused: its alert is in the BIO
                peer_error = exc
                to_tls = peer.outgoing.read()
        to_peer, plain = deliver(tls, to_tls)  # raises what fasttls raises
        env.got(plain)
        if tls.finished() and peer.done:
            if to_peer:
                peer.incoming.write(to_peer)  # e.g. tickets: the stdlib reads them later
            return peer_error
        if peer_error is not None:
            return peer_error  # fasttls took the peer's alert without raising
    raise AssertionError("memory handshake did not end")


def sealed_session(env, fasttls_role, version, certs):
    """A finished in-memory handshake between fasttls (`fasttls_role`) and a stdlib peer that
    will never write itself; returns (fasttls TLS, Sealer speaking as the stdlib side)."""
    suites = {"ciphersuites": "TLS_AES_128_GCM_SHA256"} if version == TLS13 else {}
    if fasttls_role == "client":
        tls = f_client(certs.server, **suites)
        ctx = std_server_ctx(env, certs.server, version, ciphers=AES128_GCM_TLS12, tickets=False)
        peer = StdlibPeer(ctx, server_side=True)
    else:
        tls = f_server(certs.server, **suites)
        ctx = std_client_ctx(env, certs.server.ca_pem, version=version, ciphers=AES128_GCM_TLS12)
        peer = StdlibPeer(ctx, server_side=False, hostname="localhost")
    server_random = None
    if version == TLS12:  # from the ServerHello, which the stdlib or fasttls sends first
        hello = []
        original_step = peer.step

        def step(data=b""):
            out = original_step(data)
            hello.append(data if fasttls_role == "server" else out)
            return out

        peer.step = step
    assert memory_handshake(env, tls, peer) is None
    assert tls.cipher()[0] in ("TLS_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256")
    if version == TLS12:
        first = next(h for h in hello if h and h[0] == HANDSHAKE and h[5] == 2)
        server_random = first[11:43]
    # TLS 1.2: the peer's Finished was record 0 under these keys; TLS 1.3: nothing sent yet.
    seq = 1 if version == TLS12 else 0
    return tls, Sealer(version, env.keylog, "server" if fasttls_role == "client" else "client",
                       server_random, seq)


# ================================================================================ case runner


class Env:
    """What a case may use; everything it starts is stopped by close()."""

    def __init__(self, directory, certs):
        self.dir, self.certs = directory, certs
        self.keylog = str(directory / "keylog.txt")
        self.received = bytearray()
        self.threads, self.sockets, self.processes = [], [], []
        self.release = threading.Event()  # stalling peers wait on this

    def got(self, plain):
        self.received += plain

    def thread(self, fn, *args):
        t = PeerThread(fn, *args)
        self.threads.append(t)
        return t

    def tcp_pair(self):
        """(fasttls end, peer end): connected loopback sockets, both with SOCKET_TIMEOUT."""
        pair = loopback_pair(SOCKET_TIMEOUT)
        self.sockets += pair
        return pair

    def connect(self, port):
        sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
        self.sockets.append(sock)
        return sock

    def listener(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.append(sock)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        sock.settimeout(SOCKET_TIMEOUT)
        return sock

    def process(self, args, stdin=subprocess.DEVNULL):
        out = open(self.dir / f"proc{len(self.processes)}.out", "wb+")
        proc = subprocess.Popen(args, stdin=stdin, stdout=out, stderr=subprocess.STDOUT)
        self.processes.append((proc, out))
        return proc, out

    def close(self):
        self.release.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for proc, out in self.processes:
            proc.kill()
            proc.wait(timeout=PROCESS_TIMEOUT)
            out.close()
            if proc.stdin:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        hung = []
        for t in self.threads:
            t.join(JOIN_TIMEOUT)
            if t.is_alive():
                hung.append(t)
        assert not hung, "a peer thread did not finish (hang)"


class PeerThread(threading.Thread):
    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self.fn, self.args, self.error = fn, args, None
        self.start()

    def run(self):
        try:
            self.fn(*self.args)
        except BaseException as exc:  # peers fail on purpose in many cases
            self.error = exc


# -------------------------------------------------------------------------- openssl peers


def openssl_output(out):
    out.flush()
    out.seek(0)
    return out.read().decode("utf-8", "replace")


def s_server(env, cert, *extra):
    """`openssl s_server` on 127.0.0.1 (one connection); returns its port."""
    openssl = require_program("openssl")
    cert_path, key_path = cert.write(env.dir)
    proc, out = env.process([openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1",
                             "-cert", cert_path, "-key", key_path, *extra],
                            stdin=subprocess.PIPE)  # open until the case ends: EOF would stop it
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while time.monotonic() < deadline:
        match = re.search(r"ACCEPT 127\.0\.0\.1:(\d+)\s", openssl_output(out))
        if match:
            return int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError("s_server did not start: " + openssl_output(out))


def s_client(env, port, *extra, stdin=subprocess.DEVNULL):
    openssl = require_program("openssl")
    return env.process([openssl, "s_client", "-connect", f"127.0.0.1:{port}", *extra],
                       stdin=stdin)


def serve_with_helpers(env, tls, sock):
    """The fasttls server side over a socket with the helpers: handshake, then read until
    close_notify (plaintext to env.received)."""
    fasttls.helpers.init_responsefunc(sock, tls)()
    read_until_close(env, fasttls.helpers.readfunc(sock, tls))


def read_until_close(env, read):
    """Call a helpers read function until it returns b"" (close_notify); plaintext to
    env.received."""
    for _ in range(MAX_STEPS):
        data = read()
        env.got(data)
        if not data:
            return


def accept_one(listener):
    sock, _ = listener.accept()
    sock.settimeout(SOCKET_TIMEOUT)
    return sock


# ======================================================================= scenarios and cases
# A scenario takes the Env, raises what fasttls raises (or returns), and puts every plaintext
# byte fasttls returned into env.received. These are the ones several tables use.


def clienthello_bytes(env, version=None):
    """A real ClientHello from the stdlib (one TLS record, or more)."""
    ctx = std_client_ctx(env, env.certs.server.ca_pem, version=version)
    return StdlibPeer(ctx, server_side=False, hostname="localhost").step()


def raw_to_server(payload, then=b""):
    """Raw bytes (or a function of env giving them) as the first flight to a fasttls server,
    and `then` after its answer."""

    def scenario(env):
        data = payload(env) if callable(payload) else payload
        tls = f_server(env.certs.server)
        tls.handshake(data)
        for _ in range(MAX_STEPS):
            tls.handshake(then)
        raise AssertionError("fasttls server accepted the input")

    return scenario


def raw_to_client(reply):
    """A fasttls client whose ClientHello is answered with raw bytes."""

    def scenario(env):
        tls = f_client(env.certs.server)
        hello = tls.handshake()
        assert hello[0] == HANDSHAKE
        data = reply(env, hello) if callable(reply) else reply
        tls.handshake(data)
        tls.handshake(b"")
        raise AssertionError("fasttls client accepted the input")

    return scenario


@dataclasses.dataclass
class Case:
    id: str
    role: str  # fasttls's role
    peer: str  # stdlib, raw, openssl
    scenario: Callable[[Env], None]
    raises: Optional[type]  # the exact class fasttls raises; None: refused without exception
    message: Optional[str] = None  # in str(exception)
    reason: Optional[str] = None  # exception.reason
    verify: Optional[str] = None  # in exception.verify_message
    allowed: bytes = b""  # the only plaintext fasttls may return
    stall: bool = False


CertError = fasttls.SSLCertVerificationError
Error = fasttls.SSLError
EOF = fasttls.SSLEOFError
Timeout = socket.timeout  # TimeoutError on Python >= 3.10


def params(cases):
    """pytest params of a table, each with the case's id."""
    return [pytest.param(case, id=case.id) for case in cases]


def run_case(case, certs, tmp_path):
    """Run one case against `certs` (a support.hostile_certs.Certs) and check its outcome."""
    env = Env(tmp_path, certs)
    start = time.monotonic()
    # The scenario runs in a watchdog thread: a hang (even inside the C engine, which runs
    # without the GIL) fails the case instead of blocking the test run.
    runner = PeerThread(case.scenario, env)
    runner.join(CASE_DEADLINE)
    elapsed = time.monotonic() - start
    hung = runner.is_alive()
    env.close()  # joins every peer thread, kills every process
    runner.join(JOIN_TIMEOUT)
    assert not hung, f"the case did not finish within {CASE_DEADLINE} s (hang)"
    error = runner.error
    print(f"\n{case.id}: {type(error).__name__ if error else None}: {error}")
    if isinstance(error, (pytest.skip.Exception, pytest.fail.Exception, AssertionError)):
        raise error  # a missing peer program, or the scenario's own check failed
    if case.raises is None:
        assert error is None, f"expected no exception, got {error!r}"
    else:
        assert error is not None, f"expected {case.raises.__name__}, nothing was raised"
        assert type(error) is case.raises, f"expected {case.raises.__name__}, got {error!r}"
        assert case.message in str(error), f"{case.message!r} not in {str(error)!r}"
        if case.reason is not None:
            assert error.reason == case.reason, error.reason
        if case.raises is CertError:
            assert error.verify_code != 0
            assert (case.verify or case.message) in error.verify_message
        if isinstance(error, fasttls.SSLError) and not isinstance(error, EOF):
            assert isinstance(error.alert, bytes)
    if case.stall:
        assert STALL_TIMEOUT * 0.8 <= elapsed < STALL_TIMEOUT + 5.0, elapsed
    assert bytes(env.received) == case.allowed, "fasttls returned bytes that are not data"
