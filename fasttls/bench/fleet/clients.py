"""Returning clients of a fleet, and the tally of what their connections did.

A client keeps the session of its last connection and offers it on the next, as a browser
does; it is "returning" from its second connection on. Each connection's reply names the server
that took it (haproxy chose), the TLS version, whether the server resumed, and the server's
reload generation, which the sharing mode's model turns into "should this have resumed?". So a
run counts, not times, what matters: resumed returning connections, those that could not resume
because their ticket's key was rotated out, and any other miss (which should be none)."""
import queue
import random
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from fasttls.bench.fleet.sharing import ClientState, Sharing

__all__ = ["ReturningClient", "Tally", "Visit", "read_until_closed", "run_round",
           "stdlib_client_context"]

REQUEST_TIMEOUT = 10.0
MAX_READS = 1000
REPLY = re.compile(rb"(\S+) (TLSv1\.[23]) reused=([01]) gen=(\d+)\n")


def stdlib_client_context(ca_pem: bytes, version: Optional[str] = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    if version:
        v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
        ctx.minimum_version = ctx.maximum_version = v
    return ctx


@dataclass
class Visit:
    client: int
    server: str
    version: str
    resumed: bool            # as the client saw it (and the server agreed)
    expected: bool           # the sharing mode's model
    returning: bool
    cross_server: bool       # resumed a ticket another server issued
    cipher: Optional[tuple] = None


class ReturningClient:
    """One client that comes back: its session, and the model's view of its ticket."""

    def __init__(self, index: int, ctx: Any, hostname: str = "localhost",
                 library: str = "stdlib") -> None:
        self.index = index
        self.ctx = ctx
        self.hostname = hostname
        self.library = library
        self.session: Any = None
        self.state = ClientState()
        self.ticket_server: Optional[str] = None  # who issued the ticket it holds
        self.visits = 0

    def _exchange(self, address) -> "tuple[bytes, bool, Any, Optional[tuple]]":
        """(reply, resumed, new session, cipher) over one connection."""
        with socket.create_connection(address, timeout=REQUEST_TIMEOUT) as raw:
            # Without it, the request written right after a TLS 1.2 abbreviated handshake
            # (whose last flight is the client's) waits for the server's delayed ACK: 40 ms.
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.library == "fasttls":
                import fasttls

                tls = fasttls.newtls("client", self.ctx, self.hostname, session=self.session)
                fasttls.init_requestfunc(raw, tls)(None)
                fasttls.writefunc(raw, tls)(b"GET\n")
                read = fasttls.readfunc(raw, tls)
                data = read_until_closed(lambda: read(None))
                return data, tls.session_reused(), tls.session, tls.cipher()
            with self.ctx.wrap_socket(raw, server_hostname=self.hostname,
                                      session=self.session) as sock:
                sock.sendall(b"GET\n")
                data = read_until_closed(lambda: sock.recv(4096))
                # Read after the reply: a TLS 1.3 ticket comes after the handshake, before it.
                return data, sock.session_reused, sock.session, sock.cipher()

    def visit(self, address, sharing: Sharing) -> Visit:
        data, resumed, session, cipher = self._exchange(address)
        match = REPLY.fullmatch(data)
        if not match:
            raise AssertionError(f"client {self.index}: unexpected reply {data!r}")
        server, version = match.group(1).decode(), match.group(2).decode()
        server_resumed, generation = match.group(3) == b"1", int(match.group(4))
        if server_resumed != resumed:
            raise AssertionError(f"client {self.index}: the client says resumed={resumed}, "
                                 f"server {server} says {server_resumed}")
        returning = self.visits > 0
        expected = sharing.expect(self.state, server, generation, version)
        cross = resumed and self.ticket_server not in (None, server)
        # The ticket held from now on: a new one from this server, unless it kept the old one
        # (a TLS 1.2 resumption under the current key sends none).
        if session is not None and (self.session is None or session.id != self.session.id):
            self.ticket_server = server
        self.session = session
        self.visits += 1
        return Visit(self.index, server, version, resumed, expected, returning, cross, cipher)


def read_until_closed(read: Callable[[], bytes]) -> bytes:
    """Everything `read()` returns until it returns b"" (the peer's close_notify or EOF), at
    most MAX_READS reads: a peer that keeps sending fails the visit rather than hanging it."""
    data = b""
    for _ in range(MAX_READS):
        chunk = read()
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server kept sending")


@dataclass
class Tally:
    """Counts over many visits."""

    connections: int = 0
    returning: int = 0
    resumed: int = 0              # returning connections that resumed
    # Returning, not resumed, and the model says it could not: in mode "tickets" its ticket
    # was under a rotated-out key; in mode "none" it reached another server than its ticket's.
    expected_misses: int = 0
    unexpected: int = 0           # the model and the connection disagree (should be 0)
    cross_server: int = 0         # resumed on another server than the ticket's issuer
    by_server: Dict[str, int] = field(default_factory=dict)
    versions: Dict[str, int] = field(default_factory=dict)
    mismatches: List[Visit] = field(default_factory=list)

    def add(self, visit: Visit) -> None:
        self.connections += 1
        self.by_server[visit.server] = self.by_server.get(visit.server, 0) + 1
        self.versions[visit.version] = self.versions.get(visit.version, 0) + 1
        if visit.resumed != visit.expected and visit.returning:
            self.unexpected += 1
            self.mismatches.append(visit)
        if not visit.returning:
            return
        self.returning += 1
        self.resumed += visit.resumed
        self.cross_server += visit.cross_server
        if not visit.resumed and not visit.expected:
            self.expected_misses += 1

    def merge(self, other: "Tally") -> "Tally":
        for visit_field in ("connections", "returning", "resumed", "expected_misses",
                            "unexpected", "cross_server"):
            setattr(self, visit_field, getattr(self, visit_field) + getattr(other, visit_field))
        for name, n in other.by_server.items():
            self.by_server[name] = self.by_server.get(name, 0) + n
        for name, n in other.versions.items():
            self.versions[name] = self.versions.get(name, 0) + n
        self.mismatches += other.mismatches
        return self

    @property
    def resumption_rate(self) -> float:
        return self.resumed / self.returning if self.returning else 0.0

    def summary(self) -> str:
        return (f"{self.connections} connections, {self.returning} returning, "
                f"{self.resumed} resumed ({self.resumption_rate:.1%}), "
                f"{self.expected_misses} expected misses (rotated-out key, or no sharing), "
                f"{self.unexpected} other misses, {self.cross_server} resumed on another "
                f"server; by server {dict(sorted(self.by_server.items()))}")


def run_round(clients: List[ReturningClient], address, sharing: Sharing, threads: int = 1,
              on_visit: Optional[Callable[[Visit], None]] = None, shuffle: bool = True) -> Tally:
    """Every client connects once, `threads` at a time, in a random order (in a fixed order,
    round robin over a number of servers that divides the number of clients would send each
    client to the same server every time). The first failure is raised after the round (no
    thread is left running)."""
    order = list(clients)
    if shuffle:
        random.shuffle(order)
    work: "queue.Queue[ReturningClient]" = queue.Queue()
    for client in order:
        work.put(client)
    tally = Tally()
    lock = threading.Lock()
    errors: List[BaseException] = []

    def worker() -> None:
        while not errors:
            try:
                client = work.get_nowait()
            except queue.Empty:
                return
            try:
                visit = client.visit(address, sharing)
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
                return
            with lock:
                tally.add(visit)
            if on_visit is not None:
                on_visit(visit)

    if threads <= 1:
        worker()
    else:
        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(REQUEST_TIMEOUT * (len(clients) + 1))
        if any(t.is_alive() for t in pool):
            raise AssertionError("a fleet client thread did not finish")
    if errors:
        raise errors[0]
    return tally
