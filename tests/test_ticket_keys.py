"""Shared, rotating session-ticket keys (issue 9 section 2): servers given the same keys resume
each other's clients; a ticket under a previous key resumes and is renewed under the current
one; a ticket under a key no longer listed means a full handshake, never an error; TLS 1.3
clients get a new ticket on every resumption.

Servers are fasttls contexts behind the socket helpers, each in a thread on 127.0.0.1:0 (or a
process, for the two-process case); clients are the stdlib `ssl`, fasttls and `openssl
s_client -sess_out/-sess_in`. Each server answers a connection's one request line with whether
its handshake resumed, so both ends' view is checked. Every socket has a timeout, every loop a
count limit, every thread and process is stopped in teardown."""
import contextlib
import os
import re
import socket
import ssl
import subprocess
import threading

import pytest

import fasttls
from fasttls.bench.fleet.clients import read_until_closed
from support.accept import accept_until, local_listener
from support.pairs import TLS12, TLS13, VERSIONS, VERSION_NAME
from support.requires import require_program

SOCKET_TIMEOUT = 10.0
PROCESS_TIMEOUT = 30.0
MAX_READS = 1000


def new_key(size=80):
    return os.urandom(size)


def server_context(identity, keys=None, version=None):
    ctx = fasttls.newctx()
    ctx.set_cert(identity.chain_pem, identity.key_pem)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    if keys is not None:
        ctx.set_session_ticket_keys(keys)
    return ctx


