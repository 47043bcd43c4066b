"""Keyless on the sans-IO API: the handshake pauses with a SigningRequest (TLS.pause), the
application answers or fails it, the next handshake() goes on; what the request holds; the
failures (signer error, wrong length, wrong key) end in a KeylessError on the server and an
alert the client reports; resumption needs no signature."""
import hashlib
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support.pairs import TLS12, TLS13, VERSIONS, client_ctx
from support.pump import first_session, pump, resume
from support.signers import FailingSigner, LocalSigner, OtherKeySigner, TruncatingSigner
from support.threads import start_and_join

import fasttls

TLS13_PREFIX = b" " * 64 + b"TLS 1.3, server CertificateVerify\0"


def spki_sha256(identity):
    cert = x509.load_pem_x509_certificate(identity.chain_pem)
    return hashlib.sha256(cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def start(identity, sctx, version=None, hostname="localhost", session=None):
    """A client and a keyless server, run up to the server's pause: (client, server, output
    the server produced before pausing)."""
    options = {} if version is None else {"minimum_version": version, "maximum_version": version}
    cctx = client_ctx(identity, **options)
    client = fasttls.newtls("client", cctx, hostname, session=session)
    server = fasttls.newtls("server", sctx)
    out = server.handshake(client.handshake())
    return client, server, out


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_pause_answer_continue(identities, keyless_ctx, key_type, version):
    identity = identities[key_type]
    sctx, signer = keyless_ctx(identity)
    client, server, out = start(identity, sctx, version)
    request = server.pause
    assert isinstance(request, fasttls.SigningRequest)
    assert server.state is fasttls.State.HANDSHAKING and not server.finished()
    assert request.key_id == spki_sha256(identity)
    assert request.server_name == "localhost"
    if key_type == "ecdsa":
        assert request.scheme == 0x0403 and request.scheme_name == "ecdsa_secp256r1_sha256"
    else:
        assert request.scheme == 0x0804 and request.scheme_name == "rsa_pss_rsae_sha256"
    if version == TLS13:
        assert request.data.startswith(TLS13_PREFIX)
        assert len(request.data) - len(TLS13_PREFIX) in (32, 48)  # the suite's transcript hash
    else:
        # client_random + server_random + ServerECDHParams (curve_type 3, a named group)
        assert len(request.data) > 64 and request.data[64] == 3
    request.answer(signer.signature(request))
    out += server.handshake()
    assert server.pause is None
    pump(client, server, client.handshake(out))
    assert client.version() == server.version() == {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}[version]
    assert server.read(client.write(b"ping")) == b"ping"


def test_unresolved_pause_pauses_again(identities, keyless_ctx):
    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    client, server, out = start(identity, sctx)
    first = server.pause
    assert server.handshake() == b""
    second = server.pause
    assert second is not None and second is not first
    assert second.data == first.data and second.scheme == first.scheme
    second.resolve(5.0)
    pump(client, server, client.handshake(out + server.handshake()))
    assert len(signer.requests) == 1


def test_p384(p384_identity, keyless_ctx):
    sctx, signer = keyless_ctx(p384_identity)
    client, server, out = start(p384_identity, sctx, TLS13)
    assert server.pause.scheme_name == "ecdsa_secp384r1_sha384"
    assert server.pause.key_id == hashlib.sha256(p384_identity.spki_der).digest()
    # TLS 1.3's transcript hash is the suite's (SHA-384 for AES-256-GCM), not the scheme's
    assert server.pause.data.startswith(TLS13_PREFIX)
    server.pause.resolve(5.0)
    pump(client, server, client.handshake(out + server.handshake()))
    assert client.finished()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("signer_class,reason", [
    (FailingSigner, "UNKNOWN_KEY_ID"),
    (OtherKeySigner, "BAD_SIGNATURE"),
])
def test_failures_alert_the_client(identities, keyless_ctx, version, signer_class, reason):
    identity = identities["ecdsa"]
    key_pem = identity.key_pem
    if signer_class is OtherKeySigner:
        key_pem = identities["ecdsa"].ca.private_key_pem.bytes()  # the CA's key: well-formed
    sctx, _ = keyless_ctx(identity, signer_class(key_pem))
    client, server, out = start(identity, sctx, version)
    server.pause.resolve(5.0)
    assert server.pause.error.reason == reason
    with pytest.raises(fasttls.KeylessError) as caught:
        server.handshake()
    error = caught.value
    assert isinstance(error, fasttls.SSLError) and isinstance(error, ssl.SSLError)
    assert error.reason == reason
    assert error.alert, "the alert for the client"
    assert server.state is fasttls.State.BROKEN
    with pytest.raises(fasttls.SSLError) as client_error:
        client.handshake(out + error.alert)
    assert "INTERNAL_ERROR" in str(client_error.value).upper()


def test_wrong_length_rsa(identities, keyless_ctx):
    identity = identities["rsa"]
    sctx, _ = keyless_ctx(identity, TruncatingSigner(identity.key_pem))
    client, server, out = start(identity, sctx)
    server.pause.resolve(5.0)
    with pytest.raises(fasttls.KeylessError) as caught:
        server.handshake()
    assert caught.value.reason == "WRONG_SIGNATURE_LENGTH"
    with pytest.raises(fasttls.SSLError):
        client.handshake(out + caught.value.alert)


def test_answer_not_bytes_and_fail_by_text(identities, keyless_ctx):
    identity = identities["ecdsa"]
    sctx, _ = keyless_ctx(identity)
    _, server, _ = start(identity, sctx)
    server.pause.answer("not bytes")
    with pytest.raises(fasttls.KeylessError, match="not bytes"):
        server.handshake()
    _, server, _ = start(identity, sctx)
    server.pause.fail("the HSM is on fire")
    with pytest.raises(fasttls.KeylessError, match="the HSM is on fire") as caught:
        server.handshake()
    assert caught.value.reason == "SIGNER_ERROR"


def test_only_the_first_answer_counts(identities, keyless_ctx):
    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    client, server, out = start(identity, sctx)
    request = server.pause
    request.answer(signer.signature(request))
    request.fail("too late")
    assert request.error is None and request.resolved
    pump(client, server, client.handshake(out + server.handshake()))


@pytest.mark.parametrize("version", VERSIONS)
def test_resumption_needs_no_signature(identities, keyless_ctx, version):
    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    cctx = client_ctx(identity, minimum_version=version, maximum_version=version)
    again, server = resume(cctx, sctx, first_session(cctx, sctx))
    assert server.session_reused() and again.session_reused()
    assert len(signer.requests) == 1


def test_python_callbacks_refused_on_keyless_contexts(identities, keyless_ctx):
    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    with pytest.raises(ValueError, match="keyless"):
        sctx.set_psk_server_callback(lambda identity: b"k" * 16)
    with pytest.raises(ValueError, match="keyless"):
        sctx._enable_message_hook(True)
    plain = fasttls.newctx()
    plain.set_psk_server_callback(lambda identity: b"k" * 16)
    with pytest.raises(ValueError, match="TLS-PSK"):
        plain.set_keyless_cert(identity.chain_pem, signer)
    assert plain.signer is None


def test_refuses_bad_arguments(identities):
    ctx = fasttls.newctx()
    with pytest.raises(TypeError, match="Signer"):
        ctx.set_keyless_cert(identities["ecdsa"].chain_pem, object())
    with pytest.raises(fasttls.SSLError):
        ctx.set_keyless_cert(b"not a certificate", LocalSigner(identities["ecdsa"].key_pem))
    assert ctx.signer is None  # not keyless after a failed load


def test_released_while_paused(identities, keyless_ctx):
    """SSL_free does not end a paused job: releasing the connection unwinds it (many times over,
    so a leak would show under the memcheck subset; here: no crash, the context stays usable)."""
    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    for _ in range(50):
        _, server, _ = start(identity, sctx)
        assert server.pause is not None
        del server
    client, server, out = start(identity, sctx)
    server.pause.resolve(5.0)
    pump(client, server, client.handshake(out + server.handshake()))


def test_resumed_on_another_thread_is_refused(identities, keyless_ctx):
    import threading

    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    box = {}

    def begin():
        box["client"], box["server"], box["out"] = start(identity, sctx)
        box["server"].pause.resolve(5.0)

    thread = threading.Thread(target=begin)
    thread.start()
    thread.join(10)
    with pytest.raises(fasttls.SSLError, match="thread that started it"):
        box["server"].handshake()
    assert box["server"].state is fasttls.State.HANDSHAKING  # still continuable there
    # released after its thread ended: nobody can end the job; left behind, no crash, and not
    # kept as an orphan that every later handshake step would look at
    import gc

    from fasttls._binding import lib

    before = lib.fasttls_keyless_orphans()
    box.clear()
    gc.collect()
    assert lib.fasttls_keyless_orphans() == before


def test_newctx_options(identities):
    identity = identities["ecdsa"]
    signer = LocalSigner(identity.key_pem)
    sctx = fasttls.newctx(keyless_certfile=identity.chain_pem, signer=signer)
    assert sctx.signer is signer
    client = fasttls.newtls("client", client_ctx(identity), "localhost")
    pump(client, fasttls.newtls("server", sctx))
    assert len(signer.requests) == 1
    with pytest.raises(TypeError, match="together"):
        fasttls.newctx(signer=signer)


def test_rsa_key_exchange_never_offered(identities, keyless_ctx):
    identity = identities["rsa"]
    sctx, _ = keyless_ctx(identity)
    assert all(c["kea"] != "kx-rsa" for c in sctx.get_ciphers())
    sctx.set_ciphers("AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")  # kRSA asked for
    assert [c["name"] for c in sctx.get_ciphers() if c["protocol"] == "TLSv1.2"] == [
        "ECDHE-RSA-AES128-GCM-SHA256"]
    with pytest.raises(fasttls.SSLError):
        sctx.set_ciphers("AES128-GCM-SHA256")  # nothing left


def test_hello_retry_request_then_signature(identities, keyless_ctx):
    """TLS 1.3 HelloRetryRequest (no key share for the server's group): the client-hello
    callback runs for both ClientHellos, the SNI callback once, the signature once."""
    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity, groups=["P-256"])
    names = []
    sctx.sni_callback = lambda tls, name: names.append(name)
    cctx = client_ctx(identity, groups=["P-384", "P-256"], minimum_version=TLS13)
    cctx._enable_message_hook(True)
    client = fasttls.newtls("client", cctx, "localhost")
    received = []
    fasttls.Context._watch_messages(client, lambda written, version, kind, data: received.append(
        data[:1]) if not written and kind == 22 else None)
    server = fasttls.newtls("server", sctx)
    pump(client, server)
    assert received.count(b"\x02") == 2, "a HelloRetryRequest, then the ServerHello"
    assert names == ["localhost"]
    assert len(signer.requests) == 1
    assert client.version() == "TLSv1.3"


