"""Keyless servers, driven by each of fasttls's drivers (sans-IO by hand, the socket operations,
fasttls.helpers, the drop-in SSLSocket), against the stdlib client and curl; a signer that fails
or is slow ends in an alert the client sees within the timeout, a documented error on the
server, and the other connections are unaffected."""
import socket
import ssl
import threading
import time

import pytest
from support.interop import run_client
from support.keyless_server import KeylessServer
from support.pump import pump_sslobjects
from support.requires import require_program
from support.signers import FailingSigner, LocalSigner, SlowForNameSigner

import fasttls
from fasttls.bench.fleet.clients import read_until_closed

DRIVERS = ["sansio", "fd", "helpers", "dropin"]


def server_context(driver, identity, signer):
    if driver == "dropin":
        ctx = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        path = identity.write_dir / f"{identity.key_type}-chain.pem"
        path.write_bytes(identity.chain_pem)
        ctx.load_keyless_cert_chain(str(path), signer)
        return ctx
    ctx = fasttls.newctx()
    ctx.set_keyless_cert(identity.chain_pem, signer)
    return ctx


def stdlib_get(port, identity, hostname="localhost", version=None, timeout=10.0):
    ctx = ssl.create_default_context(cadata=identity.ca_pem.decode())
    if version is not None:
        ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=hostname) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return read_until_closed(lambda: sock.recv(65536)), sock.version()


@pytest.fixture
def with_dir(tmp_path):
    def attach(identity):
        identity.write_dir = tmp_path
        return identity
    return attach


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("key_type", ["ecdsa", "rsa"])
def test_stdlib_client(identities, with_dir, driver, version, key_type):
    identity = with_dir(identities[key_type])
    signer = LocalSigner(identity.key_pem)
    with KeylessServer(server_context(driver, identity, signer), driver) as server:
        data, got = stdlib_get(server.port, identity, version=version)
    assert data.endswith(b"keyless ok\n")
    assert got == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert [r.error for r in server.results] == [None]
    assert len(signer.requests) == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_curl(identities, with_dir, tmp_path, driver):
    curl = require_program("curl")
    identity = with_dir(identities["ecdsa"])
    ca = tmp_path / "ca.pem"
    ca.write_bytes(identity.ca_pem)
    signer = LocalSigner(identity.key_pem)
    with KeylessServer(server_context(driver, identity, signer), driver) as server:
        code, out, err = run_client(
            [curl, "-sS", "--http1.0", "--cacert", str(ca), "--max-time", "10", "--resolve",
             f"localhost:{server.port}:127.0.0.1", f"https://localhost:{server.port}/"],
            tmp_path, "curl")
    assert code == 0, err
    assert out == b"keyless ok\n"
    assert len(signer.requests) == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_failing_signer(identities, with_dir, driver):
    identity = with_dir(identities["ecdsa"])
    with KeylessServer(server_context(driver, identity, FailingSigner(identity.key_pem)),
                       driver) as server:
        with pytest.raises(ssl.SSLError, match="(?i)internal.error"):
            stdlib_get(server.port, identity)
        deadline = time.monotonic() + 10
        while server.results and server.results[0].seconds is None and time.monotonic() < deadline:
            time.sleep(0.01)
    (result,) = server.results
    assert isinstance(result.error, fasttls.KeylessError), result.error
    assert isinstance(result.error, ssl.SSLError)
    assert result.error.reason == "UNKNOWN_KEY_ID"
    assert "does not know this key" in str(result.error)


@pytest.mark.parametrize("driver", DRIVERS)
def test_slow_signer_times_out_others_unaffected(identities, with_dir, driver):
    identity = with_dir(identities["ecdsa"])
    signer = SlowForNameSigner(identity.key_pem, "localhost", delay=30.0)
    server = KeylessServer(server_context(driver, identity, signer), driver, sign_timeout=0.5)
    errors = []

    def slow_client():
        try:
            stdlib_get(server.port, identity, hostname="localhost")
        except Exception as exc:
            errors.append((exc, time.monotonic()))

    with server:
        started = time.monotonic()
        thread = threading.Thread(target=slow_client)
        thread.start()
        for _ in range(500):  # the slow one is waiting for its signature
            if signer.requests:
                break
            time.sleep(0.01)
        # meanwhile another connection (another name: a fast signature) completes
        other = identity  # same CA; the certificate does not name 127.0.0.1 here
        ctx = ssl.create_default_context(cadata=other.ca_pem.decode())
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="fast.example") as sock:
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert sock.recv(65536)
                fast_done = time.monotonic()
        thread.join(15)
    assert not thread.is_alive()
    (exc, failed_at), = errors
    assert isinstance(exc, ssl.SSLError) and "internal" in str(exc).lower(), exc
    # the alert came within the timeout, not after the signer's 30 s
    assert failed_at - started < 10
    assert fast_done < failed_at
    slow = [r for r in server.results if r.error is not None]
    assert len(slow) == 1 and slow[0].error.reason == "TIMEOUT", [r.error for r in server.results]


def test_dropin_sslobject_with_stdlib_sslobject(identities, with_dir):
    """The drop-in's memory-BIO SSLObject (what asyncio's sslproto drives): do_handshake
    resolves the signing pause itself (blocking, bounded by the signer) and goes on."""
    identity = with_dir(identities["rsa"])
    signer = LocalSigner(identity.key_pem)
    sctx = server_context("dropin", identity, signer)
    cctx = ssl.create_default_context(cadata=identity.ca_pem.decode())
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = cctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    pump_sslobjects(client, server, c_in, c_out, s_in, s_out)
    assert len(signer.requests) == 1 and signer.requests[0].scheme_name == "rsa_pss_rsae_sha256"
    client.write(b"over memory")
    s_in.write(c_out.read())
    assert server.read(100) == b"over memory"