class TicketServer:
    """A fasttls server in a thread on 127.0.0.1:0: per connection, one handshake, one request
    line read, one reply ("reused=0|1 TLSv1.x") and close_notify. Failures are kept and
    re-raised by stop()."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.listener = local_listener()
        self.port = self.listener.getsockname()[1]
        self.errors = []
        self.reused = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        accept_until(self.listener, self._stop, self._handle)

    def _handle(self, sock):
        with sock:
            sock.settimeout(SOCKET_TIMEOUT)
            try:
                self._one(sock)
            except Exception as exc:  # kept for stop(); the client sees the failure too
                self.errors.append(exc)

    def _one(self, sock):
        tls = fasttls.newtls("server", self.ctx)
        fasttls.init_responsefunc(sock, tls)()
        read = fasttls.readfunc(sock, tls)
        request = b""
        for _ in range(MAX_READS):
            if b"\n" in request:
                break
            chunk = read()
            if not chunk:
                break
            request += chunk
        self.reused.append(tls.session_reused())
        reply = f"reused={int(tls.session_reused())} {tls.version()}\n".encode()
        fasttls.writefunc(sock, tls)(reply)
        fasttls.closefunc(tls)()

    def stop(self):
        self._stop.set()
        self._thread.join(SOCKET_TIMEOUT)
        self.listener.close()
        assert not self._thread.is_alive(), "the server thread did not stop"
        if self.errors:
            raise self.errors[0]


@contextlib.contextmanager
def serving(*contexts):
    servers = []
    try:
        for ctx in contexts:
            servers.append(TicketServer(ctx))
        yield servers
    finally:
        for server in servers:
            server.stop()


def parse_reply(data):
    match = re.fullmatch(rb"reused=([01]) (TLSv1\.[23])\n", data)
    assert match, f"unexpected reply {data!r}"
    return match.group(1) == b"1", match.group(2).decode()


class StdlibClient:
    """A stdlib client that keeps the last session it was given, as a returning browser does."""

    def __init__(self, identity, version=None):
        self.ctx = ssl.create_default_context(cadata=identity.ca_pem.decode())
        if version is not None:
            self.ctx.minimum_version = self.ctx.maximum_version = version
        self.session = None

    def visit(self, port):
        """(resumed as the client saw it, as the server saw it, version)."""
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as raw:
            with self.ctx.wrap_socket(raw, server_hostname="localhost",
                                      session=self.session) as sock:
                sock.sendall(b"GET\n")
                data = read_until_closed(lambda: sock.recv(4096))
                # After the reply: a TLS 1.3 ticket arrives after the handshake, before it.
                self.session = sock.session
                server_reused, version = parse_reply(data)
                return sock.session_reused, server_reused, version


class FasttlsClient:
    """The same with a fasttls client (sessions belong to their context, so one context)."""

    def __init__(self, identity, version=None):
        self.ctx = fasttls.newctx(cadata=identity.ca_pem)
        if version is not None:
            self.ctx.minimum_version = self.ctx.maximum_version = version
        self.session = None

    def visit(self, port):
        with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:
            tls = fasttls.newtls("client", self.ctx, "localhost", session=self.session)
            fasttls.init_requestfunc(sock, tls)()
            fasttls.writefunc(sock, tls)(b"GET\n")
            data = read_until_closed(fasttls.readfunc(sock, tls))
            self.session = tls.session
            server_reused, version = parse_reply(data)
            return tls.session_reused(), server_reused, version


CLIENTS = [pytest.param(StdlibClient, id="stdlib"), pytest.param(FasttlsClient, id="fasttls")]


def visit(client, server):
    """One connection; both ends must agree on whether it resumed. Returns that."""
    client_reused, server_reused, version = client.visit(server.port)
    assert client_reused == server_reused
    return client_reused, version


# ----------------------------------------------------------------------------- sharing


@pytest.mark.parametrize("client_class", CLIENTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_contexts_sharing_keys_resume_each_others_tickets(rsa_identity, version, client_class):
    keys = [new_key()]
    a = server_context(rsa_identity, keys)
    b = server_context(rsa_identity, keys)
    client = client_class(rsa_identity, version)
    with serving(a, b) as (server_a, server_b):
        assert visit(client, server_a) == (False, VERSION_NAME[version])
        assert visit(client, server_b) == (True, VERSION_NAME[version])
        assert visit(client, server_a) == (True, VERSION_NAME[version])
    assert a.session_ticket_stats()["issued"] >= 1
    assert b.session_ticket_stats()["current"] == 1
    assert a.session_ticket_stats()["current"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_without_shared_keys_another_context_cannot_resume(rsa_identity, version):
    """The control: each context's own random key, so the other one makes a full handshake
    (what the shared keys change)."""
    client = StdlibClient(rsa_identity, version)
    with serving(server_context(rsa_identity), server_context(rsa_identity)) as (a, b):
        assert visit(client, a)[0] is False
        assert visit(client, b)[0] is False
        assert visit(client, b)[0] is True  # its own ticket, from the connection before


def test_the_drop_in_context_shares_keys_with_a_native_one(rsa_identity, tmp_path):
    key_file = tmp_path / "ticket.key"
    key_file.write_bytes(new_key())
    native = server_context(rsa_identity)
    native.load_session_ticket_keys(key_file)
    paths = rsa_identity.write(tmp_path)
    dropin = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    dropin.load_cert_chain(paths["cert"], paths["key"])
    dropin.load_session_ticket_keys([key_file])
    client = StdlibClient(rsa_identity)
    with contextlib.ExitStack() as stack:
        plain = socket.create_server(("127.0.0.1", 0))
        stack.enter_context(plain)
        served = []

        def serve_dropin():
            sock, _ = plain.accept()
            with dropin.wrap_socket(sock, server_side=True) as tls_sock:
                tls_sock.settimeout(SOCKET_TIMEOUT)
                tls_sock.recv(100)
                served.append(tls_sock.session_reused)
                tls_sock.sendall(f"reused={int(tls_sock.session_reused)} "
                                 f"{tls_sock.version()}\n".encode())
                tls_sock.unwrap()

        plain.settimeout(SOCKET_TIMEOUT)
        with serving(native) as (server,):
            assert visit(client, server)[0] is False
            thread = threading.Thread(target=serve_dropin, daemon=True)
            thread.start()
            client_reused, server_reused, _ = client.visit(plain.getsockname()[1])
            thread.join(SOCKET_TIMEOUT)
            assert not thread.is_alive()
    assert client_reused and server_reused and served == [True]
    assert dropin.session_ticket_stats()["current"] == 1


# ----------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("client_class", CLIENTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_previous_key_resumes_and_is_renewed_under_the_current_one(rsa_identity, version,
                                                                   client_class):
    old, new = new_key(), new_key()
    before = server_context(rsa_identity, [old])
    rotated = server_context(rsa_identity, [new, old])
    only_new = server_context(rsa_identity, [new])
    client = client_class(rsa_identity, version)
    with serving(before, rotated, only_new) as (s_before, s_rotated, s_new):
        assert visit(client, s_before)[0] is False
        first = client.session.id
        assert visit(client, s_rotated)[0] is True
        assert client.session.id != first  # a new ticket came
        # Only a ticket under the new key resumes here: the renewal was under it.
        assert visit(client, s_new)[0] is True
    stats = rotated.session_ticket_stats()
    assert stats["previous"] == 1 and stats["issued"] >= 1 and stats["unknown"] == 0
    assert only_new.session_ticket_stats()["current"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_rotated_out_key_means_a_full_handshake_and_a_new_ticket(rsa_identity, version):
    client = StdlibClient(rsa_identity, version)
    old_only = server_context(rsa_identity, [new_key()])
    new_only = server_context(rsa_identity, [new_key()])
    with serving(old_only, new_only) as (s_old, s_new):
        assert visit(client, s_old)[0] is False
        assert visit(client, s_new)[0] is False  # no error: just no resumption
        assert visit(client, s_new)[0] is True   # the ticket of that full handshake
    assert new_only.session_ticket_stats()["unknown"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_rotation_on_a_running_context(rsa_identity, version, tmp_path):
    """load_session_ticket_keys again after rewriting the files: no restart, no new context."""
    current, previous = tmp_path / "current.key", tmp_path / "previous.key"
    k1, k2, k3 = new_key(), new_key(), new_key()
    current.write_bytes(k1)
    ctx = server_context(rsa_identity, version=version)
    ctx.load_session_ticket_keys([current])
    client = StdlibClient(rsa_identity, version)
    with serving(ctx) as (server,):
        assert visit(client, server)[0] is False
        assert visit(client, server)[0] is True
        # Rotate: k2 current, k1 previous. The ticket under k1 resumes (renewed under k2).
        current.write_bytes(k2)
        previous.write_bytes(k1)
        ctx.load_session_ticket_keys([current, previous])
        assert ctx.session_ticket_stats()["keys"] == 2
        assert visit(client, server)[0] is True
        # Rotate again, dropping k1: the client's ticket is under k2 now, so it resumes.
        current.write_bytes(k3)
        previous.write_bytes(k2)
        ctx.load_session_ticket_keys([current, previous])
        assert visit(client, server)[0] is True
        # Drop every key the client's ticket could be under: a full handshake, no error.
        ctx.set_session_ticket_keys([new_key()])
        assert visit(client, server)[0] is False
        assert visit(client, server)[0] is True
    stats = ctx.session_ticket_stats()
    assert stats["previous"] == 2 and stats["unknown"] == 1


@pytest.mark.parametrize("client_class", CLIENTS)
def test_tls13_clients_get_a_new_ticket_on_every_resumption(rsa_identity, client_class):
    """OpenSSL 3.0 sends a NewSessionTicket after a resumed TLS 1.3 handshake only when the
    ticket callback asks for renewal; the engine always does under TLS 1.3, with the current
    key too. Each generation resumes with the ticket of the one before, and gets another."""
    ctx = server_context(rsa_identity, [new_key()], TLS13)
    client = client_class(rsa_identity, TLS13)
    seen = []
    with serving(ctx) as (server,):
        assert visit(client, server)[0] is False
        seen.append(client.session.id)
        for _ in range(6):
            assert visit(client, server)[0] is True
            seen.append(client.session.id)
    assert len(set(seen)) == len(seen), "a resumption brought no new ticket"
    stats = ctx.session_ticket_stats()
    assert stats["current"] == 6 and stats["previous"] == 0
    # num_tickets (2) after the full handshake, then one per resumption.
    assert stats["issued"] == ctx.num_tickets + 6


def test_tls12_resumption_under_the_current_key_keeps_the_ticket(rsa_identity):
    """TLS 1.2 tickets can be used again, so the current key's are not renewed (as nginx)."""
    ctx = server_context(rsa_identity, [new_key()], TLS12)
    client = StdlibClient(rsa_identity, TLS12)
    with serving(ctx) as (server,):
        assert visit(client, server)[0] is False
        for _ in range(3):
            assert visit(client, server)[0] is True
    assert ctx.session_ticket_stats() == {"keys": 1, "issued": 1, "current": 3,
                                          "previous": 0, "unknown": 0}


