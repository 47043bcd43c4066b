#!/usr/bin/env python3
"""Run CPython's own asyncio SSL tests (Lib/test/test_asyncio/test_ssl.py, test_sslproto.py,
and the TLS tests of test_events.py and test_streams.py) on event loops patched by
fasttls.aio, with fasttls injected into `ssl`.

The suites are the running interpreter's own `test.test_asyncio.test_ssl` and
`test.test_asyncio.test_sslproto`, whole, and the methods named for ssl or tls of
`test.test_asyncio.test_events` (each in its three selector loop classes) and
`test.test_asyncio.test_streams`, imported unchanged. Before they are imported the child
calls `fasttls.inject_into_ssl()` (so every `ssl.SSLContext(...)` and
`ssl.create_default_context()` the suites make is fasttls's) and `fasttls.aio.install()` (so
every event loop, however the suites build it, gives fasttls contexts fasttls's own
transport instead of asyncio's sslproto). Three modes:

* default, the gate: injection + fasttls.aio.install(); the expected-failure list
  asyncio_ssl_expected_<major>.<minor>.txt beside this file applies;
* --no-aio: injection only (asyncio's own sslproto over fasttls's SSLObject), to compare;
* --no-inject: the stdlib itself (proves the runner: all pass or skip).

The suites build their loops with `asyncio.new_event_loop()` (TestSSL,
SslProtoHandshakeTests) and with `asyncio.SelectorEventLoop(...)` directly (BaseStartTLS,
test_events' loop classes), and reset the policy in tearDownModule, so install() has to act
on every loop, not on one policy. The listing child checks that it does: it runs a loopback
TLS echo on a loop from each of the two and, in the gate, refuses to go on unless both ends of
both connections are fasttls.aio transports with a fasttls context (the classes are printed in
the header). Each
test also reports how many asyncio `sslproto.SSLProtocol` objects were made over a fasttls
context while it ran: in the gate, a test other than the suite's own direct SSLProtocol tests
(SslProtoHandshakeTests) that makes one went through asyncio's path instead of fasttls.aio's,
and fails the gate ("FALLBACK"); `-v` lists the counts per test.

How it runs (child processes, time limits, the loopback-only guard, the list format): see
suite_runner.py and README.md. Ids are `test_ssl.TestSSL.test_method`,
`test_sslproto.SelectorStartTLSTests.test_method`, `test_events.EPollEventLoopTests.test_...`
(module, class, method).
"""
import sys
from pathlib import Path

import suite_runner

MODULES = ["test.test_asyncio.test_ssl", "test.test_asyncio.test_sslproto",
           "test.test_asyncio.test_events", "test.test_asyncio.test_streams"]
# test_ssl and test_sslproto whole; of test_events and test_streams (asyncio's general tests)
# only their TLS tests: the methods named for ssl or tls.
WHOLE = ("test_ssl.", "test_sslproto.")


def _include(tid: str) -> bool:
    method = tid.rsplit(".", 1)[-1]
    return tid.startswith(WHOLE) or "ssl" in method or "tls" in method


NO_AIO, NO_INJECT = "--no-aio", "--no-inject"

# Self-test of the runner, as TEST_SSL_RUNNER_FAULT for run_test_ssl.py (see suite_runner).
FAULT_ENV = "ASYNCIO_SSL_RUNNER_FAULT"

PROBE_TIMEOUT = 20.0  # seconds for the listing child's loopback probe of each loop kind

_sslproto_count = [0]  # sslproto.SSLProtocol objects made over a fasttls context


def _count_sslproto() -> None:
    """Count asyncio SSLProtocol objects built over a fasttls context (see the docstring)."""
    import asyncio.sslproto
    import fasttls

    original = asyncio.sslproto.SSLProtocol.__init__

    def __init__(self, loop, app_protocol, sslcontext, *args, **kwargs):
        if isinstance(sslcontext, fasttls.SSLContext):
            _sslproto_count[0] += 1
        original(self, loop, app_protocol, sslcontext, *args, **kwargs)

    asyncio.sslproto.SSLProtocol.__init__ = __init__


def _test_notes() -> dict:
    count, _sslproto_count[0] = _sslproto_count[0], 0
    return {"sslproto": count} if count else {}


def _prepare(mode) -> None:
    """Inject (unless --no-inject) and install fasttls.aio (gate only), before the import."""
    import ssl

    from test import support
    # test_ssl's threaded peers use SHORT_TIMEOUT (30 s) for their blocking sockets, bound as
    # default arguments at import; test_sslproto's same peers use LOOPBACK_TIMEOUT (10 s).
    # The shorter one, for both: a test whose peer waits in vain (an expected failure) ends
    # 20 s sooner, and 10 s is still far more than any loopback step takes.
    support.SHORT_TIMEOUT = min(support.SHORT_TIMEOUT, support.LOOPBACK_TIMEOUT)
    if mode == NO_INJECT:
        return
    import fasttls
    stdlib_context = ssl.SSLContext
    fasttls.inject_into_ssl()
    if ssl.SSLContext is stdlib_context:
        raise SystemExit("fasttls.inject_into_ssl() left ssl.SSLContext unchanged")
    if mode is None:
        try:
            import fasttls.aio
        except ImportError as error:
            raise SystemExit(f"fasttls.aio cannot be imported ({error}); "
                             f"--no-aio runs the suites without it")
        fasttls.aio.install()
    _count_sslproto()


