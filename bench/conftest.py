"""pytest-benchmark suite: ``python -m pytest bench/ --benchmark-only``.

Each workload of ``python -m fasttls bench`` appears twice (fasttls and stdlib) in one benchmark
group with the same amount of work per round, so the report compares them side by side (lower
time is better; ``extra_info["rate"]`` holds the best rate in the row's unit). The workloads live
in ``fasttls.bench``; this directory only drives them."""
import pytest
from support.requires import skip_or_fail

from fasttls.bench import ROWS, Env

# Operations per round, the same for both sides of a row (~5-30 ms a round here).
BATCH = {
    "msg64": 5000,          # messages
    "rec16k": 1000,         # 16 KiB records
    "write1m": 16,          # 1 MiB writes
    "handshake": 20,        # handshake pairs
    "sock_bulk": 32,        # MiB sent, one ack
    "sock_pingpong": 500,   # round trips
    "asyncio_aio_64": 2000,     # round trips
    "asyncio_aio_1m": 16,       # MiB echoed
    "uvloop_aio_64": 2000,      # round trips
    "uvloop_aio_1m": 16,        # MiB echoed
    "anyio_64": 1000,           # round trips
    "anyio_trio_64": 1000,      # round trips
    "uvicorn_keepalive": 2,     # seconds of wrk (a fixed_time row)
    "uvicorn_close": 2,         # seconds of wrk
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
        missing = row.missing()
        if missing:
            skip_or_fail(f"row {name} needs {', '.join(missing)}")
        n = BATCH[name]
        run = row.setup(bench_env, side)
        if row.fixed_time:
            return _run_fixed_time(benchmark, row, side, run, n, rounds)
        benchmark.group = f"{name}: {row.title}, {n} per round"
        benchmark.extra_info.update(side=side, unit=row.unit, ops_per_round=n, target=row.target)
        got = benchmark.pedantic(run, args=(n,), rounds=rounds, warmup_rounds=2, iterations=1)
        assert got == n * row.check, "the workload received something other than what was sent"
        if benchmark.stats is not None:      # None under --benchmark-disable
            benchmark.extra_info["rate"] = n * row.per_op / benchmark.stats.stats.min

    return run_row


def _run_fixed_time(benchmark, row, side, run, seconds, rounds):
    """A row whose load generator runs for a fixed time (wrk): every round lasts `seconds`, so
    pytest-benchmark's times say nothing; the rate of each round (wrk's count over wrk's own
    duration, checked by the row) is in ``extra_info["rates"]``, the best in ``["rate"]``."""
    rates = []

    def one_round():
        units, elapsed = run(seconds)
        rates.append(units * row.per_op / elapsed)

    benchmark.group = f"{row.name}: {row.title}, {seconds} s per round (compare extra_info rate)"
    benchmark.extra_info.update(side=side, unit=row.unit, seconds_per_round=seconds,
                                target=row.target)
    run(1)      # warm-up (outside pedantic: under --benchmark-disable it runs one round only)
    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    benchmark.extra_info.update(rates=rates, rate=max(rates))
