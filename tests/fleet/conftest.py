"""Fixtures of the fleet tests: a server identity written to files (the server processes load
them), haproxy, and factories for a fleet behind it and for its returning clients, shared by the
ticket-key and the session-store tests."""
import pytest
from support.certs import Identity
from support.fleet import CLIENTS
from support.pairs import TLS12, TLS13
from support.requires import require_program

import fasttls
from fasttls.bench.fleet import Fleet, ReturningClient, stdlib_client_context


@pytest.fixture(scope="session")
def fleet_identity(tmp_path_factory):
    """(Identity, {"cert", "key", "ca"} paths) for localhost."""
    identity = Identity("ecdsa", "localhost", "127.0.0.1")
    return identity, identity.write(tmp_path_factory.mktemp("fleet-pki"))


@pytest.fixture
def haproxy():
    return require_program("haproxy")


@pytest.fixture
def make_clients(fleet_identity):
    """make_clients(version, library="stdlib"): CLIENTS returning clients sharing one
    client context (the stdlib's `ssl` or fasttls) that trusts the fleet's CA; `version` "1.2",
    "1.3" or None (either)."""
    identity = fleet_identity[0]

    def make(version, library="stdlib"):
        if library == "fasttls":
            ctx = fasttls.newctx(cadata=identity.ca_pem)
            if version:
                ctx.minimum_version = ctx.maximum_version = {"1.2": TLS12,
                                                             "1.3": TLS13}[version]
        else:
            ctx = stdlib_client_context(identity.ca_pem, version)
        return [ReturningClient(i, ctx, library=library) for i in range(CLIENTS)]

    return make


@pytest.fixture
def start_fleet(tmp_path, fleet_identity, haproxy):
    """start_fleet(mode, version=None, **options): a Fleet (use it as a context manager) of
    the fleet identity's servers behind haproxy, working in the test's tmp_path."""
    identity, paths = fleet_identity

    def start(mode, version=None, **options):
        return Fleet(mode, str(tmp_path), str(paths["cert"]), str(paths["key"]),
                     version=version, haproxy=haproxy, ca_pem=identity.ca_pem, **options)

    return start
