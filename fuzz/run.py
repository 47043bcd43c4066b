"""Bounded fuzzing run (CI): each target of fuzz_tls.py for about --seconds, seeded with
fuzz/corpus/<target>/. Exits non-zero if any target finds something (an unexpected exception, a
wrong plaintext, a crash, an input slower than --timeout) or does not stop in time.

    python fuzz/run.py --seconds 60                  # every target, two at a time
    python fuzz/run.py --seconds 600 --target server_data --keep-corpus /tmp/corpus

New inputs found during the run go to a scratch directory (or --keep-corpus), never into the
committed seeds; findings are written to --artifacts (default: a scratch directory, printed).
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
NATIVE = ("client_handshake", "server_handshake", "client_data", "server_data", "client_closed",
          "server_closed")
TARGETS = NATIVE + tuple("dropin_" + t for t in NATIVE)  # as in fuzz_tls.py


def run_target(target, args, scratch):
    corpus = os.path.join(args.keep_corpus or scratch, target)
    os.makedirs(corpus, exist_ok=True)
    artifacts = os.path.join(args.artifacts or scratch, "artifacts", target) + os.sep
    os.makedirs(artifacts, exist_ok=True)
    command = [sys.executable, os.path.join(HERE, "fuzz_tls.py"), f"--target={target}",
               f"-max_total_time={args.seconds}", f"-timeout={args.timeout}",
               f"-rss_limit_mb={args.rss_limit_mb}", "-print_final_stats=1",
               f"-artifact_prefix={artifacts}", corpus, os.path.join(HERE, "corpus", target)]
    print(f"=== fuzz {target}: {args.seconds} s (started)", flush=True)
    try:
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=args.seconds + 300, text=True, errors="replace",
                              check=False)
    except subprocess.TimeoutExpired as exc:
        print((exc.stdout or "")[-5000:] if isinstance(exc.stdout, str) else "")
        return f"{target}: did not stop within {args.seconds + 300} s (hang)", 0
    output = proc.stdout
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output)
    executions = int(runs.group(1)) if runs else 0
    found = sorted(os.listdir(artifacts))
    if proc.returncode != 0 or found:
        print(output[-8000:])
        return (f"{target}: exit status {proc.returncode}, artifacts "
                f"{[os.path.join(artifacts, f) for f in found]}"), executions
    print(f"{target}: {executions} executions, no finding", flush=True)
    return None, executions


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--target", action="append", choices=TARGETS,
                        help="run only this target (repeatable); default: all")
    parser.add_argument("--timeout", type=int, default=10,
                        help="seconds one input may take before it counts as a hang")
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    parser.add_argument("--jobs", type=int, default=2,
                        help="targets run at the same time (default 2; each uses one CPU)")
    parser.add_argument("--keep-corpus", help="directory to keep the inputs found, per target")
    parser.add_argument("--artifacts", help="directory for findings (default: scratch, printed)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="fasttls-fuzz-")
    failures, total = [], {}
    targets = args.target or TARGETS
    with concurrent.futures.ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        results = pool.map(lambda t: run_target(t, args, scratch), targets)
        for target, (failure, executions) in zip(targets, results):
            total[target] = executions
            if failure:
                failures.append(failure)
    print("fuzz executions: " + ", ".join(f"{t} {n}" for t, n in total.items()))
    if failures:
        print("FUZZING FOUND PROBLEMS (inputs kept in %s):" % (args.artifacts or scratch))
        for failure in failures:
            print("  " + failure)
        return 1
    if not args.keep_corpus:
        shutil.rmtree(scratch, ignore_errors=True)
    print("fuzz: no finding")
    return 0


if __name__ == "__main__":
    sys.exit(main())
