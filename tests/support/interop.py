"""The interop matrix's plumbing (tests/interop, issue 4 section 1): fasttls against TLS
implementations nobody here wrote. Its fixtures are in tests/interop/conftest.py.

Rules every test here follows: peers listen and connect on 127.0.0.1 only, on ephemeral ports
(or a port just found free, for programs that cannot report one); every socket has a timeout and
every loop a count limit; every process is killed in a ``finally``; configuration files are
written by the test into ``tmp_path``.

The matrix is spelled out in the test ids: ``test_client[<peer>-<cell>]`` (fasttls is the
client) and ``test_server[<peer>-<cell>]`` (fasttls is the server). A cell a peer genuinely
cannot do is excluded in the parametrization, with the reason next to it, never skipped at run
time."""
import contextlib
import dataclasses
import hashlib
import json
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

import fasttls
from support.certs import Identity
from support.pairs import TLS12, TLS13
from support.requires import skip_or_fail

SOCKET_TIMEOUT = 20.0  # bounds every blocking socket call
PROCESS_TIMEOUT = 30.0  # bounds waiting for a peer process to start, answer or end
MAX_STEPS = 100000  # bounds every read loop (16 MiB is ~1,100 records)
BLOB_SIZE = 16 * 1024 * 1024
ALPN_OFFER = ["x-interop-unknown", "http/1.1"]  # a server must skip the first and pick http/1.1
HELLO = b"hello from the interop peer\n"


def require_tlslite():
    """tlslite-ng (a pure-Python TLS implementation): skips locally when missing, fails under
    CI=true, like require_program."""
    try:
        import tlslite.api
    except ImportError:
        skip_or_fail("tlslite-ng is not installed")
    return tlslite.api


# ----------------------------------------------------------------------------- the matrix


@dataclasses.dataclass(frozen=True)
class Cell:
    """One feature to check against a peer."""

    name: str
    version: object = None  # None: the best both support (TLS 1.3 everywhere here)
    key: str = "rsa"  # the server certificate's key type
    alpn: bool = False
    sni: bool = False
    mtls: bool = False
    resume: str = None  # "ticket" or "id"
    transfer: bool = False
    close: bool = False
    size: int = BLOB_SIZE  # of the blob a transfer cell moves
    reload: bool = False


CELLS = [
    Cell("TLSv1.2-rsa", TLS12, "rsa"),
    Cell("TLSv1.2-ecdsa", TLS12, "ecdsa"),
    Cell("TLSv1.3-rsa", TLS13, "rsa"),
    Cell("TLSv1.3-ecdsa", TLS13, "ecdsa"),
    Cell("alpn", alpn=True),
    Cell("sni", sni=True),
    Cell("mtls-TLSv1.2", TLS12, mtls=True),
    Cell("mtls-TLSv1.3", TLS13, mtls=True),
    Cell("resume-ticket-TLSv1.2", TLS12, resume="ticket"),
    Cell("resume-ticket-TLSv1.3", TLS13, resume="ticket"),
    Cell("resume-id-TLSv1.2", TLS12, resume="id"),
    Cell("transfer-16MiB", transfer=True),
    Cell("close_notify", close=True),
]
# Only for peers whose record layer is pure Python (tlslite-ng: ~60 s for 16 MiB here)
SMALL_TRANSFER = Cell("transfer-1MiB", transfer=True, size=1024 * 1024)
# Server side only: set_cert() on a context in use (RSA, then ECDSA for the next connection)
RELOAD = Cell("reload-cert", reload=True)
CELL_BY_NAME = {cell.name: cell for cell in CELLS + [SMALL_TRANSFER, RELOAD]}


def matrix(peers, excluded, extra=()):
    """pytest params for every (peer, cell) pair except the explicitly excluded ones, plus
    `extra` (peer, cell) pairs. `excluded` maps (peer, cell name) to the reason; a stale
    exclusion is an error."""
    for key in excluded:
        assert key[0] in peers and key[1] in CELL_BY_NAME, f"unknown exclusion {key}"
    pairs = [(peer, cell) for peer in peers for cell in CELLS
             if (peer, cell.name) not in excluded]
    pairs += list(extra)
    return [pytest.param(peer, cell, id=f"{peer}-{cell.name}") for peer, cell in pairs]


# ----------------------------------------------------------------------------- certificates


