"""Loopback workloads: fasttls socket helpers vs ssl.SSLSocket, against one stdlib-ssl peer
process (the same for both sides)."""
import pytest

from fasttls.bench import SIDES


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", ["sock_bulk", "sock_pingpong"])
def test_socket(run_row, name, side):
    run_row(name, side, rounds=30)