@pytest.mark.parametrize("version", VERSIONS)
def test_48_byte_keys_and_mixed_lengths(rsa_identity, version):
    short, long = new_key(48), new_key(80)
    client = StdlibClient(rsa_identity, version)
    first = server_context(rsa_identity, [short])
    second = server_context(rsa_identity, [long, short])
    with serving(first, second) as (s1, s2):
        assert visit(client, s1)[0] is False
        assert visit(client, s1)[0] is True
        assert visit(client, s2)[0] is True
    assert second.session_ticket_stats()["previous"] == 1


def test_removing_the_keys_goes_back_to_a_key_of_this_context(rsa_identity):
    key = [new_key()]
    a, b = server_context(rsa_identity, key), server_context(rsa_identity, key)
    client = StdlibClient(rsa_identity)
    with serving(a, b) as (server_a, server_b):
        assert visit(client, server_a)[0] is False
        b.set_session_ticket_keys([])
        assert b.session_ticket_stats()["keys"] == 0
        assert visit(client, server_b)[0] is False


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("size", [0, 16, 47, 49, 79, 81, 96])
def test_wrong_length_is_refused_and_the_keys_in_use_stay(rsa_identity, size):
    ctx = server_context(rsa_identity, [new_key()])
    with pytest.raises(ValueError, match=rf"session ticket key 1 is {size} bytes.*80 bytes"):
        ctx.set_session_ticket_keys([new_key(), os.urandom(size)])
    assert ctx.session_ticket_stats()["keys"] == 1


