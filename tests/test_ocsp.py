"""OCSP stapling, against the real `openssl ocsp` responder (behind an HTTP front on 127.0.0.1:
see support/ocsp.py for why not its own -port), `openssl s_client -status` and
`openssl s_server -status_file`.

Server side: a response given as bytes; fetched, checked and refreshed by OCSPStapler; every
way it cannot be had. Client side: ocsp_response() (native and drop-in), and require mode
against a missing, revoked, foreign, expired or badly signed staple."""
import gc
import re
import socket
import ssl
import subprocess
import threading
import time
import weakref

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import fasttls
from support.ocsp import PKI, Responder, openssl_response
from support.openssl_server import OpenSSLServer
from support.pairs import VERSION_NAME, VERSIONS, handshake_error
from support.peers import (SOCKET_TIMEOUT, ThreadedServer, bio_handshake_over_socket,
                           socket_handshake)
from support.pump import pump
from support.requires import require_program

DER = Encoding.DER
WAIT = 20.0  # the longest any wait below may take (guards against hangs only)


@pytest.fixture
def openssl():
    return require_program("openssl")


@pytest.fixture
def responder(openssl, tmp_path):
    """A live responder and the PKI whose leaves name it."""
    front = Responder(openssl, tmp_path)
    front.pki = PKI(tmp_path, front.url)
    try:
        yield front
    finally:
        front.close()


@pytest.fixture
def pki(responder):
    return responder.pki


def server_ctx(issued, staple=None):
    ctx = fasttls.newctx()
    ctx.set_cert(issued.chain_pem, issued.key_pem)
    if staple is not None:
        ctx.set_ocsp_response(staple)
    return ctx


def client_ctx(pki, version=None, **options):
    ctx = fasttls.newctx(cadata=pki.ca_pem, **options)
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def connect(cctx, sctx):
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", sctx)
    pump(client, server)
    return client, server


def wait_until(predicate, what):
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_responder_listens_on_loopback_only(responder):
    ss = require_program("ss")
    listening = subprocess.run([ss, "-ltnH"], capture_output=True, text=True, timeout=WAIT)
    ours = [line for line in listening.stdout.splitlines() if f":{responder.port} " in line]
    assert ours and all(f"127.0.0.1:{responder.port}" in line for line in ours), ours


# ---------------------------------------------------------------- a staple given as bytes


@pytest.mark.parametrize("version", VERSIONS)
def test_staple_given_as_bytes_reaches_the_client(openssl, pki, tmp_path, version):
    staple = openssl_response(openssl, pki, pki.good, tmp_path)
    sctx = server_ctx(pki.good, staple)
    assert sctx.ocsp_response == staple
    cctx = client_ctx(pki, version)
    cctx.ocsp_stapling = True
    client, server = connect(cctx, sctx)
    assert client.version() == VERSION_NAME[version]
    assert client.ocsp_response() == staple
    assert server.ocsp_response() is None  # a server has no staple of its peer's


def test_no_staple_unless_asked_or_given(openssl, pki, tmp_path):
    staple = openssl_response(openssl, pki, pki.good, tmp_path)
    client, _ = connect(client_ctx(pki), server_ctx(pki.good, staple))
    assert client.ocsp_response() is None  # the client did not ask
    asking = client_ctx(pki)
    asking.ocsp_stapling = True
    client, _ = connect(asking, server_ctx(pki.good))
    assert client.ocsp_response() is None  # nothing to staple


def test_staple_replaced_and_removed(openssl, pki, tmp_path):
    first = openssl_response(openssl, pki, pki.good, tmp_path)
    second = openssl_response(openssl, pki, pki.good, tmp_path, signer="ca")
    assert first != second
    sctx = server_ctx(pki.good, first)
    cctx = client_ctx(pki)
    cctx.ocsp_stapling = True
    assert connect(cctx, sctx)[0].ocsp_response() == first
    sctx.set_ocsp_response(second)
    assert connect(cctx, sctx)[0].ocsp_response() == second
    sctx.set_ocsp_response(None)
    assert connect(cctx, sctx)[0].ocsp_response() is None
    with pytest.raises(ValueError):
        sctx.set_ocsp_response(b"")
    with pytest.raises(TypeError):
        sctx.set_ocsp_response("not bytes")


