"""pytest-benchmark suite: ``python -m pytest bench/ --benchmark-only``.

Each workload of ``python -m fasttls bench`` appears twice (fasttls and stdlib) in one benchmark
group with the same amount of work per round, so the report compares them side by side (lower
time is better; ``extra_info["rate"]`` holds the best rate in the row's unit). The workloads live
in ``fasttls.bench``; this directory only drives them."""
import pytest

from fasttls.bench import ROWS, Env

# Operations per round, the same for both sides of a row (~5-30 ms a round here).
BATCH = {
    "msg64": 5000,          # messages
    "rec16k": 1000,         # 16 KiB records
    "write1m": 16,          # 1 MiB writes
    "handshake": 20,        # handshake pairs
    "sock_bulk": 32,        # MiB sent, one ack
    "sock_pingpong": 500,   # round trips
}


def pytest_collection_modifyitems(config, items):
    # Keep the two sides of one workload next to each other.
    items.sort(key=lambda item: item.nodeid)


@pytest.fixture(scope="session")
def bench_env():
    with Env() as env:
        yield env


@pytest.fixture
def run_row(benchmark, bench_env):
    """``run_row(name, side, rounds)``: benchmark one side of one row of ``fasttls.bench``."""

    def run_row(name, side, rounds=20):
        row = ROWS[name]
        n = BATCH[name]
        run = row.setup(bench_env, side)
        benchmark.group = f"{name}: {row.title}, {n} per round"
        benchmark.extra_info.update(side=side, unit=row.unit, ops_per_round=n, target=row.target)
        got = benchmark.pedantic(run, args=(n,), rounds=rounds, warmup_rounds=2, iterations=1)
        assert got == n * row.check, "the workload received something other than what was sent"
        if benchmark.stats is not None:      # None under --benchmark-disable
            benchmark.extra_info["rate"] = n * row.per_op / benchmark.stats.stats.min

    return run_row