def test_threads_interleaved(identities, keyless_ctx):
    """Paused handshakes of one context in several threads at once, each thread interleaving
    several connections' pauses: every signature goes to its own connection."""
    import threading

    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    failures = []

    def work():
        try:
            for _ in range(10):
                pairs = [start(identity, sctx) for _ in range(4)]  # four paused at once
                for client, server, out in reversed(pairs):
                    server.pause.resolve(5.0)
                    pump(client, server, client.handshake(out + server.handshake()))
                    assert server.read(client.write(b"mine")) == b"mine"
        except BaseException as exc:
            failures.append(exc)

    assert not start_and_join([threading.Thread(target=work) for _ in range(6)], 60)
    assert not failures, failures
    assert len(signer.requests) == 6 * 10 * 4


def test_released_on_another_thread_is_ended_by_its_own(identities, keyless_ctx):
    """A connection released on another thread than its paused job's (a garbage collection
    there): the job goes back to its own thread, which ends it at its next handshake step."""
    import gc
    import threading

    from fasttls._binding import lib

    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    box = {}
    paused, go_on, done = threading.Event(), threading.Event(), threading.Event()

    def owner():
        box["server"] = start(identity, sctx)[1]
        paused.set()
        go_on.wait(10)
        client, server, out = start(identity, sctx)  # any handshake step of this thread
        box["after"] = lib.fasttls_keyless_orphans()
        server.pause.resolve(5.0)
        pump(client, server, client.handshake(out + server.handshake()))
        done.set()

    thread = threading.Thread(target=owner)
    thread.start()
    assert paused.wait(10)
    before = lib.fasttls_keyless_orphans()
    del box["server"]
    gc.collect()
    assert lib.fasttls_keyless_orphans() == before + 1
    go_on.set()
    assert done.wait(10)
    thread.join(10)
    assert box["after"] == before