def test_staple_replaced_while_handshakes_run(openssl, pki, tmp_path):
    """A refresher replacing the staple in one thread while others handshake: every client
    gets one of the two responses whole (the engine copies it under its lock)."""
    staples = [openssl_response(openssl, pki, pki.good, tmp_path, signer=s)
               for s in ("responder", "ca")]
    sctx = server_ctx(pki.good, staples[0])
    cctx = client_ctx(pki)
    cctx.require_ocsp_staple = True
    stop = threading.Event()
    seen, errors = [], []

    def replace():
        i = 0
        while not stop.is_set() and i < 100_000:
            sctx.set_ocsp_response(staples[i % 2])
            i += 1

    def handshakes():
        try:
            for _ in range(40):
                seen.append(connect(cctx, sctx)[0].ocsp_response())
        except Exception as exc:  # reported below
            errors.append(exc)

    replacer = threading.Thread(target=replace)
    workers = [threading.Thread(target=handshakes) for _ in range(2)]
    replacer.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT * 3)
    stop.set()
    replacer.join(WAIT)
    assert not errors and len(seen) == 80
    assert set(seen) <= set(staples)


def test_each_certificate_gets_its_own_staple(openssl, pki, tmp_path):
    """RSA and ECDSA served together: set_ocsp_response files each response with the
    certificate it is about, and each client gets the one for the certificate it was sent."""
    sctx = server_ctx(pki.good)
    sctx.add_cert(pki.good_rsa.chain_pem, pki.good_rsa.key_pem)
    staples = {issued: openssl_response(openssl, pki, issued, tmp_path)
               for issued in (pki.good, pki.good_rsa)}
    for staple in staples.values():
        sctx.set_ocsp_response(staple)
    for issued, cipher in ((pki.good, "ECDHE-ECDSA-AES128-GCM-SHA256"),
                           (pki.good_rsa, "ECDHE-RSA-AES128-GCM-SHA256")):
        cctx = client_ctx(pki, ssl.TLSVersion.TLSv1_2, ciphers=cipher)
        cctx.require_ocsp_staple = True
        client, _ = connect(cctx, sctx)
        assert client.getpeercert(binary_form=True) == issued.cert.public_bytes(DER)
        assert client.ocsp_response() == staples[issued]
    # TLS 1.3 (the certificate chosen by signature algorithm): the staple matches it too.
    cctx = client_ctx(pki, ssl.TLSVersion.TLSv1_3)
    cctx.require_ocsp_staple = True
    client, _ = connect(cctx, sctx)
    sent = client.getpeercert(binary_form=True)
    assert client.ocsp_response() == next(staples[i] for i in staples
                                          if i.cert.public_bytes(DER) == sent)


def test_certificate_rotation_with_staples(openssl, pki, tmp_path):
    """Staples of certificates no longer served are dropped: rotating through more
    certificates than the engine keeps staples for, each stapled, serves each its own."""
    sctx = server_ctx(pki.good)
    cctx = client_ctx(pki)
    cctx.ocsp_stapling = True  # the responder does not know these leaves: status "unknown"
    for _ in range(12):
        issued = pki._make("localhost", issuer=pki.ca, leaf=True)
        staple = openssl_response(openssl, pki, issued, tmp_path)
        sctx.set_cert(issued.chain_pem, issued.key_pem)
        sctx.set_ocsp_response(staple)
        client, _ = connect(cctx, sctx)
        assert client.ocsp_response() == staple


def test_sni_switch_staples_the_chosen_context(openssl, pki, tmp_path):
    staple = openssl_response(openssl, pki, pki.good, tmp_path)
    chosen = server_ctx(pki.good, staple)
    first = server_ctx(pki.other)  # no staple of its own
    first.sni_callback = lambda tls, name: chosen
    cctx = client_ctx(pki)
    cctx.require_ocsp_staple = True
    client, _ = connect(cctx, first)
    assert client.ocsp_response() == staple


# ---------------------------------------------------------------- fetched and refreshed


@pytest.mark.parametrize("signer", ["responder", "ca"])
def test_stapler_fetches_checks_and_staples(responder, pki, signer):
    responder.signer = signer  # a delegated responder, or the issuer itself
    sctx = server_ctx(pki.good)
    stapler = fasttls.OCSPStapler(sctx)
    assert stapler.responder_url() == responder.url  # from the certificate's AIA
    der = stapler.refresh()
    assert responder.requests == 1
    assert sctx.ocsp_response == der == stapler.response
    assert stapler.this_update <= time.time() + 300 and stapler.next_update > time.time()
    cctx = client_ctx(pki)
    cctx.require_ocsp_staple = True
    client, _ = connect(cctx, sctx)
    assert client.ocsp_response() == der


