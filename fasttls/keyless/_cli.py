"""``python -m fasttls keyserver``: a key server from the command line.

    python -m fasttls keyserver --listen 127.0.0.1:7000 --key keys/ --key www.pem \
        --cert keyserver.pem --cert-key keyserver.key --client-ca edge-ca.pem \
        --allow edge1.example --allow sha256:3f…

Prints "listening on HOST:PORT" once it accepts connections (port 0 picks a free one), runs
until SIGINT/SIGTERM; SIGHUP reloads the signing keys (KeyServer.reload_keys).
"""
import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import Any, Optional

__all__ = ["add_parser", "main"]


def _host_port(text: str) -> "tuple[str, int]":
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "keyserver", help="run a keyless key server (docs/KEYLESS.md)",
        description="Sign TLS server signature inputs for allow-listed edges over mutual TLS.")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 7000),
                   metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:7000)")
    p.add_argument("--key", action="append", required=True, metavar="PATH",
                   help="a signing key (PEM file) or a directory of *.pem/*.key; repeatable")
    p.add_argument("--key-password-env", metavar="VAR",
                   help="environment variable holding the signing keys' password")
    p.add_argument("--cert", required=True, metavar="FILE",
                   help="the key server's own TLS certificate chain (PEM)")
    p.add_argument("--cert-key", metavar="FILE",
                   help="the key server's own TLS private key (default: in --cert)")
    p.add_argument("--client-ca", required=True, metavar="FILE",
                   help="the CA (PEM) that issues edge certificates; no other is trusted")
    p.add_argument("--allow", action="append", required=True, metavar="NAME",
                   help="an edge identity answered: DNS name / CN of its certificate, or "
                        "sha256:HEX of the certificate; repeatable")
    p.add_argument("--workers", type=int, help="signing threads for RSA keys "
                                               "(default: min(8, CPUs))")
    p.add_argument("--signing", choices=("auto", "inline", "threads"), default="auto",
                   help="where signatures are made: auto (ECDSA inline on the event loop, RSA "
                        "in the signing threads), or all inline, or all in threads")
    p.add_argument("--max-pending", type=int, default=4096,
                   help="requests in flight before answering 'overloaded' (default 4096)")
    p.add_argument("--answer-delay-ms", type=float, default=0.0, metavar="MS",
                   help="hold every answer back this long: a stand-in for a distant key server "
                        "in tests and demonstrations (default 0)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def main(args: argparse.Namespace) -> int:
    from fasttls.keyless._contexts import server_context
    from fasttls.keyless._errors import KeylessError
    from fasttls.keyless._keys import KeyStore
    from fasttls.keyless._server import KeyServer
    from fasttls._errors import SSLError

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    password: Optional[str] = None
    if args.key_password_env:
        password = os.environ.get(args.key_password_env)
        if password is None:
            print(f"keyserver: ${args.key_password_env} is not set", file=sys.stderr)
            return 2
    try:
        keys = KeyStore()
        for path in args.key:
            keys.load(path, password)
        context = server_context(args.cert, args.cert_key, args.client_ca)
        host, port = args.listen
        server = KeyServer(keys, context, args.allow, host=host, port=port,
                           workers=args.workers, max_pending=args.max_pending,
                           signing=args.signing, answer_delay=args.answer_delay_ms / 1000)
    except (OSError, SSLError, KeylessError, ValueError) as exc:
        print(f"keyserver: {exc}", file=sys.stderr)
        return 2
    for key in keys:
        logging.getLogger("fasttls.keyless").info("key %s (%s) from %s", key.key_id.hex(),
                                                  key.key_type, key.name)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:
        print(f"keyserver: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}",
              file=sys.stderr)
        return 1
    return 0


async def _serve(server: Any) -> None:
    await server.start()
    print(f"listening on {server.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if hasattr(signal, "SIGHUP"):
        loop.add_signal_handler(signal.SIGHUP, _reload, server)
    try:
        await stop.wait()
    finally:
        await server.close()


def _reload(server: Any) -> None:
    """SIGHUP: read the signing keys again; a bad file keeps the old keys (and says which)."""
    log = logging.getLogger("fasttls.keyless")
    try:
        count = server.reload_keys()
    except Exception as exc:  # the server keeps serving with the keys it has
        log.error("SIGHUP: reloading the keys failed, keeping the old ones: %s", exc)
        return
    log.warning("SIGHUP: reloaded %d signing keys", count)
    for key in server.keys:
        log.info("key %s (%s) from %s", key.key_id.hex(), key.key_type, key.name)