class PKI:
    """Every certificate the matrix uses, written once into a session directory.

    Server identities (one CA each) for localhost/127.0.0.1 with RSA-2048 and ECDSA P-256;
    two SNI identities, alpha.test (RSA) and beta.test (ECDSA), from one more CA; a client
    identity from its own CA. ``trust`` is a bundle of every server CA."""

    def __init__(self, directory):
        self.dir = directory
        self.server = {
            "rsa": Identity("rsa", "localhost", "127.0.0.1"),
            "ecdsa": Identity("ecdsa", "localhost", "127.0.0.1"),
        }
        self.alpha = Identity("rsa", "alpha.test")
        self.beta = Identity("ecdsa", "beta.test", ca=self.alpha.ca)
        self.client = Identity("ecdsa", "client.example")
        self.paths = {}
        for name, ident in (("rsa", self.server["rsa"]), ("ecdsa", self.server["ecdsa"]),
                            ("alpha", self.alpha), ("beta", self.beta),
                            ("client", self.client)):
            sub = directory / name
            sub.mkdir()
            paths = ident.write(sub)
            # haproxy wants the chain and the key in one file
            both = sub / "combined.pem"
            both.write_bytes(ident.chain_pem + ident.key_pem)
            paths["combined"] = both
            self.paths[name] = paths
        self.trust_pem = self.server["rsa"].ca_pem + self.server["ecdsa"].ca_pem + self.alpha.ca_pem
        self.trust = directory / "trust.pem"
        self.trust.write_bytes(self.trust_pem)
        self.client_ca = self.paths["client"]["ca"]


# ----------------------------------------------------------------------------- processes