def test_stapler_staples_every_certificate_served(responder, pki):
    sctx = server_ctx(pki.good)
    sctx.add_cert(pki.good_rsa.chain_pem, pki.good_rsa.key_pem)
    stapler = fasttls.OCSPStapler(sctx)
    stapler.refresh()
    assert responder.requests == 2 and len(stapler.responses) == 2
    for issued, cipher in ((pki.good, "ECDHE-ECDSA-AES128-GCM-SHA256"),
                           (pki.good_rsa, "ECDHE-RSA-AES128-GCM-SHA256")):
        cctx = client_ctx(pki, ssl.TLSVersion.TLSv1_2, ciphers=cipher)
        cctx.require_ocsp_staple = True
        client, _ = connect(cctx, sctx)
        der = issued.cert.public_bytes(DER)
        assert client.getpeercert(binary_form=True) == der
        assert client.ocsp_response() == stapler.responses[der]


def test_stapler_skips_a_certificate_replaced_by_another_key_type(responder, pki):
    """set_cert(RSA) then set_cert(ECDSA): OpenSSL's context still holds the RSA certificate,
    never served again; the stapler asks only for the ECDSA one."""
    sctx = server_ctx(pki.good_rsa)
    sctx.set_cert(pki.good.chain_pem, pki.good.key_pem)
    stapler = fasttls.OCSPStapler(sctx)
    stapler.refresh()
    assert responder.requests == 1
    assert list(stapler.responses) == [pki.good.cert.public_bytes(DER)]


def test_stapler_on_a_dropin_context(responder, pki, tmp_path):
    cert = tmp_path / "good.pem"
    cert.write_bytes(pki.good.chain_pem + pki.good.key_pem)
    sctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert)
    der = fasttls.OCSPStapler(sctx).refresh()
    cctx = client_ctx(pki)
    cctx.require_ocsp_staple = True
    client, _ = connect(cctx, sctx._fasttls)
    assert client.ocsp_response() == der


def test_stapler_refreshes_in_the_background_and_stops(responder, pki):
    sctx = server_ctx(pki.good)
    stapler = fasttls.OCSPStapler(sctx, min_interval=0.05, max_interval=0.05,
                                  retry_interval=0.05)
    with stapler:
        assert stapler.running
        wait_until(lambda: responder.requests >= 3, "three refreshes")
    assert not stapler.running
    assert stapler.last_error is None
    assert sctx.ocsp_response == stapler.response
    assert not any(t.name == "fasttls-ocsp-stapler" and t.is_alive()
                   for t in threading.enumerate())


def test_stapler_dropped_without_stop_ends_its_thread(responder, pki):
    sctx = server_ctx(pki.good)
    stapler = fasttls.OCSPStapler(sctx, min_interval=0.05, retry_interval=0.05).start()
    wait_until(lambda: sctx.ocsp_response is not None, "the first staple")
    thread = stapler._thread
    ref = weakref.ref(stapler)
    del stapler
    gc.collect()
    assert ref() is None
    thread.join(WAIT)
    assert not thread.is_alive()
    assert sctx.ocsp_response is not None  # what it stapled stays


def test_background_failures_are_reported_and_keep_the_staple(responder, pki):
    sctx = server_ctx(pki.good)
    errors = []
    stapler = fasttls.OCSPStapler(sctx, min_interval=0.05, max_interval=0.05,
                                  retry_interval=0.05, on_error=errors.append)
    der = stapler.refresh()
    responder.signer = "rogue"  # from now on, every answer is refused
    with stapler:
        wait_until(lambda: len(errors) >= 2, "two failed refreshes")
    assert all(isinstance(e, fasttls.OCSPError) and e.cause == "bad signature" for e in errors)
    assert stapler.last_error is errors[-1]
    # Still valid: kept. Past nextUpdate: withdrawn at the next failure.
    assert sctx.ocsp_response == der
    stapler._times = {key: (t, time.time() - 1) for key, (t, _) in stapler._times.items()}
    with pytest.raises(fasttls.OCSPError):
        stapler.refresh()
    assert sctx.ocsp_response is None and stapler.response is None


# ---------------------------------------------------------------- when it cannot be had


def check_error(stapler, cause, *words):
    with pytest.raises(fasttls.OCSPError) as info:
        stapler.refresh()
    assert isinstance(info.value, ssl.SSLError)
    assert info.value.cause == cause, info.value
    for word in words:
        assert word in str(info.value)
    return info.value