def test_not_a_list_of_keys():
    ctx = fasttls.Context()
    with pytest.raises(TypeError, match="list of keys"):
        ctx.set_session_ticket_keys(new_key())
    with pytest.raises(TypeError, match="session ticket key 0 is a str"):
        ctx.set_session_ticket_keys(["x" * 80])


def test_key_files_that_cannot_be_used(tmp_path):
    ctx = fasttls.Context()
    good = tmp_path / "good.key"
    good.write_bytes(new_key())
    short = tmp_path / "short.key"
    short.write_bytes(new_key()[:79])
    long = tmp_path / "long.key"
    long.write_bytes(new_key() + b"\n" * 20)
    with pytest.raises(FileNotFoundError, match="missing.key"):
        ctx.load_session_ticket_keys([good, tmp_path / "missing.key"])
    with pytest.raises(ValueError, match=r"short\.key' is 79 bytes"):
        ctx.load_session_ticket_keys([good, short])
    with pytest.raises(ValueError, match=r"long\.key' is 100 bytes"):
        ctx.load_session_ticket_keys(str(long))
    with pytest.raises(IsADirectoryError):
        ctx.load_session_ticket_keys(tmp_path)
    with pytest.raises(ValueError, match="no session ticket key file"):
        ctx.load_session_ticket_keys([])
    assert ctx.session_ticket_stats()["keys"] == 0
    ctx.load_session_ticket_keys(os.fsencode(good))
    assert ctx.session_ticket_stats()["keys"] == 1