def test_orphan_dropped_when_its_thread_ends(identities, keyless_ctx):
    import gc
    import threading

    from fasttls._binding import lib

    identity = identities["ecdsa"]
    sctx, _ = keyless_ctx(identity)
    box = {}
    paused, go_on = threading.Event(), threading.Event()

    def owner():
        box["server"] = start(identity, sctx)[1]
        paused.set()
        go_on.wait(10)  # then ends without another handshake step

    thread = threading.Thread(target=owner)
    thread.start()
    assert paused.wait(10)
    before = lib.fasttls_keyless_orphans()
    box.clear()
    gc.collect()
    assert lib.fasttls_keyless_orphans() == before + 1
    go_on.set()
    thread.join(10)
    # join() returns when the Python thread is done, a little before the OS thread runs its
    # thread-local destructors (where the engine drops the orphan): wait for it, bounded
    for _ in range(500):
        if lib.fasttls_keyless_orphans() == before:
            break
        time.sleep(0.01)
    assert lib.fasttls_keyless_orphans() == before


def test_keyless_identity_replaced_by_local_key_stops_signing(identities, keyless_ctx):
    # The engine's keyless flag follows the identities: once a local key replaces the keyless
    # one, handshakes run outside signing jobs and never pause for a signature.
    from fasttls._binding import lib

    identity = identities["ecdsa"]
    sctx, signer = keyless_ctx(identity)
    assert lib.fasttls_ctx_is_keyless(sctx._ctx) == 1
    sctx.set_cert(identity.chain_pem, identity.key_pem)
    assert lib.fasttls_ctx_is_keyless(sctx._ctx) == 0
    assert sctx.signer is None  # one owner: the context is no longer keyless on either side
    sctx.set_psk_server_callback(lambda identity: b"k" * 16)  # no longer refused
    sctx.set_psk_server_callback(None)
    client, server, out = start(identity, sctx)
    assert server.pause is None
    pump(client, server, client.handshake(out))
    assert server.read(client.write(b"ping")) == b"ping"
    assert signer.requests == []