def _name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _probe(loop_factory) -> dict:
    """A loopback TLS echo on a loop from `loop_factory`: {side: (the transport's class,
    its `sslcontext`'s class)} for both ends."""
    import asyncio
    from test.test_asyncio import utils

    server_context = utils.simple_server_sslcontext()
    client_context = utils.simple_client_sslcontext()
    seen = {}

    def note(side: str, transport) -> None:  # while open: closed ones may drop the extras
        seen[side] = (_name(type(transport)),
                      _name(type(transport.get_extra_info("sslcontext"))))

    async def handle(reader, writer) -> None:
        note("server", writer.transport)
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    async def echo() -> bytes:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context)
        try:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                           ssl=client_context)
            note("client", writer.transport)
            writer.write(b"probe")
            data = await reader.readexactly(5)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            return data
        finally:
            server.close()
            await server.wait_closed()

    loop = loop_factory()
    try:
        data = loop.run_until_complete(asyncio.wait_for(echo(), PROBE_TIMEOUT))
    finally:
        loop.close()
    if data != b"probe":
        raise SystemExit(f"probe: echoed {data!r}")
    return seen


def _versions(mode) -> dict:
    import asyncio
    import os
    import ssl
    info = {"ssl": ssl.OPENSSL_VERSION}
    if mode != NO_INJECT:
        import fasttls
        info["fasttls"] = (f"{fasttls.__version__} ({fasttls.OPENSSL_VERSION}) "
                           f"from {os.path.dirname(fasttls.__file__)}")
    bad = []
    for how, factory in (("asyncio.new_event_loop()", asyncio.new_event_loop),
                         ("asyncio.SelectorEventLoop()", asyncio.SelectorEventLoop)):
        sides = _probe(factory)
        info[f"transports on {how}"] = ", ".join(
            f"{side} {transport} ({context})"
            for side, (transport, context) in sorted(sides.items()))
        if mode is None:
            bad += [f"{how} {side}: {transport} over {context}"
                    for side, (transport, context) in sorted(sides.items())
                    if not transport.startswith("fasttls.aio")
                    or not context.startswith("fasttls")]
    if bad:
        raise SystemExit("fasttls.aio.install() did not take effect (the suites would test "
                         "asyncio's sslproto): " + "; ".join(bad))
    return info


def _header(mode, versions: dict) -> list:
    return [f"{key} {value}" if key == "fasttls" else f"{key}: {value}"
            for key, value in versions.items()
            if key == "fasttls" or key.startswith("transports")]


# The tests that build sslproto.SSLProtocol themselves (over a mock transport): in the gate,
# any other test that makes one went through asyncio's path instead of fasttls.aio's.
DIRECT_SSLPROTO = "test_sslproto.SslProtoHandshakeTests."


def _fallbacks(mode, results: list) -> list:
    """In the gate: the tests that went through asyncio's sslproto with a fasttls context."""
    if mode is not None:
        return []
    return [r.id for r in results
            if r.notes.get("sslproto") and not r.id.startswith(DIRECT_SSLPROTO)]


def _summary(mode, results: list) -> list:
    used = [r.id for r in results if r.notes.get("sslproto")]
    if not used:
        return []
    total = sum(r.notes["sslproto"] for r in results if r.notes.get("sslproto"))
    return [f"{len(used)} test(s) made asyncio sslproto.SSLProtocol objects over a fasttls "
            f"context ({total} in all; -v lists them per test)"] + [
            f"{tid}: FALLBACK: used asyncio's sslproto, not fasttls.aio"
            for tid in _fallbacks(mode, results)]


def _problems(mode, results: list) -> list:
    fallbacks = _fallbacks(mode, results)
    if not fallbacks:
        return []
    return [f"{len(fallbacks)} test(s) ran on asyncio's sslproto instead of fasttls.aio "
            f"(a passing result there does not test fasttls.aio)"]


SUITE = suite_runner.Suite(
    name="asyncio_ssl",
    script=str(Path(__file__).resolve()),
    description=__doc__.split("\n\n")[0],
    modules=MODULES,
    strip="test.test_asyncio.",
    id_pattern=r"test_\w+\.[A-Za-z_]\w*\.\w+",
    id_example="test_ssl.TestSSL.test_name",
    expected_name="asyncio_ssl_expected_{version}.txt",
    fault_env=FAULT_ENV,
    include=_include,
    modes=[(NO_AIO, "inject fasttls but leave asyncio's own sslproto in place (to compare)"),
           (NO_INJECT, "run the suites against the stdlib itself (sanity check)")],
    label=lambda mode: {None: "fasttls.aio", NO_AIO: "fasttls+sslproto",
                        NO_INJECT: "stdlib"}[mode],
    prepare=_prepare,
    versions=_versions,
    header=_header,
    test_notes=_test_notes,
    summary=_summary,
    problems=_problems,
)


if __name__ == "__main__":
    sys.exit(suite_runner.main(SUITE))