def test_the_drop_in_context_reports_the_same_errors():
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ValueError, match="is 10 bytes"):
        ctx.set_session_ticket_keys([b"0123456789"])


# ----------------------------------------------------------------------------- openssl s_client


def s_client(openssl, tmp_path, port, version, *session_args):
    """`openssl s_client` for one request; returns its output (it exits at close_notify)."""
    flag = {TLS12: "-tls1_2", TLS13: "-tls1_3"}[version]
    done = subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         flag, "-ign_eof", *session_args],
        input=b"GET\n", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=PROCESS_TIMEOUT, cwd=tmp_path)
    return done.stdout.decode("latin-1")


def ticket_of(openssl, session_file):
    """The ticket bytes of a session that s_client saved (from `openssl sess_id -text`)."""
    text = subprocess.run([openssl, "sess_id", "-in", str(session_file), "-noout", "-text"],
                          stdout=subprocess.PIPE, check=True, timeout=PROCESS_TIMEOUT).stdout
    dump = text.decode().split("TLS session ticket:", 1)[1]
    ticket = bytearray()
    for line in dump.splitlines()[1:]:
        match = re.match(r"\s*[0-9a-f]{4} - ((?:[0-9a-f]{2}[ -]{1,2})+)", line)
        if not match:
            break
        ticket += bytes.fromhex(match.group(1).replace("-", " "))
    assert ticket, f"no ticket in the session: {text!r}"
    return bytes(ticket)


@pytest.mark.parametrize("version", VERSIONS)
def test_openssl_s_client_resumes_across_contexts(rsa_identity, version, tmp_path):
    openssl = require_program("openssl")
    keys = [new_key()]
    session = tmp_path / "session.pem"
    with serving(server_context(rsa_identity, keys), server_context(rsa_identity, keys)) as (
            a, b):
        first = s_client(openssl, tmp_path, a.port, version, "-sess_out", str(session))
        assert "reused=0" in first and re.search(r"^New, ", first, re.M), first
        second = s_client(openssl, tmp_path, b.port, version, "-sess_in", str(session))
        assert "reused=1" in second and re.search(r"^Reused, ", second, re.M), second
        assert a.reused == [False] and b.reused == [True]


