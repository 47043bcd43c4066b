"""`python -m fasttls bench`: structure of its output (no timing thresholds)."""
import json
import math
import os
import subprocess
import sys

import pytest

from fasttls.bench import ROWS, SUITE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "fasttls", "bench", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def quick_json():
    proc = run_cli("--quick", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_all_rows_present(quick_json):
    assert [r["name"] for r in quick_json["rows"]] == list(ROWS)


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
