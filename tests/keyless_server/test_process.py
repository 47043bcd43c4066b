"""`python -m fasttls keyserver` as a real process: the client against a key server that is
killed mid-request, stalled (SIGSTOP), down, and restarted on the same port."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import fasttls.keyless as keyless
from support.interop import free_port, wait_for_output

from .conftest import ALLOWED_EDGE, request, start_key_server

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGSTOP/SIGKILL")


@pytest.fixture
def key_server_process(pki, tmp_path):
    procs = []

    def start(port=None):
        for attempt in range(5):  # free_port() races with other programs: retry another
            chosen = port or free_port()
            try:
                proc = start_key_server(pki, tmp_path, chosen, f"keyserver{len(procs)}")
            except AssertionError:
                if port is not None or attempt == 4:
                    raise
                continue
            procs.append(proc)
            return proc, chosen
        raise AssertionError("unreachable")

    yield start
    for proc in procs:
        if proc.proc.poll() is None:
            os.kill(proc.proc.pid, signal.SIGCONT)
        proc.stop()


def sign_in_thread(client, req, timeout):
    """Start client.sign in a thread; the result holds ("ok", sig) or ("error", exc)."""
    result = {}

    def run():
        started = time.monotonic()
        try:
            result["outcome"] = ("ok", client.sign(req, timeout))
        except keyless.KeylessError as exc:
            result["outcome"] = ("error", exc)
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_signs_through_the_command_line_server(pki, key_server_process, make_client):
    proc, port = key_server_process()
    client = make_client(port)
    assert client.sign(request(pki, "p256"))
    assert client.sign(request(pki, "rsa", 0x0804))
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki, key_id=b"\x07" * 32))
    assert info.value.reason == "UNKNOWN_KEY_ID"


def test_killed_mid_request_fails_fast_then_reconnects(pki, key_server_process, make_client):
    proc, port = key_server_process()
    client = make_client(port, timeout=20)
    client.sign(request(pki))  # connected
    os.kill(proc.proc.pid, signal.SIGSTOP)  # the next request is read by nobody...
    thread, result = sign_in_thread(client, request(pki), 20)
    time.sleep(0.3)
    assert "outcome" not in result
    os.kill(proc.proc.pid, signal.SIGKILL)  # ...and the key server dies with it in flight
    thread.join(15)
    assert not thread.is_alive()
    kind, exc = result["outcome"]
    assert kind == "error" and exc.reason == "CONNECTION_LOST", exc
    assert result["elapsed"] < 10  # failed on the loss, not at its 20 s deadline
    proc.proc.wait(10)

    with pytest.raises(keyless.KeylessError) as info:  # down: fails at once, names it
        client.sign(request(pki), 5)
    assert info.value.reason == "UNREACHABLE"
    assert "ConnectionRefusedError" in str(info.value) and str(port) in str(info.value)

    key_server_process(port)  # back on the same port: the client reconnects by itself...
    time.sleep(client.backoff)  # ...once past its back-off after the refused connect
    assert client.sign(request(pki))
    assert client.connects == 2


def test_stalled_key_server_times_out_within_the_deadline(pki, key_server_process,
                                                          make_client):
    proc, port = key_server_process()
    client = make_client(port, timeout=20)
    client.sign(request(pki))
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki), 0.5)
        elapsed = time.monotonic() - started
        assert info.value.reason == "TIMEOUT"
        assert 0.45 < elapsed < 5  # at its deadline (the bound only guards against a hang)

        async def stalled_async():
            return await client.sign_async(request(pki), 0.3)

        import asyncio
        with pytest.raises(keyless.KeylessError) as info:
            asyncio.run(asyncio.wait_for(stalled_async(), 5))
        assert info.value.reason == "TIMEOUT"
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)
    # Back: late answers to the timed-out requests are dropped, new ones are matched by id.
    data = request(pki)
    assert client.sign(data)
    assert client.connects == 1


def test_key_server_that_never_answers_the_handshake(pki, make_client):
    # A listener that accepts and says nothing: the connect times out within its deadline.
    import socket
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = make_client(listener.getsockname()[1], timeout=0.5)
        started = time.monotonic()
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki))
        assert info.value.reason == "TIMEOUT"
        assert time.monotonic() - started < 5


def test_command_line_errors_are_named(pki, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    done = subprocess.run([sys.executable, "-m", "fasttls", "keyserver", "--listen",
                           "127.0.0.1:0", "--key", str(bad), "--cert", str(pki.server),
                           "--client-ca", str(pki.edge_ca), "--allow", ALLOWED_EDGE],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "bad.pem" in done.stderr
    done = subprocess.run([sys.executable, "-m", "fasttls", "keyserver", "--key", str(bad)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "--cert" in done.stderr


def test_sighup_reloads_the_signing_keys(pki, key_server_process, make_client, tmp_path):
    proc, port = key_server_process()
    client = make_client(port)
    new_key_id = keyless.certificate_key_id(pki.unknown_web.cert_chain_pems[0].bytes())
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki, key_id=new_key_id))
    assert info.value.reason == "UNKNOWN_KEY_ID"
    keys = tmp_path / "keys"
    (keys / "new.pem").write_bytes(pki.unknown_web.private_key_pem.bytes())
    (keys / "rsa.pem").unlink()
    os.kill(proc.proc.pid, signal.SIGHUP)
    wait_for_output(proc.err, rb"SIGHUP: reloaded 3 signing keys", proc.proc)
    assert client.sign(request(pki, key_id=new_key_id))  # added
    assert client.sign(request(pki, "p256"))  # kept
    with pytest.raises(keyless.KeylessError) as info:  # removed
        client.sign(request(pki, "rsa", 0x0804))
    assert info.value.reason == "UNKNOWN_KEY_ID"
    # A file that does not load: the keys in use stay, the log names the file.
    (keys / "broken.pem").write_text("not a key")
    os.kill(proc.proc.pid, signal.SIGHUP)
    wait_for_output(proc.err, rb"reloading the keys failed, keeping the old ones: .*broken\.pem",
                    proc.proc)
    assert client.sign(request(pki, key_id=new_key_id))
    assert client.connects == 1  # the same connection throughout
