"""The shared session store (fasttls.store) on the native API: two separate server contexts
sharing one store resume each other's sessions, TLS 1.2 by session ID and TLS 1.3 by stateful
ticket; the lookup pauses the handshake (TLS.pause) and never runs inside it; a store that is
down, slow or returns rubbish means a full handshake, never a failure; a connection dropped
without close_notify keeps its session. Clients: fasttls, the stdlib, `openssl s_client`."""
import ssl
import subprocess
import time

import pytest
from support.pairs import VERSIONS, client_ctx, server_ctx, version_options
from support.peers import stdlib_client_context
from support.pump import pump
from support.requires import require_program
from support.stores import DownStore, HelperServer, SlowStore, fetch, store_ctx

import fasttls
from fasttls.store import MemoryStore, SessionLookup


def full_handshake(ident, cctx, store):
    """A first connection, to a server context keeping sessions in `store`: (client, server),
    the client having read what came after the handshake (TLS 1.3 tickets)."""
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", store_ctx(ident, store))
    pump(client, server)
    client.read(b"")  # TLS 1.3 tickets came with the last flight
    return client, server


def first_and_second(ident, version, store, second_store=None):
    """A full handshake on one server context, then a resumption attempt on another (sharing
    `store` unless `second_store`); returns the second pair."""
    cctx = client_ctx(ident, **version_options(version))
    client, server = full_handshake(ident, cctx, store)
    assert not server.session_reused()
    session = client.session
    again = fasttls.newtls("client", cctx, "localhost", session=session)
    if second_store is None:
        second_store = store
    other = fasttls.newtls("server", store_ctx(ident, second_store))
    pump(again, other)
    return again, other


@pytest.mark.parametrize("version", VERSIONS)
def test_two_contexts_resume_each_others_sessions(ident, version):
    store = MemoryStore()
    client, server = first_and_second(ident, version, store)
    assert server.session_reused() and client.session_reused()
    assert server.version() == client.version()
    assert len(store) >= 1


@pytest.mark.parametrize("version", VERSIONS)
def test_the_lookup_pauses_the_handshake(ident, version):
    """Sans-IO by hand: the server's handshake() returns with a SessionLookup pending, the
    state still handshaking; the application fetches and hands the session in."""
    store = MemoryStore()
    cctx = client_ctx(ident, **version_options(version))
    first, _ = full_handshake(ident, cctx, store)
    client = fasttls.newtls("client", cctx, "localhost", session=first.session)
    server = fasttls.newtls("server", store_ctx(ident, store))
    hello = client.handshake()
    assert server.handshake(hello) == b""
    lookup = server.pause
    assert isinstance(lookup, SessionLookup)
    assert server.state.value == "handshaking"
    assert store.get(lookup.key) is not None
    # Not answered yet: the handshake goes on pausing, sending nothing.
    assert server.handshake() == b"" and server.pause is not None
    server.pause.hand_in(store.get(lookup.key))
    assert server.pause.found
    to_client = server.handshake()
    assert server.pause is None and to_client
    pump(client, server, to_server=client.handshake(to_client))
    assert server.session_reused() and client.session_reused()


def test_a_session_not_found_means_a_full_handshake(ident):
    client, server = first_and_second(ident, None, MemoryStore(), second_store=MemoryStore())
    assert not server.session_reused() and not client.session_reused()
    assert client.finished() and server.finished()


def test_tls13_clients_random_legacy_session_id_is_never_looked_up(ident):
    """A TLS 1.3 client's first ClientHello carries a random legacy_session_id and no PSK: no
    lookup at all (a TLS 1.2-only server would look that ID up)."""
    counting = SlowStore(MemoryStore(), 0.0)
    cctx = client_ctx(ident)
    client = fasttls.newtls("client", cctx, "localhost")
    pump(client, fasttls.newtls("server", store_ctx(ident, counting)))
    assert counting.lookups == 0
    # A server limited to TLS 1.2 does look the same kind of ID up: there it may name a
    # TLS 1.2 session the client wants to resume.
    tls12_only = server_ctx(ident, maximum_version=ssl.TLSVersion.TLSv1_2)
    tls12_only.set_session_store(counting)
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", tls12_only)
    pump(client, server)
    assert counting.lookups == 1 and not server.session_reused()


@pytest.mark.parametrize("version", VERSIONS)
def test_a_store_that_is_down_means_a_full_handshake(ident, version):
    down = DownStore()
    client, server = first_and_second(ident, version, down)
    assert not server.session_reused()
    assert server.finished() and client.finished()


class Rubbish(MemoryStore):
    def get(self, key, timeout=None):
        return b"\x30\x03\x02\x01\x01 not a session"


def test_an_unreadable_blob_means_a_full_handshake(ident):
    store = MemoryStore()
    client, server = first_and_second(ident, ssl.TLSVersion.TLSv1_2, store,
                                      second_store=Rubbish())
    assert not server.session_reused() and client.finished()


