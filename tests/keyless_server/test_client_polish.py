"""KeylessClient and KeylessError details: the error pickles (and so crosses processes); the
client takes a native fasttls.Context as well as the drop-in SSLContext; after a failed
connect it backs off (bounded) instead of trying again on every request."""
import concurrent.futures
import pickle
import socket

import pytest

import fasttls
import fasttls.keyless as keyless

from .conftest import request


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once closed


def test_keyless_error_pickles_with_its_reason_and_attributes():
    error = fasttls.KeylessError("the key server did not answer", "TIMEOUT")
    error.alert = b"\x15\x03\x03\x00\x02\x02\x50"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is fasttls.KeylessError
    assert str(copy) == str(error) == "the key server did not answer"
    assert copy.reason == "TIMEOUT" and copy.alert == error.alert
    assert copy.args == error.args


def test_a_clients_error_crosses_a_process_boundary(pki, make_client):
    client = make_client(closed_port(), timeout=2)
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki))
    with concurrent.futures.ProcessPoolExecutor(1) as pool:  # pickled there and back
        back = pool.submit(pickle.loads, pickle.dumps(info.value)).result(60)
    assert isinstance(back, keyless.KeylessError) and back.reason == "UNREACHABLE"
    assert str(back) == str(info.value)


def test_client_takes_a_native_context(pki, key_server):
    ctx = fasttls.newctx(certfile=str(pki.edge), cafile=str(pki.server_ca))
    assert isinstance(ctx, fasttls.Context)
    with keyless.KeylessClient("127.0.0.1", key_server.port, ctx, timeout=5) as client:
        assert client.sign(request(pki))
    # Still verified: a native context that does not trust the key server's CA is refused.
    untrusting = fasttls.newctx(certfile=str(pki.edge), cafile=str(pki.web_ca))
    with keyless.KeylessClient("127.0.0.1", key_server.port, untrusting, timeout=5) as client:
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki))
    assert info.value.reason == "UNREACHABLE" and "verification" in str(info.value)


def test_client_refuses_other_contexts(pki):
    import ssl
    with pytest.raises(TypeError, match="SSLContext or fasttls.Context"):
        keyless.KeylessClient("127.0.0.1", 1, ssl.create_default_context())


def test_client_backs_off_after_a_failed_connect(pki, make_client):
    import time
    client = make_client(closed_port(), timeout=2, backoff=1.0, max_backoff=1.5)
    with pytest.raises(keyless.KeylessError, match="ConnectionRefusedError"):
        client.sign(request(pki))
    assert client.connect_attempts == 1
    for _ in range(5):  # within the back-off: failed at once, no new attempt
        with pytest.raises(keyless.KeylessError) as info:
            client.sign(request(pki))
        assert info.value.reason == "UNREACHABLE"
        assert "not reconnecting" in str(info.value) and "ConnectionRefused" in str(info.value)
    assert client.connect_attempts == 1
    time.sleep(1.05)
    with pytest.raises(keyless.KeylessError, match="ConnectionRefusedError"):
        client.sign(request(pki))
    assert client.connect_attempts == 2  # tried again once the back-off was over
    with pytest.raises(keyless.KeylessError) as info:
        client.sign(request(pki))
    assert "after 2 failed attempts" in str(info.value)
    assert client.connect_attempts == 2
    # Doubling with each failure in a row, up to max_backoff.
    assert [client._backoff_after(n) for n in (1, 2, 3, 100)] == [1.0, 1.5, 1.5, 1.5]
    other = make_client(closed_port(), backoff=0.1, max_backoff=2.0)
    assert [other._backoff_after(n) for n in (1, 2, 3, 4, 5, 6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_a_connection_made_resets_the_back_off(pki, key_server, make_client):
    import time
    client = make_client(key_server.port, timeout=2, backoff=0.2)
    key_server.stop_thread()
    with pytest.raises(keyless.KeylessError):
        client.sign(request(pki))
    server = keyless.KeyServer(pki.keys(), pki.server_context(), ["edge1.example"],
                               port=key_server.port).start_thread()
    try:
        time.sleep(0.25)
        assert client.sign(request(pki))  # after the back-off: connected
        assert client._failures == 0
    finally:
        server.stop_thread()


def test_back_off_settings_are_checked(pki):
    with pytest.raises(ValueError, match="backoff"):
        keyless.KeylessClient("127.0.0.1", 1, pki.client_context(), backoff=2, max_backoff=1)
