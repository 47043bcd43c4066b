"""Benchmark rows for a real ASGI server under a real load generator: uvicorn (uvloop and
httptools when installed, as ``uvicorn[standard]`` gives) serving a tiny app over TLS in a child
process, ``wrk`` driving it on 127.0.0.1 with keep-alive connections, and with one handshake per
request (``Connection: close``).

fasttls side: the child calls ``fasttls.inject_into_ssl()`` and ``fasttls.aio.install()`` before
uvicorn starts, so uvicorn's own ``ssl.SSLContext(...)`` is fasttls's and its loop uses
fasttls.aio's transport; stdlib side: plain uvicorn. After every wrk run the parent asks the
child (GET /stats) which context class, loop, HTTP protocol and transports it used, which
cipher every connection negotiated, and how many requests it served: the fasttls side must have
run on fasttls's context and transport, both sides on the benchmark's suite over TLS 1.3, and
the server must have answered at least what wrk counted. wrk's own errors (connect, read,
write, timeout, non-2xx) and every response body (checked by a wrk Lua script) must be clean.

The rate is wrk's: responses counted by the script over wrk's own measured duration. wrk keeps
the session of a closed connection and offers it on the next one, so with ``Connection: close``
almost every handshake is a resumption (TLS 1.3 PSK with a fresh ECDHE share) on both sides, as
with browsers; the note after the table counts connections and resumptions per side."""
import http.client
import json
import os
import re
import subprocess
import sys

from fasttls.bench.harness import HOSTNAME, BenchError, Row

BODY = b"ok\n"
WRK_CONNECTIONS = 8     # one wrk thread: the server (one Python process) is the bottleneck
WRK_TIMEOUT = 5         # seconds wrk waits for one response before counting a timeout
ENTRIES = {"fasttls": "fasttls.bench.asgi:uvicorn_fasttls_main",
           "stdlib": "fasttls.bench.asgi:uvicorn_stdlib_main"}

# Counts every response (status 200 and the exact body, or not) in each thread; done() prints
# the totals and wrk's own duration in microseconds on one line the parent parses.
WRK_SCRIPT = """\
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; bad = 0 end
function response(status, headers, body)
  if status == 200 and body == "%s" then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local o, b = 0, 0
  for _, t in ipairs(threads) do o = o + t:get("ok"); b = b + t:get("bad") end
  io.write(string.format("fasttls-bench ok=%%d bad=%%d us=%%d\\n", o, b, summary.duration))
end
""" % BODY.decode().replace("\n", "\\n")


# ---------------------------------------------------------------------------------------------
# the child: uvicorn serving the app


_stats = {"requests": 0, "connections": 0, "resumed": 0, "transports": [], "ciphers": []}


def _qualname(obj_type):
    return f"{obj_type.__module__}.{obj_type.__qualname__}"


async def app(scope, receive, send):
    """The ASGI app: BODY for any GET, the child's statistics as JSON for /stats."""
    if scope["type"] != "http":
        return
    _stats["requests"] += 1
    body = json.dumps(_stats).encode() if scope["path"] == "/stats" else BODY
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _recording_protocol():
    """uvicorn's own HTTP protocol class (httptools when installed, as uvicorn's "auto" picks),
    also noting each connection's transport class and negotiated cipher (a set lookup and a
    get_extra_info per connection, on both sides)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
        _stats["http"] = "httptools"
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
        _stats["http"] = "h11"
    transports, ciphers = set(), set()

    class Recording(base):
        def connection_made(self, transport):
            _stats["connections"] += 1
            name = _qualname(type(transport))
            if name not in transports:
                transports.add(name)
                _stats["transports"] = sorted(transports)
            sslobj = transport.get_extra_info("ssl_object")
            if sslobj is not None and sslobj.session_reused:
                _stats["resumed"] += 1
            cipher = transport.get_extra_info("cipher")
            cipher = tuple(cipher[:2]) if cipher else (None, None)
            if cipher not in ciphers:
                ciphers.add(cipher)
                _stats["ciphers"] = sorted(ciphers, key=str)
            super().connection_made(transport)

    return Recording


def _serve(side):
    import asyncio
    import socket

    from fasttls.bench.peer import announce_peer

    certfile, keyfile = sys.argv[1], sys.argv[2]
    if side == "fasttls":
        import fasttls
        import fasttls.aio

        fasttls.inject_into_ssl()
        fasttls.aio.install()
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, ssl_certfile=certfile, ssl_keyfile=keyfile,
                            http=_recording_protocol(), lifespan="off", log_level="warning",
                            access_log=False)
    config.load()       # builds uvicorn's ssl.SSLContext(...) now, so the class can be noted
    _stats["context"] = _qualname(type(config.ssl))
    _stats["uvicorn"] = uvicorn.__version__

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            _stats["loop"] = _qualname(type(asyncio.get_running_loop()))
            await super().startup(sockets=sockets)
            announce_peer(*sock.getsockname())      # serving now

    Server(config).run(sockets=[sock])


def uvicorn_fasttls_main():
    """Peer entry (see ``peer``): uvicorn with fasttls injected and fasttls.aio installed."""
    _serve("fasttls")


def uvicorn_stdlib_main():
    """Peer entry (see ``peer``): plain uvicorn on the stdlib ssl module."""
    _serve("stdlib")


# ---------------------------------------------------------------------------------------------
# the parent: wrk and the checks


def fetch_stats(env, port):
    """The child's statistics (one GET /stats over a stdlib TLS connection that verifies it)."""
    conn = http.client.HTTPSConnection(HOSTNAME, port, context=env.std_client_ctx, timeout=10)
    try:
        conn.request("GET", "/stats")
        response = conn.getresponse()
        if response.status != 200:
            raise BenchError(f"uvicorn /stats answered {response.status}")
        return json.loads(response.read())
    finally:
        conn.close()


