"""One server of the fleet, in its own process: TLS on 127.0.0.1, a trivial request, on asyncio
(`fasttls.aio` with a `fasttls.SSLContext`, or the stdlib's own `ssl` for the baseline).

    python -m fasttls.bench.fleet.server --name s0 --cert C --key K --mode tickets \
        --config '{"ticket_key_files": [...]}' [--impl fasttls|stdlib] [--version 1.2|1.3]

It prints "LISTENING <port>" once it accepts connections, reloads its sharing mode's state on
SIGHUP (ticket keys: the files again), and exits on SIGTERM or when its standard input closes
(so a harness that dies leaves no server behind).

Protocol, one request per connection: the client sends a line; "STATS" is answered with this
server's counters as JSON, anything else with `<name> <TLS version> reused=<0|1> gen=<reloads>`;
then the server closes the connection with close_notify."""
import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
from typing import Any, Dict, Optional

from fasttls.bench.fleet.sharing import apply_config

REQUEST_TIMEOUT = 10.0  # a client that sends no request line in time is dropped


class FleetServer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name = args.name
        self.mode = args.mode
        self.config: Dict[str, Any] = json.loads(args.config)
        self.impl = args.impl
        self.generation = 0
        self.connections = 0
        self.resumed = 0
        self.reload_errors = 0
        self.ctx = self._context(args)

    def _context(self, args: argparse.Namespace) -> ssl.SSLContext:
        if self.impl == "fasttls":
            import fasttls

            ctx: ssl.SSLContext = fasttls.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        if args.version:
            version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[args.version]
            ctx.minimum_version = ctx.maximum_version = version
        if self.mode != "none":
            if self.impl != "fasttls":
                raise SystemExit(f"the stdlib server cannot share state (mode {self.mode!r})")
            apply_config(self.mode, ctx, self.config)
        return ctx

    def reload(self) -> None:
        """SIGHUP: the mode's state again (ticket keys re-read from their files). A failed
        reload keeps the previous state and is counted, as nginx keeps its old configuration."""
        try:
            if self.mode != "none":
                apply_config(self.mode, self.ctx, self.config)
        except (OSError, ValueError, ssl.SSLError) as exc:
            self.reload_errors += 1
            print(f"{self.name}: reload failed: {exc}", file=sys.stderr, flush=True)
            return
        self.generation += 1

    def stats(self) -> Dict[str, Any]:
        result: Dict[str, Any] = {
            "name": self.name, "generation": self.generation, "connections": self.connections,
            "resumed": self.resumed, "reload_errors": self.reload_errors,
            "session_stats": self.ctx.session_stats(),
        }
        ticket_stats = getattr(self.ctx, "session_ticket_stats", None)
        if ticket_stats is not None:
            result["tickets"] = ticket_stats()
        return result

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT)
            ssl_object = writer.get_extra_info("ssl_object")
            if line.strip() == b"STATS":
                reply = json.dumps(self.stats())
            else:
                self.connections += 1
                reused = bool(ssl_object.session_reused)
                self.resumed += reused
                reply = (f"{self.name} {ssl_object.version()} reused={int(reused)} "
                         f"gen={self.generation}")
            writer.write(reply.encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass  # the client went away; nothing to answer
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), REQUEST_TIMEOUT)
            except (OSError, asyncio.TimeoutError, ssl.SSLError):
                pass

    async def run(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        # Standard input closing (the harness exited) stops the server too.
        stdin = sys.stdin.fileno()
        loop.add_reader(stdin, lambda: None if os.read(stdin, 4096) else stop.set())
        server = await asyncio.start_server(self.handle, "127.0.0.1", port, ssl=self.ctx,
                                            backlog=512)
        bound = server.sockets[0].getsockname()[1]
        print(f"LISTENING {bound}", flush=True)
        async with server:
            await stop.wait()


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="none")
    parser.add_argument("--config", default="{}")
    parser.add_argument("--impl", choices=("fasttls", "stdlib"), default="fasttls")
    parser.add_argument("--version", choices=("1.2", "1.3"))
    args = parser.parse_args(argv)
    server = FleetServer(args)
    loop = asyncio.new_event_loop()
    if args.impl == "fasttls":
        import fasttls.aio

        fasttls.aio.patch_loop(loop)
    try:
        loop.run_until_complete(server.run(args.port))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