def test_responder_down(responder, pki):
    sctx = server_ctx(pki.good)
    stapler = fasttls.OCSPStapler(sctx, timeout=5)
    responder.close()
    check_error(stapler, "http", "cannot reach", responder.url)
    assert sctx.ocsp_response is None


def test_responder_timeout(responder, pki):
    responder.stall.set()
    stapler = fasttls.OCSPStapler(server_ctx(pki.good), timeout=0.5)
    started = time.monotonic()
    check_error(stapler, "timeout", "did not answer")
    assert time.monotonic() - started < WAIT  # bounded by the timeout, not a hang


def test_responder_http_error(responder, pki):
    pki.files["responder-key"] = pki.files["rogue-key"]  # openssl ocsp fails: HTTP 500
    check_error(fasttls.OCSPStapler(server_ctx(pki.good)), "http", "HTTP 500")


def test_no_responder_url(responder, pki):
    check_error(fasttls.OCSPStapler(server_ctx(pki.no_aia)), "no responder", "authorityInfoAccess")
    # An explicit URL takes its place.
    assert fasttls.OCSPStapler(server_ctx(pki.no_aia), responder_url=responder.url).refresh()


def test_no_certificate_or_issuer(responder, pki):
    check_error(fasttls.OCSPStapler(fasttls.newctx()), "no certificate")
    leaf_only = fasttls.newctx()
    leaf_only.set_cert(pki.good.cert_pem, pki.good.key_pem)
    check_error(fasttls.OCSPStapler(leaf_only), "no issuer")
    leaf_only.load_verify_locations(cadata=pki.ca_pem)  # the issuer from the trust store
    assert fasttls.OCSPStapler(leaf_only).refresh()


def test_revoked(responder, pki):
    sctx = server_ctx(pki.revoked)
    check_error(fasttls.OCSPStapler(sctx), "revoked", "revoked")
    assert sctx.ocsp_response is None  # never stapled


def test_bad_signature(responder, pki):
    responder.signer = "rogue"
    check_error(fasttls.OCSPStapler(server_ctx(pki.good)), "bad signature", "not signed")


def test_expired_or_malformed(responder, pki, monkeypatch):
    import fasttls._ocsp as module

    stapler = fasttls.OCSPStapler(server_ctx(pki.good))
    monkeypatch.setattr(module, "_post", lambda *args: pki.expired_response(pki.good))
    check_error(stapler, "expired", "expired")
    monkeypatch.setattr(module, "_post", lambda *args: b"\x30\x03\x0a\x01\x03")  # tryLater
    check_error(stapler, "unsuccessful")
    monkeypatch.setattr(module, "_post", lambda *args: b"not DER")
    check_error(stapler, "malformed")


# ---------------------------------------------------------------- client: require mode


def require_failure(pki, sctx, version=None):
    cctx = client_ctx(pki, version)
    cctx.require_ocsp_staple = True
    assert cctx.ocsp_stapling  # require mode asks for it
    client = fasttls.newtls("client", cctx, "localhost")
    server = fasttls.newtls("server", sctx)
    exc, side, _ = handshake_error(client, server)
    assert side is client, exc
    assert isinstance(exc, fasttls.SSLCertVerificationError)
    assert isinstance(exc, ssl.SSLCertVerificationError)
    assert "localhost" in exc.verify_subject and exc.verify_depth == 0
    # The server is told why: bad_certificate_status_response (113).
    assert exc.alert[-1:] == b"\x71" or version == ssl.TLSVersion.TLSv1_3
    return exc


@pytest.mark.parametrize("version", VERSIONS)
def test_require_accepts_a_good_staple(openssl, pki, tmp_path, version):
    staple = openssl_response(openssl, pki, pki.good, tmp_path)
    cctx = client_ctx(pki, version)
    cctx.require_ocsp_staple = True
    client, _ = connect(cctx, server_ctx(pki.good, staple))
    assert client.ocsp_response() == staple


@pytest.mark.parametrize("version", VERSIONS)
def test_require_refuses_a_missing_staple(pki, version):
    exc = require_failure(pki, server_ctx(pki.good), version)
    assert exc.ocsp_cause == "missing" and "stapled no OCSP response" in str(exc)


@pytest.mark.parametrize("version", VERSIONS)
def test_require_refuses_revoked(openssl, pki, tmp_path, version):
    staple = openssl_response(openssl, pki, pki.revoked, tmp_path)
    exc = require_failure(pki, server_ctx(pki.revoked, staple), version)
    assert exc.ocsp_cause == "revoked" and exc.verify_code == 23  # X509_V_ERR_CERT_REVOKED
    assert "revoked" in exc.verify_message


