"""Fixtures of the session-store tests (their plain helpers are in tests/support/stores.py)."""
import pytest


@pytest.fixture(scope="module")
def ident(identities):
    """The servers' identity: ECDSA, for localhost."""
    return identities["ecdsa"]
