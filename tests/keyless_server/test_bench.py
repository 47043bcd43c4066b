"""`python -m fasttls bench --keyless`: the measurement runs end to end and reports every row
beside its in-process baseline."""
import re
import subprocess
import sys


def test_keyless_bench_reports_every_row(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fasttls", "bench", "--keyless", "--quick"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rates = dict(re.findall(r"^  (.+?)\s+([\d,]+)/s$", done.stdout, re.M))
    assert len(rates) == 9, done.stdout
    assert sum(name.startswith("baseline") for name in rates) == 3
    assert all(int(rate.replace(",", "")) > 0 for rate in rates.values())
