"""Command line: ``python -m fasttls bench [--quick] [--json] [--no-pin-malloc] [--memory [PAIRS]]
[--rows NAME,...] [--plot FILE.png]``, ``python -m fasttls bench --keyless [--quick]`` (the
harness is the fasttls.bench package, imported only for ``bench``), and ``python -m fasttls
keyserver ...`` (fasttls.keyless, docs/KEYLESS.md, imported only for ``keyserver``)."""
import argparse
import sys


def build_parser(keyserver: bool = False):
    """The command line's parser; the keyserver subcommand's options (which import
    fasttls.keyless) only with `keyserver`."""
    parser = argparse.ArgumentParser(prog="python -m fasttls", description="fasttls tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    bench = sub.add_parser(
        "bench", help="compare fasttls with the stdlib ssl module on the same work",
        description="Benchmark fasttls against the stdlib ssl module (same TLS 1.3 cipher suite, "
                    "same process, interleaved runs, best of several).")
    bench.add_argument("--quick", action="store_true", help="short runs (a few seconds in all)")
    bench.add_argument("--json", action="store_true", help="print machine-readable results")
    bench.add_argument("--no-pin-malloc", action="store_true",
                       help="leave glibc malloc's thresholds adaptive (rows then depend on heap "
                            "history; see the allocator line of the output)")
    bench.add_argument("--memory", type=int, nargs="?", const=10_000, metavar="PAIRS",
                       help="also measure memory per idle connection pair (default 10,000 "
                            "pairs, about 30 s)")
    bench.add_argument("--rows", metavar="NAME,...",
                       help="rows to run, by the names of the JSON output (e.g. msg64, "
                            "asyncio_aio_64, uvicorn_close; an unknown name lists them all); "
                            "default: every row whose optional requirements are installed")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="also draw the ratios as a bar chart (needs matplotlib: "
                            "pip install 'fasttls[plot]')")
    bench.add_argument("--keyless", action="store_true",
                       help="instead: keyless signatures per second through one KeylessClient "
                            "against a key server in a child process (fasttls.bench.keyless)")
    bench.add_argument("--signing", choices=("auto", "inline", "threads"),
                       help="with --keyless: the key server's --signing (default auto)")
    if keyserver:
        from fasttls.keyless import _cli as keyserver_cli

        keyserver_cli.add_parser(sub)
    else:
        # Listed in --help without importing fasttls.keyless; main() builds the real one
        # when the command is keyserver.
        sub.add_parser("keyserver", help="run a keyless key server (docs/KEYLESS.md)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(keyserver=argv[:1] == ["keyserver"])
    args = parser.parse_args(argv)
    if args.command == "bench":
        if args.keyless:
            # The keyless bench has its own report: options of the main one would be ignored.
            ignored = [option for option, value in (
                ("--json", args.json), ("--no-pin-malloc", args.no_pin_malloc),
                ("--memory", args.memory is not None), ("--rows", args.rows is not None),
                ("--plot", args.plot is not None)) if value]
            if ignored:
                parser.error(f"bench --keyless takes only --quick and --signing, "
                             f"not {', '.join(ignored)}")
            from fasttls.bench import keyless as keyless_bench

            return keyless_bench.main(["--seconds", "0.5" if args.quick else "2",
                                       "--signing", args.signing or "auto"])
        if args.signing is not None:
            parser.error("bench --signing only applies with --keyless")
        from fasttls import bench  # only here: the runtime package never imports the harness

        return bench.main(args)
    if args.command == "keyserver":
        from fasttls.keyless import _cli as keyserver_cli

        return keyserver_cli.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