@pytest.mark.parametrize("size", [80, 48])
def test_tickets_follow_nginx_key_layout(rsa_identity, tmp_path, size):
    """Decrypt a ticket s_client received, outside fasttls, with the key split the way nginx
    reads its key files: name | HMAC-SHA256 secret (32) | AES-256 key (32) for 80 bytes, name |
    AES-128 key (16) | HMAC secret (16) for 48. The ticket is OpenSSL's RFC 5077 layout: key name,
    IV, AES-CBC ciphertext of the session, HMAC-SHA256 of all that."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    openssl = require_program("openssl")
    key = new_key(size)
    name, hmac_key, aes_key = (key[:16], key[16:48], key[48:]) if size == 80 else (
        key[:16], key[32:48], key[16:32])
    session = tmp_path / "session.pem"
    with serving(server_context(rsa_identity, [key], TLS12)) as (server,):
        s_client(openssl, tmp_path, server.port, TLS12, "-sess_out", str(session))
    ticket = ticket_of(openssl, session)
    assert ticket[:16] == name
    mac = hmac.new(hmac_key, ticket[:-32], hashlib.sha256).digest()
    assert hmac.compare_digest(mac, ticket[-32:])
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(ticket[16:32])).decryptor()
    padded = decryptor.update(ticket[32:-32]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    plain = unpadder.update(padded) + unpadder.finalize()
    assert plain[0] == 0x30  # a DER SEQUENCE: OpenSSL's encoded SSL_SESSION


# ----------------------------------------------------------------------------- processes


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_two_server_processes_sharing_a_key_file(rsa_identity, tmp_path, version):
    """Two fasttls server processes (the fleet's server, fasttls.aio), each loading the same
    nginx-format key file: a ticket of one resumes on the other, both ways."""
    from fasttls.bench.fleet import Fleet, ReturningClient, stdlib_client_context

    paths = rsa_identity.write(tmp_path)
    with Fleet("tickets", str(tmp_path), str(paths["cert"]), str(paths["key"]), servers=2,
               version=version, haproxy=None, ca_pem=rsa_identity.ca_pem) as fleet:
        first, second = (("127.0.0.1", port) for port in fleet.ports())
        client = ReturningClient(0, stdlib_client_context(rsa_identity.ca_pem, version))
        visits = [client.visit(address, fleet.sharing) for address in (first, second, first)]
        stats = fleet.stats()
    assert [(v.server, v.resumed) for v in visits] == [("s0", False), ("s1", True),
                                                      ("s0", True)]
    assert all(v.version == f"TLSv{version}" for v in visits)
    assert stats["s1"]["tickets"]["current"] == 1 and stats["s0"]["tickets"]["current"] == 1


# ----------------------------------------------------------------------------- threads


def test_keys_replaced_while_handshakes_run_in_other_threads(rsa_identity):
    """One thread rotates the keys as fast as it can (each new key current, the one before
    kept as previous) while others resume handshakes in memory: every handshake completes,
    none fails, and the tickets keep resuming (each client's ticket is at most one rotation
    old, or, when two rotations passed since, falls back to a full handshake)."""
    from support.pump import pump

    ctx = server_context(rsa_identity, [new_key()])
    client_ctx = fasttls.newctx(cadata=rsa_identity.ca_pem)
    stop = threading.Event()
    errors, counts = [], {"resumed": 0, "full": 0, "rotations": 0}
    lock = threading.Lock()

    def rotate():
        previous = new_key()
        for _ in range(100000):
            if stop.is_set():
                return
            current = new_key()
            ctx.set_session_ticket_keys([current, previous])
            previous = current
            counts["rotations"] += 1

    def handshakes():
        session = None
        try:
            for _ in range(150):
                client = fasttls.newtls("client", client_ctx, "localhost", session=session)
                server = fasttls.newtls("server", ctx)
                pump(client, server)
                client.read(server.write(b"x"))  # TLS 1.3 tickets reach the client here
                with lock:
                    counts["resumed" if client.session_reused() else "full"] += 1
                session = client.session
        except Exception as exc:
            errors.append(exc)

    rotator = threading.Thread(target=rotate, daemon=True)
    workers = [threading.Thread(target=handshakes, daemon=True) for _ in range(3)]
    rotator.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    stop.set()
    rotator.join(30)
    assert not rotator.is_alive() and not any(w.is_alive() for w in workers)
    assert not errors, errors[0]
    assert counts["resumed"] + counts["full"] == 450
    assert counts["rotations"] > 10 and counts["resumed"] > 0, counts


@pytest.mark.parametrize("version", VERSIONS)
def test_after_an_sni_switch_the_first_contexts_keys_apply(rsa_identity, version):
    """OpenSSL encrypts and decrypts tickets with the callback of the context a connection was
    made from (its session context), even after sni_callback switched it to another: so do
    the keys (as nginx's)."""
    from support.pump import pump

    shared = [new_key()]
    front = server_context(rsa_identity, shared, version)
    switched_to = server_context(rsa_identity, [new_key()], version)
    front.sni_callback = lambda tls, name: switched_to
    elsewhere = server_context(rsa_identity, shared, version)
    cctx = fasttls.newctx(cadata=rsa_identity.ca_pem, minimum_version=version,
                          maximum_version=version)
    session = None
    for ctx, resumed in ((front, False), (elsewhere, True), (front, True)):
        client = fasttls.newtls("client", cctx, "localhost", session=session)
        server = fasttls.newtls("server", ctx)
        pump(client, server)
        client.read(server.write(b"x"))
        assert client.session_reused() is resumed
        session = client.session
    assert switched_to.session_ticket_stats()["issued"] == 0
    assert front.session_ticket_stats()["current"] == 1