def test_require_refuses_a_staple_for_another_certificate(openssl, pki, tmp_path):
    staple = openssl_response(openssl, pki, pki.other, tmp_path)
    exc = require_failure(pki, server_ctx(pki.good, staple))
    assert exc.ocsp_cause == "not for this certificate"


def test_require_refuses_an_expired_staple(pki):
    exc = require_failure(pki, server_ctx(pki.good, pki.expired_response(pki.good)))
    assert exc.ocsp_cause == "expired" and "expired" in str(exc)


def test_require_refuses_a_staple_not_signed_by_the_issuer(openssl, pki, tmp_path):
    staple = openssl_response(openssl, pki, pki.good, tmp_path, signer="rogue")
    exc = require_failure(pki, server_ctx(pki.good, staple))
    assert exc.ocsp_cause == "bad signature"


def test_require_refuses_garbage(pki):
    exc = require_failure(pki, server_ctx(pki.good, b"\x30\x00 not an OCSP response"))
    assert exc.ocsp_cause == "malformed"


def test_require_set_after_the_connection_was_made(pki):
    """The connection asks for status at its first step, whatever its context said when it
    was made: require mode is never skipped for lack of a status_request."""
    cctx = client_ctx(pki)
    client = fasttls.newtls("client", cctx, "localhost")
    cctx.require_ocsp_staple = True
    exc, side, _ = handshake_error(client, fasttls.newtls("server", server_ctx(pki.good)))
    assert side is client and exc.ocsp_cause == "missing"
    other = client_ctx(pki)
    other.require_ocsp_staple = True
    switched = fasttls.newtls("client", client_ctx(pki), "localhost")
    switched.set_context(other)
    exc, side, _ = handshake_error(switched, fasttls.newtls("server", server_ctx(pki.good)))
    assert side is switched and exc.ocsp_cause == "missing"


def test_without_require_a_bad_staple_is_only_reported(pki):
    cctx = client_ctx(pki)
    cctx.ocsp_stapling = True
    client, _ = connect(cctx, server_ctx(pki.good, b"garbage"))
    assert client.ocsp_response() == b"garbage"


def test_settings_on_the_dropin_context(pki):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert not ctx.ocsp_stapling and not ctx.require_ocsp_staple
    ctx.require_ocsp_staple = True
    assert ctx.ocsp_stapling and ctx._fasttls.require_ocsp_staple
    ctx.require_ocsp_staple = False
    ctx.ocsp_stapling = True
    assert ctx.ocsp_stapling and not ctx.require_ocsp_staple


# ---------------------------------------------------------------- real peers


def test_openssl_s_client_checks_our_staple(openssl, responder, pki, tmp_path):
    """fasttls.SSLContext serving with a fetched staple: `openssl s_client -status` receives it
    (status good, for the leaf's serial number), and `openssl ocsp` verifies the very bytes
    stapled (signature, issuer, status). s_client itself only prints a staple."""
    cert = tmp_path / "good.pem"
    cert.write_bytes(pki.good.chain_pem + pki.good.key_pem)
    sctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert)
    staple = fasttls.OCSPStapler(sctx).refresh()
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pki.ca_pem)
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(pki.good.cert_pem)
    staple_file = tmp_path / "staple.der"
    staple_file.write_bytes(staple)
    checked = subprocess.run(
        [openssl, "ocsp", "-respin", str(staple_file), "-issuer", str(ca), "-cert", str(leaf),
         "-CAfile", str(ca)], capture_output=True, timeout=WAIT)
    report = (checked.stdout + checked.stderr).decode("latin-1")
    assert checked.returncode == 0 and "Response verify OK" in report, report
    assert f"{leaf}: good" in report, report
    with ThreadedServer(sctx) as server:
        done = subprocess.run(
            [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername",
             "localhost", "-status", "-CAfile", str(ca), "-verify_return_error"],
            input=b"", capture_output=True, timeout=WAIT)
    out = done.stdout.decode("latin-1")
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out
    serials = [int(n, 16) for n in re.findall(r"Serial Number: ([0-9A-Fa-f]+)", out)]
    assert pki.good.serial in serials, out
    assert not server.errors, server.errors


