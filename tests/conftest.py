"""Shared fixtures: certificates made at test time with trustme, peers found on PATH, and an
in-memory pump that shuttles ciphertext between two sans-IO endpoints."""
import os
import shutil

import pytest
import trustme

IN_CI = os.environ.get("CI") == "true"


def require_program(name):
    """Path of an external peer program; a missing one skips locally and fails under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = f"peer program {name!r} is not installed"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing peer is a failure)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ca():
    return trustme.CA()


@pytest.fixture(scope="session")
def ec_ca():
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture(scope="session")
def server_cert(ca):
    return ca.issue_cert("localhost", "127.0.0.1", "::1")


@pytest.fixture(scope="session")
def ec_server_cert(ec_ca):
    return ec_ca.issue_cert("localhost", "127.0.0.1", "::1", key_type=trustme.KeyType.ECDSA)


def pump(client, server, limit=50):
    """Run the handshake of two fasttls TLS objects in memory until both finish.

    The server's last flight under TLS 1.3 (session tickets) is post-handshake data, so the
    client consumes it with read(). Bounded: fails after `limit` round trips."""
    to_server = client.handshake()
    for _ in range(limit):
        to_client = server.handshake(to_server)
        if client.finished():
            assert client.read(to_client) == b""
            return
        to_server = client.handshake(to_client)
        if client.finished() and server.finished():
            assert to_server == b""
            return
    raise AssertionError("handshake did not complete within %d round trips" % limit)
