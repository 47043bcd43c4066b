"""Shared fixtures: certificates made at test time with trustme, peers found on PATH, and an
in-memory pump that shuttles ciphertext between two sans-IO endpoints."""
import os
import shutil

import pytest
import trustme

from tls_pump import pump  # noqa: F401  (re-exported for the tests)

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