def test_dropin_clients_see_the_staple(openssl, pki, tmp_path):
    """The drop-in's SSLSocket and SSLObject (the stdlib's classes on fasttls) get
    ocsp_response(); a plain stdlib `ssl` client (which cannot ask for status) still connects."""
    staple = openssl_response(openssl, pki, pki.good, tmp_path)
    cert = tmp_path / "good.pem"
    cert.write_bytes(pki.good.chain_pem + pki.good.key_pem)
    sctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert)
    sctx.set_ocsp_response(staple)
    cctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(cadata=pki.ca_pem.decode())
    cctx.require_ocsp_staple = True
    with ThreadedServer(sctx, count=3) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as raw:
            with cctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert isinstance(tls, ssl.SSLSocket)
                assert tls.ocsp_response() == staple
                assert tls.recv(2) == b"ok"
        with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as raw:
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = cctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
            bio_handshake_over_socket(raw, obj, incoming, outgoing)
            assert obj.ocsp_response() == staple
            for _ in range(20):  # read the server's b"ok" before closing (bounded)
                try:
                    assert obj.read(2) == b"ok"
                    break
                except ssl.SSLWantReadError:
                    incoming.write(raw.recv(65536))
            else:
                raise AssertionError("no b'ok' from the server")
        std = ssl.create_default_context(cadata=pki.ca_pem.decode())
        with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as raw:
            with std.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.recv(2) == b"ok"
    assert not server.errors, server.errors


def test_client_against_openssl_s_server_status_file(openssl, pki, tmp_path):
    """fasttls as the client of `openssl s_server -status_file`: the staple arrives, and
    require mode accepts it."""
    staple = openssl_response(openssl, pki, pki.good, tmp_path)
    status = tmp_path / "status.der"
    status.write_bytes(staple)
    cert_dir = tmp_path / "s_server"
    cert_dir.mkdir()
    (cert_dir / "cert.pem").write_bytes(pki.good.chain_pem)
    (cert_dir / "key.pem").write_bytes(pki.good.key_pem)
    server = OpenSSLServer(openssl, cert_dir, "-status_file", str(status))
    try:
        cctx = client_ctx(pki)
        cctx.require_ocsp_staple = True
        tls = fasttls.newtls("client", cctx, "localhost")
        with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as s:
            socket_handshake(s, tls, client=True)
            assert tls.ocsp_response() == staple
    finally:
        server.stop()


def dropin_server_ctx(issued, tmp_path, staple=None):
    cert = tmp_path / f"dropin-{issued.serial}.pem"
    cert.write_bytes(issued.chain_pem + issued.key_pem)
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    if staple is not None:
        ctx.set_ocsp_response(staple)
    return ctx


def dropin_client_ctx(pki):
    ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=pki.ca_pem.decode())
    ctx.require_ocsp_staple = True
    return ctx


def test_dropin_require_mode_refuses_a_missing_staple(pki, tmp_path):
    with ThreadedServer(dropin_server_ctx(pki.good, tmp_path)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT) as raw:
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                dropin_client_ctx(pki).wrap_socket(raw, server_hostname="localhost")
    assert "stapled no OCSP response" in str(info.value)
    assert server.errors  # the server's handshake failed too (bad_certificate_status_response)


def test_asyncio_transport_exposes_the_staple(openssl, pki, tmp_path):
    """fasttls.aio: the transport's ssl_object has ocsp_response(); require mode failures come
    out of open_connection as certificate errors."""
    import asyncio

    import fasttls.aio

    staple = openssl_response(openssl, pki, pki.good, tmp_path)
    stapling = dropin_server_ctx(pki.good, tmp_path, staple)
    bare = dropin_server_ctx(pki.other, tmp_path)

    async def handle(reader, writer):
        writer.write(b"ok")
        try:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ssl.SSLError, OSError):
            pass

    async def main():
        good = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=stapling)
        missing = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=bare)
        try:
            port = good.sockets[0].getsockname()[1]
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=dropin_client_ctx(pki), server_hostname="localhost"),
                WAIT)
            assert isinstance(writer.transport, fasttls.aio.SSLTransport)  # not sslproto
            assert writer.get_extra_info("ssl_object").ocsp_response() == staple
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"ok"
            writer.close()
            port = missing.sockets[0].getsockname()[1]
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.wait_for(asyncio.open_connection(
                    "127.0.0.1", port, ssl=dropin_client_ctx(pki),
                    server_hostname="localhost"), WAIT)
        finally:
            good.close()
            missing.close()

    loop = fasttls.aio.patch_loop(asyncio.new_event_loop())
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