class Swapped(MemoryStore):
    """Answers every key with another session (a store entry moved under another key)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def get(self, key, timeout=None):
        others = [k for k in self.inner.keys() if k != key]
        return self.inner.get(others[0]) if others else None


def test_a_session_stored_under_another_key_is_refused(ident):
    store = MemoryStore()
    cctx = client_ctx(ident, **version_options(ssl.TLSVersion.TLSv1_2))
    for _ in range(2):  # two sessions in the store
        pump(fasttls.newtls("client", cctx, "localhost"),
             fasttls.newtls("server", store_ctx(ident, store)))
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", store_ctx(ident, store))
    pump(client, server)
    again = fasttls.newtls("client", cctx, "localhost", session=client.session)
    other = fasttls.newtls("server", store_ctx(ident, Swapped(store)))
    hello = again.handshake()
    other.handshake(hello)
    lookup = other.pause
    lookup.resolve(1.0)
    assert not lookup.found and isinstance(lookup.error, ValueError)
    pump(again, other, to_server=again.handshake(other.handshake()))
    assert not other.session_reused()


@pytest.mark.parametrize("version", VERSIONS)
def test_dropped_without_close_notify_the_session_stays(ident, version):
    """Sans-IO: the server connection is released without close_notify (most clients just
    close); its session stays in the store and resumes."""
    store = MemoryStore()
    cctx = client_ctx(ident, **version_options(version))
    client, server = full_handshake(ident, cctx, store)
    kept = store.keys()
    del server  # released: fasttls_conn_release, no close_notify sent
    import gc
    gc.collect()
    assert store.keys() == kept
    again = fasttls.newtls("client", cctx, "localhost", session=client.session)
    other = fasttls.newtls("server", store_ctx(ident, store))
    pump(again, other)
    assert other.session_reused()


# ---- over sockets: the helpers drive the pause ----


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("drop", [False, True], ids=["close_notify", "dropped"])
def test_helpers_with_stdlib_clients(ident, version, drop):
    store = MemoryStore()
    first = HelperServer(store_ctx(ident, store), drop=drop)
    second = HelperServer(store_ctx(ident, store))
    cctx = stdlib_client_context(ident, version)
    session, reused = fetch(first.port, cctx)
    assert not reused and session is not None
    first.join()
    _, reused = fetch(second.port, cctx, session)
    second.join()
    assert not first.errors and not second.errors
    assert reused and second.reused == [True]


def test_helpers_a_slow_store_is_bounded_by_the_socket_timeout(ident):
    """A lookup that never answers in time: bounded by the server socket's timeout, then a
    full handshake; the client sees no error."""
    store = MemoryStore()
    first = HelperServer(store_ctx(ident, store))
    cctx = stdlib_client_context(ident, ssl.TLSVersion.TLSv1_2)
    session, _ = fetch(first.port, cctx)
    first.join()
    stalled = SlowStore(store, 60.0, fail=True)
    second = HelperServer(store_ctx(ident, stalled), timeout=1.0)
    started = time.monotonic()
    _, reused = fetch(second.port, cctx, session)
    second.join()
    assert not reused and second.reused == [False] and not second.errors
    assert stalled.lookups == 1
    assert time.monotonic() - started < 30  # bounded by the 1 s socket timeout, not 60 s


@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_sess_out_sess_in(ident, tmp_path, flag):
    openssl = require_program("openssl")
    paths = ident.write(tmp_path)
    store = MemoryStore()
    sess = tmp_path / "session.pem"
    outputs = []
    for argument in ("-sess_out", "-sess_in"):
        server = HelperServer(store_ctx(ident, store))
        done = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername",
             "localhost", "-CAfile", str(paths["ca"]), flag, "-ign_eof", argument, str(sess)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        server.join()
        assert not server.errors
        outputs.append(done.stdout.decode("latin-1"))
    assert "New, TLS" in outputs[0], outputs[0][-2000:]
    assert "Reused, TLS" in outputs[1], outputs[1][-2000:]


def test_tls13_resumption_through_a_hello_retry_request(ident):
    """The server wants another key share (HelloRetryRequest): the client-hello callback runs
    for both ClientHellos, the lookup happens once, and the session resumes."""
    store = MemoryStore()
    cctx = client_ctx(ident, **version_options(ssl.TLSVersion.TLSv1_3))
    cctx.set_groups(["X25519", "P-256"])  # a key share for X25519 only
    first, _ = full_handshake(ident, cctx, store)
    counting = SlowStore(store, 0.0)
    p256_only = server_ctx(ident)
    p256_only.set_groups(["P-256"])
    p256_only.set_session_store(counting)
    client = fasttls.newtls("client", cctx, "localhost", session=first.session)
    server = fasttls.newtls("server", p256_only)
    hello = client.handshake()
    assert server.handshake(hello) == b"" and server.pause is not None  # the first hello
    server.pause.resolve(1.0)
    retry = server.handshake()
    assert server.pause is None and not server.finished()
    pump(client, server, to_server=client.handshake(retry))
    assert counting.lookups == 1
    assert server.session_reused() and client.session_reused()
    from fasttls._binding import ffi, lib
    # P-256, not the X25519 of the client's only key share: the server asked again (HRR).
    assert ffi.string(lib.fasttls_conn_group(server._conn)) == b"secp256r1"


class Blocking(MemoryStore):
    """Writes wait until released (a stalled store), lookups answer at once."""

    local = False

    def __init__(self):
        super().__init__()
        import threading
        self.release = threading.Event()
        self.writing = threading.Event()

    def set(self, key, value, ttl, timeout=None):
        self.writing.set()
        assert self.release.wait(30)
        super().set(key, value, ttl)


def test_new_sessions_are_written_in_the_background_and_bounded(ident):
    """A stalled store holds up no handshake: sessions queue for the writer thread up to
    max_pending, the rest are dropped (counted); once the store answers, the queue drains."""
    store = Blocking()
    sctx = store_ctx(ident, store)
    saver = sctx._session_store_saver
    saver.max_pending = 2
    cctx = client_ctx(ident, **version_options(ssl.TLSVersion.TLSv1_2))
    pump(fasttls.newtls("client", cctx, "localhost"), fasttls.newtls("server", sctx))
    assert store.writing.wait(30)  # the writer thread is stuck in the first write
    for _ in range(4):  # these handshakes complete all the same
        client, server = fasttls.newtls("client", cctx, "localhost"), fasttls.newtls(
            "server", sctx)
        pump(client, server)
        assert client.finished() and server.finished()
    assert saver.dropped == 2 and len(store) == 0
    store.release.set()
    assert saver.flush(30)
    assert len(store) == 3 and saver.failed == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_a_fatal_alert_evicts_a_tls12_session(ident, version):
    """As OpenSSL's own cache: a TLS 1.2 session whose connection failed with a fatal alert is
    forgotten (RFC 5246 7.2.2), in the shared store too; TLS 1.3 has no such rule, and a
    connection that just ends keeps its session (test_dropped_without_close_notify_...)."""
    store = MemoryStore()
    cctx = client_ctx(ident, **version_options(version))
    client, server = full_handshake(ident, cctx, store)
    kept = store.keys()
    assert kept
    record = bytearray(client.write(b"forged"))
    record[-1] ^= 1
    with pytest.raises(fasttls.SSLError) as failure:
        server.read(bytes(record))
    assert failure.value.alert  # the bad_record_mac alert for the client
    if version == ssl.TLSVersion.TLSv1_2:
        assert store.keys() == [] and server.context._session_store_saver.evicted == 1
        again = fasttls.newtls("client", cctx, "localhost", session=client.session)
        other = fasttls.newtls("server", store_ctx(ident, store))
        pump(again, other)
        assert not other.session_reused()
    else:
        assert store.keys() == kept


def test_a_store_turns_stateless_tickets_off_shared_keys_included(ident):
    """With both set, the store is what resumes: no ticket is issued under the shared keys
    (TLS 1.2 resumes by session ID); without the store, the keys are in use again."""
    store = MemoryStore()
    sctx = server_ctx(ident)
    sctx.set_session_ticket_keys([bytes(range(80))])
    sctx.set_session_store(store)
    cctx = client_ctx(ident, **version_options(ssl.TLSVersion.TLSv1_2))
    client = fasttls.newtls("client", cctx, "localhost")
    pump(client, fasttls.newtls("server", sctx))
    assert not client.session.has_ticket and len(store) == 1
    again = fasttls.newtls("client", cctx, "localhost", session=client.session)
    server = fasttls.newtls("server", sctx)
    pump(again, server)
    assert server.session_reused()
    sctx.set_session_store(None)
    client = fasttls.newtls("client", cctx, "localhost")
    pump(client, fasttls.newtls("server", sctx))
    assert client.session.has_ticket and len(store) == 1


def test_the_lookup_holds_its_connection_weakly(ident):
    """No reference cycle per lookup (TLS.pause -> lookup -> TLS): a connection dropped while
    its lookup is pending goes at once, without the garbage collector, and the lookup, handed
    in afterwards, does nothing."""
    import gc
    import weakref

    store = MemoryStore()
    cctx = client_ctx(ident)
    first, _ = full_handshake(ident, cctx, store)
    client = fasttls.newtls("client", cctx, "localhost", session=first.session)
    server = fasttls.newtls("server", store_ctx(ident, store))
    server.handshake(client.handshake())
    lookup = server.pause
    assert isinstance(lookup, SessionLookup) and not lookup.resolved
    gone = weakref.ref(server)
    gc.disable()
    try:
        del server
        assert gone() is None  # freed by reference counting alone: no cycle
    finally:
        gc.enable()
    assert lookup.resolved
    lookup.hand_in(store.get(lookup.key))  # moot: nothing to hand it to
    assert not lookup.found


def test_memory_store_evicts_the_oldest_and_refuses_no_room():
    store = MemoryStore(max_entries=2)
    for i in range(3):
        store.set(bytes([i]) * 32, b"session %d" % i, 60)
    assert store.keys() == [b"\x01" * 32, b"\x02" * 32]  # the oldest went
    assert store.get(b"\x00" * 32) is None and store.get(b"\x02" * 32) == b"session 2"
    with pytest.raises(ValueError, match="max_entries >= 1"):
        MemoryStore(max_entries=0)
