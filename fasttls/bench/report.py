"""What ``python -m fasttls bench`` prints: the header (versions, cipher, method), one table line
per row as it finishes, the memory line of ``--memory``, the summary; or, with ``--json``, the
whole result as one JSON document."""
import json
import sys

from fasttls.bench import memory, plot
from fasttls.bench.harness import SUITE, pin_allocator, run_bench, versions
from fasttls.bench.progress import Progress
from fasttls.bench.rows import ROWS, select_rows

RULE = "-" * 98
WORK_WIDTH = 46    # the workload column: title and unit


def _fmt_rate(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def format_header(v, cipher_note):
    return "\n".join([
        "fasttls bench: fasttls vs stdlib ssl (MemoryBIO/SSLObject, SSLSocket), same process",
        f"Python {v['python']} ({v['implementation']}, {v['machine']}, {v['cpus']} CPUs)",
        f"OpenSSL: stdlib {v['stdlib_openssl']}; fasttls {v['fasttls_openssl'] or '?'}",
        cipher_note,
    ])


def _table_line(work, fasttls, stdlib, ratio, target, met):
    return (f"{work:<{WORK_WIDTH}} {fasttls:>13} {stdlib:>13} {ratio:>6.2f}x {target:>9}  "
            + ("met" if met else "MISSED"))


def format_row(r):
    """The table line of one row (``Result.as_dict()``): rates, ratio, target, met or MISSED."""
    return _table_line(f"{r['workload']} ({r['unit']})", _fmt_rate(r["fasttls"]),
                       _fmt_rate(r["stdlib"]), r["ratio"], ">= %.2fx" % r["target"], r["met"])


TABLE_HEAD = (f"{'workload':<{WORK_WIDTH}} {'fasttls':>13} {'stdlib':>13} {'ratio':>7} "
              f"{'target':>9}  \n" + RULE)


def format_memory(r):
    """The table line of ``--memory`` (``memory.measure()``): bytes per pair, lower is better."""
    return _table_line("idle connection pair (RSS bytes)", f"{r['fasttls']:,.0f}",
                       f"{r['stdlib']:,.0f}", r["ratio"], "<= %.2fx" % r["target"], r["met"]
                       ) + f"   ({r['pairs']:,} pairs)"


def format_unavailable(row, needs):
    """The table line of a row asked for by name that cannot run here."""
    return f"{row.title + ' (' + row.unit + ')':<{WORK_WIDTH}} unavailable: needs " + \
        ", ".join(needs)


def main(args):
    """The `bench` subcommand; `args` from fasttls.__main__'s parser. Returns the exit status."""
    names = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
    try:
        rows = select_rows(names)
    except ValueError as e:
        print(f"fasttls bench: {e}", file=sys.stderr)
        return 2
    if args.plot:
        problem = plot.require()
        if problem:
            print(f"fasttls bench: {problem}", file=sys.stderr)
            return 2
    # Rows asked for by name that cannot run here are reported, not run; by default the rows
    # whose requirements are missing are left out (and named in the header).
    unavailable = [(row, row.missing()) for row in (rows if names else ROWS.values())]
    unavailable = [(row, needs) for row, needs in unavailable if needs]
    left_out = {row.name for row, _ in unavailable}
    rows = [row for row in rows if row.name not in left_out]
    allocator_note = None if args.no_pin_malloc else pin_allocator()
    cipher_note = (f"cipher: {SUITE} over TLSv1.3 on both sides (fasttls: set_ciphersuites; "
                   "stdlib: OpenSSL default order), checked with cipher() on every connection")
    if not args.json:
        print(format_header(versions(), cipher_note))
        runs = ("2 runs (--quick; uvicorn rows: one 1 s wrk run)" if args.quick
                else "7 x 0.3 s runs (memory) / 21 x 0.1 s (socket) / 3 x 2 s wrk runs (uvicorn)")
        print(f"each row: same work on both sides, sides alternate, best of {runs} per side")
        print("cert: ephemeral ECDSA P-256 made in memory; clients verify CA + hostname; "
              "socket peer: one stdlib-ssl process for both sides")
        if allocator_note:
            print(allocator_note)
        if unavailable and not names:
            print("rows left out, not available here: " + "; ".join(
                f"{row.name} (needs {', '.join(needs)})" for row, needs in unavailable))
        print()
        print(TABLE_HEAD, flush=True)
        if names:
            for row, needs in unavailable:
                print(format_unavailable(row, needs), flush=True)

    status = Progress(len(rows))

    def progress(res):
        status.clear()
        if not args.json:
            print(format_row(res.as_dict()), flush=True)

    out = run_bench(rows, quick=args.quick, progress=progress, status=status.status)
    status.clear()
    out["allocator"] = allocator_note
    out["unavailable"] = [{"name": row.name, "workload": row.title, "needs": needs}
                          for row, needs in unavailable]
    if args.memory:
        out["memory"] = memory.measure(args.memory)
        if not args.json:
            print(format_memory(out["memory"]))
    if args.plot:
        if out["rows"]:
            plot.plot(out, args.plot)
            out["plot"] = args.plot
        else:
            print("fasttls bench: no row ran, no chart drawn", file=sys.stderr)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        met = sum(r["met"] for r in out["rows"])
        print(RULE)
        for key, note in out["notes"].items():
            print(f"{key}: {note}")
        print(f"{met}/{len(out['rows'])} targets met; ratio = fasttls/stdlib (higher is better); "
              f"MB = 10^6 bytes; {out['elapsed_s']:.1f} s")
        if out.get("plot"):
            print(f"chart: {out['plot']}")
    return 0
