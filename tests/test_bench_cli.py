"""`python -m fasttls bench`: structure of its output (no timing thresholds)."""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
from support.requires import IN_CI, skip_or_fail

from fasttls.bench import ROWS, SUITE, report
from fasttls.bench.harness import Row

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "fasttls", "bench", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def quick_json():
    proc = run_cli("--quick", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _extra(name):
    """The packages the installed fasttls's extra `name` lists, lower-case names."""
    try:
        requirements = metadata.requires("fasttls") or []
    except metadata.PackageNotFoundError:
        return set()
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements
            if re.search(r"extra\s*==\s*['\"]%s['\"]" % name, r)}


def _test_extra():
    return _extra("test")


def test_all_rows_present(quick_json):
    """Every row runs or is reported unavailable, in table order. Under CI=true only a row
    whose missing module is outside the test extra may be left out: fasttls's own modules
    (fasttls.aio), the test extra's packages and programs (wrk, from .ci/run) must be there."""
    unavailable = {u["name"]: u["needs"] for u in quick_json["unavailable"]}
    ran = [r["name"] for r in quick_json["rows"]]
    assert ran == [name for name in ROWS if name not in unavailable]
    assert set(ran) | set(unavailable) == set(ROWS)
    if IN_CI:
        extra = _test_extra()
        for name, needs in unavailable.items():
            for need in needs:
                module = need.split(" ")[0]
                assert not (module.startswith("fasttls") or module.split(".")[0] in extra
                            or "not on PATH" in need), f"row {name} left out: needs {need}"


def test_rates_and_ratio(quick_json):
    for r in quick_json["rows"]:
        assert r["fasttls"] > 0 and r["stdlib"] > 0, r
        assert math.isclose(r["ratio"], r["fasttls"] / r["stdlib"], rel_tol=1e-9), r
        assert r["target"] == ROWS[r["name"]].target
        assert r["met"] == (r["ratio"] >= r["target"])
        assert r["unit"] == ROWS[r["name"]].unit
        assert set(r["samples"]) == {"fasttls", "stdlib"}


def test_header(quick_json):
    assert quick_json["cipher"] == SUITE == "TLS_AES_256_GCM_SHA384"
    assert quick_json["tls_version"] == "TLSv1.3"
    v = quick_json["versions"]
    assert v["python"] and v["stdlib_openssl"].startswith("OpenSSL")
    # every connection on both sides negotiated the suite, both libraries, both roles seen
    seen = {tuple(x) for x in quick_json["negotiated"]}
    assert {(lib, role) for lib, role, _, _ in seen} == {
        ("fasttls", "client"), ("fasttls", "server"), ("stdlib", "client"), ("stdlib", "server")}
    assert {(c, ver) for _, _, c, ver in seen} == {(SUITE, "TLSv1.3")}


def test_rows_option_and_table():
    proc = run_cli("--quick", "--rows", "msg64")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert SUITE in out and "64 B messages" in out and "OpenSSL" in out
    assert "16 KiB records" not in out
    assert ("met" in out) or ("MISSED" in out)


def test_unknown_row():
    proc = run_cli("--rows", "nope")
    assert proc.returncode == 2
    assert "unknown row" in proc.stderr


def test_progress_on_stderr():
    proc = run_cli("--quick", "--rows", "msg64,ctx_default", "--json")
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)         # progress never mixes into the JSON
    assert "[1/2" in proc.stderr and "msg64: setting up fasttls" in proc.stderr
    assert "[2/2" in proc.stderr and "ctx_default: calibrating" in proc.stderr


def test_unavailable_row_reported(monkeypatch, capsys):
    """A row asked for by name whose requirement is missing is reported, not run (and not an
    error); in the JSON output it is listed with what it needs."""
    row = Row("needs_nothing_here", "a row that cannot run", "ops/s", 1, 1, 1.0,
              lambda env, side: None, requires="fasttls_bench_no_such_module")
    assert row.missing() == ["fasttls_bench_no_such_module (not installed)"]
    monkeypatch.setitem(ROWS, row.name, row)
    args = report_args(rows=row.name)
    assert report.main(args) == 0
    out = capsys.readouterr().out
    assert "a row that cannot run (ops/s)" in out
    assert "unavailable: needs fasttls_bench_no_such_module (not installed)" in out
    assert "0/0 targets met" in out
    args.json = True
    assert report.main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] == []
    assert doc["unavailable"] == [{"name": row.name, "workload": row.title,
                                   "needs": ["fasttls_bench_no_such_module (not installed)"]}]


def report_args(**overrides):
    from fasttls.__main__ import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--no-pin-malloc"])
    vars(args).update(overrides)
    return args


def test_plot(tmp_path):
    """--plot draws a PNG. matplotlib is optional: without it the test skips, and fails under
    CI=true only if the test extra lists it."""
    if importlib.util.find_spec("matplotlib") is None:     # not imported here: the CLI does
        if "matplotlib" in _test_extra():
            skip_or_fail("matplotlib (in the test extra) is not installed")
        pytest.skip("matplotlib is not installed")
    path = tmp_path / "ratios.png"
    proc = run_cli("--quick", "--rows", "msg64,ctx_default", "--plot", str(path))
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart: {path}" in proc.stdout


def test_plot_without_matplotlib(tmp_path):
    """Without matplotlib, --plot fails at once (before any row runs) and says what to
    install."""
    path = tmp_path / "ratios.png"
    code = ("import sys; sys.modules['matplotlib'] = None; "   # import matplotlib -> ImportError
            "from fasttls.__main__ import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "bench", "--rows", "msg64", "--plot",
                           str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2
    assert "--plot needs matplotlib" in proc.stderr and "fasttls[plot]" in proc.stderr
    assert proc.stdout == "" and not path.exists()


def test_bench_does_not_load_the_key_server():
    """`python -m fasttls bench` parses its command line and loads its harness without
    importing fasttls.keyless; `keyserver` loads it."""
    code = ("import sys; from fasttls.__main__ import build_parser; "
            "build_parser().parse_args(['bench', '--quick']); import fasttls.bench; "
            "print(sorted(m for m in sys.modules if m.startswith('fasttls.keyless')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    done = subprocess.run([sys.executable, "-m", "fasttls", "keyserver", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--answer-delay-ms" in done.stdout


@pytest.mark.parametrize("args, named", [
    (["--keyless", "--json"], "--json"),
    (["--keyless", "--rows", "msg64", "--memory"], "--memory, --rows"),
    (["--signing", "threads"], "--signing only applies with --keyless"),
])
def test_keyless_options_not_silently_ignored(args, named):
    """Options `bench --keyless` does not use (and --signing without it) are refused before
    anything runs, naming them, rather than dropped."""
    proc = run_cli(*args, timeout=60)
    assert proc.returncode == 2
    assert named in proc.stderr and proc.stdout == ""


def test_bench_extra_covers_every_row():
    """`pip install '.[bench]'` brings every library a row needs (fasttls's own modules
    aside), as the installed fasttls's metadata lists the extra."""
    bench = _extra("bench")
    assert bench, "the installed fasttls lists no bench extra (not installed from this tree?)"
    for row in ROWS.values():
        needs = (row.requires,) if isinstance(row.requires, str) else row.requires
        for module in needs:
            if not module.startswith("fasttls"):
                assert module.split(".")[0] in bench, f"row {row.name} needs {module}"
