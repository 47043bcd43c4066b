"""Fixtures of the fleet tests: a server identity written to files (the server processes load
them), and haproxy."""
import pytest

from support.certs import Identity
from support.requires import require_program


@pytest.fixture(scope="session")
def fleet_identity(tmp_path_factory):
    """(Identity, {"cert", "key", "ca"} paths) for localhost."""
    identity = Identity("ecdsa", "localhost", "127.0.0.1")
    return identity, identity.write(tmp_path_factory.mktemp("fleet-pki"))


@pytest.fixture
def haproxy():
    return require_program("haproxy")