def check_stats(env, side, stats):
    """The side ran on what it claims: fasttls's context and fasttls.aio's transport (or none
    of fasttls at all), TLS 1.3 with the benchmark's suite on every connection."""
    fasttls_context = stats["context"].startswith("fasttls.")
    fasttls_transports = [t.startswith("fasttls.aio") for t in stats["transports"]]
    if side == "fasttls":
        ok = fasttls_context and fasttls_transports and all(fasttls_transports)
    else:
        ok = stats["context"] == "ssl.SSLContext" and not any(fasttls_transports)
    if not ok:
        raise BenchError(f"uvicorn, {side} side: context {stats['context']}, transports "
                         f"{stats['transports']}, loop {stats.get('loop')}")
    for name, version in stats["ciphers"]:
        env.check_negotiated(side, "server", name, version)


def wrk_version():
    proc = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    found = re.search(r"wrk (\S+)", proc.stdout + proc.stderr)
    return found.group(1) if found else "?"


def write_script(env):
    path = os.path.join(env.tmpdir, "fasttls-bench.lua")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(WRK_SCRIPT)
    return path


def parse_wrk(output):
    """(responses ok, seconds) from wrk's output with WRK_SCRIPT; BenchError on any error wrk
    reports or any response the script found wrong."""
    problems = [line.strip() for line in output.splitlines()
                if line.strip().startswith(("Socket errors:", "Non-2xx or 3xx responses:"))]
    found = re.search(r"^fasttls-bench ok=(\d+) bad=(\d+) us=(\d+)$", output, re.MULTILINE)
    if not found:
        raise BenchError(f"wrk printed no result line:\n{output}")
    ok, bad, micros = (int(x) for x in found.groups())
    if bad:
        problems.append(f"{bad} responses not 200 {BODY!r}")
    if problems:
        raise BenchError("wrk: " + "; ".join(problems))
    return ok, micros / 1e6


def setup_uvicorn(name, close):
    """``setup(env, side)`` of the uvicorn row `name`; `close`: one handshake per request."""

    def setup(env, side):
        port = env.peer(ENTRIES[side])[1]
        stats = fetch_stats(env, port)
        check_stats(env, side, stats)
        env.notes.setdefault("uvicorn", f"uvicorn {stats['uvicorn']} in a child process "
                             f"({stats['http']}), wrk {wrk_version()} -t1 -c{WRK_CONNECTIONS} "
                             "on 127.0.0.1")
        command = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"--timeout={WRK_TIMEOUT}s",
                   "-s", write_script(env)]
        if close:
            command += ["-H", "Connection: close"]
        url = f"https://127.0.0.1:{port}/"

        def run(seconds):
            duration = max(1, round(seconds))       # wrk takes whole seconds
            before = fetch_stats(env, port)["requests"]
            proc = subprocess.run(command + [f"-d{duration}s", url], capture_output=True,
                                  text=True, timeout=duration + 3 * WRK_TIMEOUT + 10)
            if proc.returncode != 0:
                raise BenchError(f"wrk exited {proc.returncode}: {proc.stderr or proc.stdout}")
            ok, elapsed = parse_wrk(proc.stdout)
            after = fetch_stats(env, port)
            check_stats(env, side, after)
            served = after["requests"] - before - 1   # less this /stats request itself
            if served < ok:
                raise BenchError(f"uvicorn served {served} requests, wrk counted {ok}")
            env.notes[f"{name} {side}"] = (
                f"context {after['context']}, loop {after['loop']}, transport "
                f"{', '.join(after['transports'])}; "
                f"{after['connections'] - stats['connections']:,} connections, "
                f"{after['resumed'] - stats['resumed']:,} resumed")
            return ok, elapsed

        return run

    return setup


ROWS = [
    Row("uvicorn_keepalive", "uvicorn + wrk, keep-alive", "requests/s", 1, 1, 1.2,
        setup_uvicorn("uvicorn_keepalive", close=False), seconds=2, repeat=3, fixed_time=True,
        requires=("uvicorn", "fasttls.aio"), tools=("wrk",)),
    Row("uvicorn_close", "uvicorn + wrk, Connection: close", "requests/s", 1, 1, 1.1,
        setup_uvicorn("uvicorn_close", close=True), seconds=2, repeat=3, fixed_time=True,
        requires=("uvicorn", "fasttls.aio"), tools=("wrk",)),
]