def free_port():
    """A loopback port free right now, for programs that cannot listen on port 0 and say which
    port they got (nginx, haproxy, gnutls-serv). The short race is retried by the callers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, proc=None, timeout=PROCESS_TIMEOUT):
    """Poll until 127.0.0.1:port accepts a TCP connection; fail if the process died first."""
    deadline = time.monotonic() + timeout
    for _ in range(10000):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"peer exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def wait_for_output(path, pattern, proc=None, timeout=PROCESS_TIMEOUT):
    """Poll a log file until `pattern` (bytes regex) appears; return the match."""
    deadline = time.monotonic() + timeout
    for _ in range(100000):
        text = path.read_bytes() if path.exists() else b""
        match = re.search(pattern, text)
        if match:
            return match
        if proc is not None and proc.poll() is not None:
            text = path.read_bytes() if path.exists() else b""
            match = re.search(pattern, text)
            if match:
                return match
            raise AssertionError(f"peer exited with {proc.returncode} before printing "
                                 f"{pattern!r}; output: {text[-2000:]!r}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    raise AssertionError(f"{pattern!r} did not appear in {path} within {timeout} s")


class Process:
    """A peer program with stdout and stderr in files under tmp_path; killed by stop()."""

    def __init__(self, args, tmp_path, name, stdin=subprocess.DEVNULL, cwd=None, env=None):
        self.out = tmp_path / f"{name}.out"
        self.err = tmp_path / f"{name}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen([str(a) for a in args], stdin=stdin, stdout=out,
                                         stderr=err, cwd=cwd or tmp_path, env=env)

    def stop(self):
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=PROCESS_TIMEOUT)

    def output(self):
        return self.out.read_bytes() + b"\n--- stderr ---\n" + self.err.read_bytes()


@contextlib.contextmanager
def running(args, tmp_path, name, **kwargs):
    proc = Process(args, tmp_path, name, **kwargs)
    try:
        yield proc
    finally:
        proc.stop()


def run_client(args, tmp_path, name, stdin_bytes=b"", stdin_path=None, env=None,
               hold_stdin=False):
    """Run a peer client to completion (bounded); return (returncode, stdout, stderr).

    stdin is `stdin_bytes` or the file `stdin_path`. With `hold_stdin`, it is fed through a
    pipe (from a thread) that stays open until the client exits: for clients that would
    otherwise end the connection themselves at the end of their input."""
    if hold_stdin:
        proc = Process(args, tmp_path, name, stdin=subprocess.PIPE, env=env)

        def feed():
            try:
                with open(stdin_path, "rb") as src:
                    for _ in range(100000):
                        chunk = src.read(1 << 20)
                        if not chunk:
                            break
                        proc.proc.stdin.write(chunk)
                proc.proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the client ended (or was killed) first

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            proc.proc.wait(timeout=PROCESS_TIMEOUT)
        finally:
            proc.stop()  # closes stdin too
            feeder.join(PROCESS_TIMEOUT)
        return proc.proc.returncode, proc.out.read_bytes(), proc.err.read_bytes()
    stdin = subprocess.PIPE if stdin_path is None else open(stdin_path, "rb")
    try:
        proc = Process(args, tmp_path, name, stdin=stdin, env=env)
    finally:
        if stdin_path is not None:
            stdin.close()  # the child has its own copy
    try:
        if stdin_path is None:
            try:
                proc.proc.stdin.write(stdin_bytes)
            except BrokenPipeError:
                pass
            finally:
                try:
                    proc.proc.stdin.close()
                except BrokenPipeError:
                    pass
        proc.proc.wait(timeout=PROCESS_TIMEOUT)
    finally:
        proc.stop()
    return proc.proc.returncode, proc.out.read_bytes(), proc.err.read_bytes()


# ----------------------------------------------------------------------------- fasttls client


@dataclasses.dataclass
class Fetched:
    """What a fasttls client got from one HTTP exchange."""

    head: bytes
    body: bytes
    version: str
    alpn: object
    reused: bool
    peer_der: bytes
    session: object
    clean_close: bool  # the peer ended with close_notify


def client_context(pki, cell, alpn=None, client_cert=True):
    ctx = fasttls.newctx(cadata=pki.trust_pem)
    if cell.version is not None:
        ctx.minimum_version = ctx.maximum_version = cell.version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cell.mtls and client_cert:
        ctx.set_cert(pki.client.chain_pem, pki.client.key_pem)
    return ctx


@contextlib.contextmanager
def tls_connection(port, ctx, hostname, session=None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
    try:
        tls = fasttls.newtls("client", ctx, hostname, session=session)
        fasttls.init_requestfunc(sock, tls)()
        yield sock, tls
    finally:
        sock.close()


def parse_http(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no HTTP response head in {data[:300]!r}"
    assert re.match(rb"HTTP/1\.[01] 200", head), f"unexpected response: {head[:300]!r}"
    return head, body


def fetch(port, ctx, hostname, path="/hello.txt", session=None, host_header=None):
    """GET `path` with Connection: close, read everything until the peer's close_notify."""
    with tls_connection(port, ctx, hostname, session) as (sock, tls):
        request = (f"GET {path} HTTP/1.1\r\nHost: {host_header or hostname}\r\n"
                   f"Connection: close\r\n\r\n").encode()
        fasttls.writefunc(sock, tls)(request)
        data = fasttls.readallfunc(sock, tls)()  # SSLEOFError if the peer skips close_notify
        head, body = parse_http(data)
        result = Fetched(head, body, tls.version(), tls.selected_alpn_protocol(),
                         tls.session_reused(), tls.getpeercert(binary_form=True), tls.session,
                         tls.eof)
        fasttls.closefunc(tls)()
    return result


# ----------------------------------------------------------------------------- fasttls server


def server_context(pki, cell, tickets=True):
    """The fasttls server context for a cell: its certificate, version, ALPN, client
    verification and, for `sni`, a callback choosing alpha.test's or beta.test's context."""
    ident = pki.server[cell.key]
    options = {}
    if cell.version is not None:
        options = {"minimum_version": cell.version, "maximum_version": cell.version}
    ctx = fasttls.newctx(**options)
    ctx.set_cert(ident.chain_pem, ident.key_pem)
    if cell.alpn:
        ctx.set_alpn_protocols(["http/1.1"])
    if cell.mtls:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=pki.client.ca_pem)
    if cell.sni:
        by_name = {}
        for name, other in (("alpha.test", pki.alpha), ("beta.test", pki.beta)):
            sub = fasttls.newctx(**options)
            sub.set_cert(other.chain_pem, other.key_pem)
            by_name[name] = sub

        def choose(tls, server_name):
            return by_name.get(server_name)

        ctx.sni_callback = choose
    return ctx


