#!/usr/bin/env python3
"""Run CPython's own Lib/test/test_ssl.py against fasttls (injected into `ssl`).

The suite is the running interpreter's own `test.test_ssl`, imported unchanged; it is never
copied or edited. Before it is imported, `fasttls.inject_into_ssl()` replaces `ssl.SSLContext`
and `ssl.create_default_context`, so every context the suite builds is a fasttls one.

How it runs
-----------
In child processes, a chunk of tests each, with a time limit per test: see suite_runner.py
(shared with run_asyncio_ssl.py), which also holds the network guard and the list format.

Network
-------
Only loopback is ever dialed:
* `test.support.use_resources` is set to ["walltime"] before the suite is imported. Outside
  regrtest it is None, which means *every* resource, 'network' included; test_ssl asks for
  only 'network' (NetworkedTests: self-signed.pythontest.net, ipv6.google.com) and 'walltime'
  (ThreadedTests.test_echo, a loopback test).
* NetworkedTests is also deselected outright (DESELECTED below), whatever the resources say.
* As a safety net the child refuses (OSError) any connect/sendto to a non-loopback address and
  any name lookup other than localhost, so a test added upstream that dials out fails here
  instead of reaching the network. The rest of the suite uses only loopback servers it starts
  itself (the IDN and pythontest.net names in ThreadedTests are server_hostname values for
  SNI and certificate matching against a local server, never resolved).

Ids and the expected-failure list
---------------------------------
A test id is `ClassName.test_method` (the unittest id without the `test.test_ssl.` prefix).
The list (default: test_ssl_expected_<major>.<minor>.txt beside this file, when it exists)
has one id per line followed by `# reason` (the rules: suite_runner.py, README.md).
"""
import sys
from pathlib import Path

import suite_runner

MODULE = "test.test_ssl"

# Whole classes or single tests never run, with the reason (they count as skipped).
DESELECTED = {
    # Dials self-signed.pythontest.net:443 and ipv6.google.com:443. Already skipped because
    # the 'network' resource is off; deselected as well so no setting can turn it on.
    "NetworkedTests": "deselected: dials remote hosts (needs the network)",
}

# Self-test of the runner: FAULT_ENV="crash:Class.test_a,hang:Class.test_b" makes the child
# segfault or hang ("deafhang": a hang that faulthandler does not see, for the parent to kill)
# when that test starts (to check that such tests are recorded and the rest
# still runs).
FAULT_ENV = "TEST_SSL_RUNNER_FAULT"


def _prepare(mode) -> None:
    """Inject (unless --no-inject), before the suite is imported."""
    import ssl
    if mode is None:
        import fasttls
        stdlib_context = ssl.SSLContext
        fasttls.inject_into_ssl()
        if ssl.SSLContext is stdlib_context:
            raise SystemExit("fasttls.inject_into_ssl() left ssl.SSLContext unchanged")


def _versions(mode) -> dict:
    import os
    import ssl
    info = {"ssl": ssl.OPENSSL_VERSION}
    if mode is None:
        import fasttls
        info["fasttls"] = (f"{fasttls.__version__} ({fasttls.OPENSSL_VERSION}) "
                           f"from {os.path.dirname(fasttls.__file__)}")
    return info


SUITE = suite_runner.Suite(
    name="test_ssl",
    script=str(Path(__file__).resolve()),
    description=__doc__.split("\n\n")[0],
    modules=[MODULE],
    strip=MODULE + ".",
    id_pattern=r"[A-Za-z_]\w*\.\w+",
    id_example="Class.test_name",
    expected_name="test_ssl_expected_{version}.txt",
    fault_env=FAULT_ENV,
    deselected=DESELECTED,
    modes=[("--no-inject", "run the suite against the stdlib itself (sanity check)")],
    label=lambda mode: "stdlib" if mode else "fasttls",
    prepare=_prepare,
    versions=_versions,
    header=lambda mode, versions: [] if mode else [f"fasttls {versions['fasttls']}"],
)


if __name__ == "__main__":
    sys.exit(suite_runner.main(SUITE))
