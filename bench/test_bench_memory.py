"""In-memory workloads: sans-IO fasttls pair vs stdlib SSLObject/MemoryBIO pair."""
import pytest

from fasttls.bench import SIDES


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("name", ["msg64", "rec16k", "write1m", "handshake"])
def test_memory(run_row, name, side):
    run_row(name, side)