class FasttlsServer:
    """A fasttls HTTP/1.1 server on 127.0.0.1:0 in a thread, for `count` connections.

    For each request it reads the head and a Content-Length body, and answers a JSON document
    with what it saw (version, ALPN, resumption, client certificate, sha256 of the body), with
    Connection: close and no Content-Length, so the peer reads until the end and a clean end is
    fasttls's close_notify (a TCP FIN alone is a truncation). Then it waits (bounded) for the
    peer's close_notify and records how the peer ended: "close_notify", "eof" (a TCP FIN
    without it) or an error. SNI names the callback saw are in `sni_seen`. With `download`, a
    POST is answered with that file's bytes too, after HELLO (fasttls writing a large body)."""

    def __init__(self, ctx, count=1, download=None):
        self.ctx = ctx
        self.count = count
        self.download = download  # a file sent after HELLO in answer to a POST (transfer cells)
        self.records = []
        self.errors = []
        self.sni_seen = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(PROCESS_TIMEOUT)
        self.port = self.listener.getsockname()[1]
        callback = ctx.sni_callback
        if callback is not None:
            def recording(tls, name):
                self.sni_seen.append(name)
                return callback(tls, name)

            ctx.sni_callback = recording
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.listener.close()
        self.thread.join(PROCESS_TIMEOUT)
        assert not self.thread.is_alive(), "fasttls server thread did not end"

    def _serve(self):
        for _ in range(self.count):
            try:
                conn, _ = self.listener.accept()
            except OSError as exc:  # closed by __exit__ or timed out
                self.errors.append(exc)
                return
            with conn:
                conn.settimeout(SOCKET_TIMEOUT)
                try:
                    self.records.append(self._one(conn))
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    self.errors.append(exc)

    def _one(self, conn):
        tls = fasttls.newtls("server", self.ctx)
        record = {}
        fasttls.init_responsefunc(conn, tls)()
        read = fasttls.readfunc(conn, tls)
        head = bytearray()
        for _ in range(MAX_STEPS):
            if b"\r\n\r\n" in head:
                break
            chunk = read()
            if not chunk:
                if not head:  # e.g. gnutls-cli --resume's first connection: no request
                    return {"request": None, "version": tls.version(),
                            "reused": tls.session_reused(), "peer_close": "close_notify"}
                raise AssertionError(f"peer closed before a full request: {bytes(head)!r}")
            head += chunk
        head, _, rest = bytes(head).partition(b"\r\n\r\n")
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        digest = hashlib.sha256(rest[:length])
        remaining = length - len(rest[:length])
        for _ in range(MAX_STEPS):
            if remaining <= 0:
                break
            chunk = read()
            if not chunk:
                raise AssertionError(f"peer closed with {remaining} body bytes missing")
            digest.update(chunk[:remaining])
            remaining -= len(chunk)
        peer = tls.getpeercert()
        names = [value for kind, value in (peer or {}).get("subjectAltName", ())]
        record.update(
            request=head.split(b"\r\n", 1)[0].decode("latin-1"),
            version=tls.version(), alpn=tls.selected_alpn_protocol(),
            reused=tls.session_reused(), client_names=names,
            body_length=length, sha256=digest.hexdigest(),
        )
        body = json.dumps(record).encode() + b"\n" + HELLO
        write = fasttls.writefunc(conn, tls)
        write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + body)
        if self.download is not None and head.startswith(b"POST "):
            with open(self.download, "rb") as blob:
                for _ in range(MAX_STEPS):
                    chunk = blob.read(1 << 20)
                    if not chunk:
                        break
                    write(chunk)
        conn.sendall(tls.close())
        # the peer's answer to our close_notify: its own (clean) or a bare TCP FIN
        try:
            leftover = fasttls.readallfunc(conn, tls)()
            record["peer_close"] = "close_notify"
            record["leftover"] = len(leftover)
        except fasttls.SSLEOFError:
            record["peer_close"] = "eof"
        except (OSError, ssl.SSLError) as exc:
            record["peer_close"] = f"error: {exc!r}"
        return record

    def result(self, expected=None):
        """The records, after checking that every connection was served without error."""
        assert not self.errors, f"fasttls server failed: {self.errors!r}"
        if expected is not None:
            assert len(self.records) == expected, self.records
        return self.records


def find_json(output):
    """The server's JSON record inside a peer client's output."""
    match = re.search(rb'\{"request".*?\}', output)
    assert match, f"no JSON record from the fasttls server in {output[-3000:]!r}"
    return json.loads(match.group(0))
