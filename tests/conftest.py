"""Shared fixtures: certificates made at test time with trustme (session-scoped). The plain
helpers the tests import (pairs, peers, certificates, requirements) are in tests/support/."""
import datetime

import pytest
import trustme

from support.certs import KEY_TYPES, Identity
from support.hostile_certs import Certs


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


@pytest.fixture(scope="session")
def identities():
    """One server identity per key type, valid for localhost, 127.0.0.1 and ::1."""
    return {kt: Identity(kt, "localhost", "127.0.0.1", "::1") for kt in KEY_TYPES}


@pytest.fixture(scope="session", params=sorted(KEY_TYPES))
def identity(request, identities):
    return identities[request.param]


@pytest.fixture(scope="session")
def rsa_identity(identities):
    return identities["rsa"]


@pytest.fixture(scope="session")
def client_identity():
    """A client certificate from its own CA (servers that require client certs trust this CA)."""
    return Identity("ecdsa", "client.example")


@pytest.fixture(scope="session")
def stranger_identity():
    """A certificate for localhost from a CA nobody trusts."""
    return Identity("ecdsa", "localhost", "127.0.0.1", "client.example")


@pytest.fixture(scope="session")
def expired_identity():
    return Identity(
        "ecdsa",
        "localhost",
        not_before=datetime.datetime(2019, 1, 1),
        not_after=datetime.datetime(2020, 1, 1),
    )


@pytest.fixture(scope="session")
def hostile_certs():
    """Every certificate the hostile-peer cases use (tests/test_hostile_*.py)."""
    return Certs()
