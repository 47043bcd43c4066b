"""The machinery shared by the conformance gates (run_test_ssl.py, run_asyncio_ssl.py): run
some of CPython's own test modules, unchanged, in child processes, against an expected-failure
list. Each gate script describes its suite with a `Suite` and calls `main(suite)`.

How it runs
-----------
The parent process never imports the suite. It asks a child for the list of test ids, cuts the
list into chunks (by class, at most CHUNK tests each) and runs each chunk in a fresh child
process, `--jobs` children at a time. A child reports every test as it goes (JSON lines on a
pipe of its own), so when a child crashes (a segfault in the C engine) or a test hangs, only
that test is lost: it is recorded as "crash" or "timeout" and a new child carries on with the
rest of the chunk. The time limit is enforced twice: inside the child by faulthandler (which
dumps every thread's stack into the report, then exits), and by the parent, which kills the
child's process group a little later if it is still there.

Network
-------
Only loopback is ever dialed: before the suite is imported, `test.support.use_resources` is
set to ["walltime"] (outside regrtest it is None, which means *every* resource, 'network'
included), and as a safety net the child refuses (OSError) any connect/sendto to a
non-loopback address and any name lookup other than localhost, so a test added upstream that
dials out fails instead of reaching the network.

Ids and the expected-failure list
---------------------------------
A test id is the unittest id without the suite's `strip` prefix (`ClassName.test_method` for
test_ssl, `test_ssl.TestSSL.test_method` for the asyncio suites). The list has one id per line
followed by `# reason`; blank lines and lines starting with `#` are ignored. The exit status
is non-zero when a test not on the list fails, when a listed test passes ("now passes: remove
it from the list"), or when a listed id is not in the suite. A reason that starts with "flaky"
marks a test that fails only sometimes: both outcomes are accepted for it.
"""
import argparse
import dataclasses
import datetime
import fnmatch
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

CHUNK = 20            # tests per child process at most
STALL = 10.0          # a test running this long is probably hung: start another child meanwhile
EXTRA = 2             # at most this many children beyond --jobs, for that
KILL_GRACE = 15.0     # seconds past the limit before the parent kills a silent child
TOTAL_LIMIT = 3600.0  # bound on the whole run (seconds)
MARK = "=== conformance: start "  # written to the child's stderr at each test start

FAILING = ("failed", "error", "timeout", "crash", "not-run", "unexpected-success")


@dataclasses.dataclass
class Suite:
    """What a gate script runs, and how (the rest is common)."""
    name: str                  # "test_ssl": used in the output, report and temporary names
    script: str                # the gate script's path (children run it again)
    description: str           # argparse description (the script docstring's first paragraph)
    modules: List[str]         # the test modules, imported in this order
    strip: str                 # prefix removed from unittest ids ("test.test_ssl.")
    id_pattern: str            # regex a listed id must match
    id_example: str            # what such an id looks like, for the error message
    expected_name: str         # "test_ssl_expected_{version}.txt", beside the script
    fault_env: str             # environment variable of the runner's self-test (see child_run)
    # Which tests of the modules belong to the suite (by id; default: all of them).
    include: Callable[[str], bool] = lambda tid: True
    # Whole classes, modules or single tests never run, with the reason (counted as skipped).
    deselected: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Mode flags: (flag, help). The first one that is given names the mode; none: the gate.
    modes: List[tuple] = dataclasses.field(default_factory=list)
    # mode (None for the gate) -> label printed as "<name> under <label>"
    label: Callable[[Optional[str]], str] = lambda mode: "fasttls"
    # Child side, before the suite is imported: set up the mode (inject, patch loops...).
    prepare: Callable[[Optional[str]], None] = lambda mode: None
    # Child side, in the listing child: {name: text} describing what is under test.
    versions: Callable[[Optional[str]], dict] = lambda mode: {}
    # Parent side: the lines printed under the first one, from versions().
    header: Callable[[Optional[str], dict], List[str]] = lambda mode, versions: []
    # Child side, around each test: a function returning notes for the test's result event
    # ({} for none), called after the test (e.g. which transports it used).
    test_notes: Optional[Callable[[], dict]] = None
    # Parent side: lines printed before the summary, from the mode and all the results.
    summary: Callable[[Optional[str], list], List[str]] = lambda mode, results: []
    # Parent side: reasons the gate fails beyond the list's (from the mode and the results).
    problems: Callable[[Optional[str], list], List[str]] = lambda mode, results: []

    def mode_of(self, args) -> Optional[str]:
        for flag, _ in self.modes:
            if getattr(args, _dest(flag)):
                return flag
        return None

    def prefix_of(self, tid: str) -> str:
        return self.strip + tid


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


# ============================================================================ child side

def guard_network() -> None:
    """Refuse every non-loopback destination in this process (see the module docstring)."""
    import ipaddress
    import socket

    local_names = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

    def allowed(host) -> bool:
        if isinstance(host, (bytes, bytearray)):
            host = bytes(host).decode("ascii", "replace")
        if host is None or host == "":
            return True
        if not isinstance(host, str):
            return False
        if host.lower().rstrip(".") in local_names:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if getattr(address, "ipv4_mapped", None) is not None:
            address = address.ipv4_mapped
        return address.is_loopback or address.is_unspecified

    def check(address) -> None:
        if isinstance(address, tuple) and address and not allowed(address[0]):
            raise OSError(101, f"conformance runner: non-loopback destination {address!r} "
                               f"refused (tests may only use loopback)")

    def check_name(host) -> None:
        if not allowed(host):
            raise socket.gaierror(socket.EAI_NONAME,
                                  f"conformance runner: lookup of {host!r} refused "
                                  f"(tests may only use loopback)")

    base = socket.socket
    real_connect, real_connect_ex, real_sendto = base.connect, base.connect_ex, base.sendto
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname, real_gethostbyname_ex = socket.gethostbyname, socket.gethostbyname_ex

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        if args:
            check(args[-1])
        return real_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        check_name(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host):
        check_name(host)
        return real_gethostbyname(host)

    def gethostbyname_ex(host):
        check_name(host)
        return real_gethostbyname_ex(host)

    base.connect, base.connect_ex, base.sendto = connect, connect_ex, sendto
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname, socket.gethostbyname_ex = gethostbyname, gethostbyname_ex


def _import_suite(suite: Suite, mode: Optional[str]) -> list:
    """Set up the mode, configure test.support, then import the suite's modules."""
    suite.prepare(mode)
    from test import support
    # Must be set before the import: requires_resource() decides at class definition time.
    support.use_resources = ["walltime"]  # never 'network' (None would mean all resources)
    support.verbose = 0                   # regrtest's default; 1 outside regrtest
    support.failfast = False
    guard_network()
    import importlib
    return [importlib.import_module(name) for name in suite.modules]


def _all_ids(suite: Suite, modules: list) -> list:
    import unittest

    def flatten(tests):
        for item in tests:
            if isinstance(item, unittest.TestSuite):
                yield from flatten(item)
            else:
                yield item

    ids = []
    for module in modules:
        for test in flatten(unittest.defaultTestLoader.loadTestsFromModule(module)):
            tid = test.id()
            if tid.startswith(suite.strip) and suite.include(tid[len(suite.strip):]):
                ids.append(tid[len(suite.strip):])
    return ids


def child_list(suite: Suite, mode: Optional[str]) -> int:
    modules = _import_suite(suite, mode)
    info = {"python": sys.version.split()[0], "executable": sys.executable}
    info.update(suite.versions(mode))
    listing = {"ids": _all_ids(suite, modules), "versions": info}
    sys.__stdout__.write(json.dumps(listing) + "\n")
    sys.__stdout__.flush()
    return 0


def child_run(suite: Suite, mode: Optional[str], ids: list, fd: int, timeout: float) -> None:
    import faulthandler
    import traceback
    import unittest

    def emit(**event) -> None:
        data = (json.dumps(event) + "\n").encode()
        while data:
            data = data[os.write(fd, data):]

    faulthandler.enable(file=sys.stderr, all_threads=True)
    faulthandler.dump_traceback_later(timeout, exit=True, file=sys.stderr)
    _import_suite(suite, mode)
    emit(event="ready", pid=os.getpid())

    def short(tid: str) -> str:
        return tid[len(suite.strip):] if tid.startswith(suite.strip) else tid

    def first_line(err) -> str:
        lines = traceback.format_exception_only(err[0], err[1])
        text = lines[0].strip() if lines else repr(err[1])
        return (text.splitlines() or [""])[0][:300]

    fixture_re = re.compile(r"^(\w+) \((.*)\)$")
    fault = {}
    for item in os.environ.get(suite.fault_env, "").split(","):
        kind, _, tid = item.strip().partition(":")
        if tid:
            fault[tid] = kind

    class Result(unittest.TestResult):
        def __init__(self) -> None:
            super().__init__()
            self.state = None
            self.reported = set()
            self.class_fixture = {}   # class id (as in test ids) -> (outcome, message, tb)
            self.module_fixture = {}  # module name -> (outcome, message, traceback)

        def startTest(self, test) -> None:
            super().startTest(test)
            tid = short(test.id())
            self.state = {"id": tid, "outcome": None, "details": [], "message": "",
                          "start": time.monotonic()}
            if suite.test_notes is not None:
                suite.test_notes()  # reset: notes cover this test only
            sys.stderr.write(f"\n{MARK}{tid} ===\n")
            sys.stderr.flush()
            faulthandler.dump_traceback_later(timeout, exit=True, file=sys.stderr)
            emit(event="start", id=tid)
            if fault.get(tid) == "crash":   # the runner's self-test (see fault_env)
                import ctypes
                ctypes.string_at(0)
            elif fault.get(tid) in ("hang", "deafhang"):  # deafhang: faulthandler is off too
                if fault[tid] == "deafhang":
                    faulthandler.cancel_dump_traceback_later()
                time.sleep(10 * timeout)

        def _note(self, outcome, err=None, prefix="", text=None) -> None:
            s = self.state
            rank = {"passed": 0, "xfail": 0, "skipped": 1, "unexpected-success": 2,
                    "failed": 3, "error": 4}
            if s["outcome"] is None or rank[outcome] > rank[s["outcome"]]:
                s["outcome"] = outcome
                if err is not None:
                    s["message"] = prefix + first_line(err)
                elif text is not None:
                    s["message"] = prefix + text
            if err is not None:
                s["details"].append(prefix + self._exc_info_to_string(err, self._test))

        def stopTest(self, test) -> None:
            super().stopTest(test)
            faulthandler.dump_traceback_later(timeout, exit=True, file=sys.stderr)
            s, self.state = self.state, None
            if s is None:
                return
            self.reported.add(s["id"])
            notes = suite.test_notes() if suite.test_notes is not None else {}
            emit(event="result", id=s["id"], outcome=s["outcome"] or "passed",
                 message=s["message"], traceback="\n".join(s["details"]),
                 duration=time.monotonic() - s["start"], notes=notes)

        # -- per-test outcomes (the test object is the TestCase, or an _ErrorHolder for
        #    fixtures such as setUpClass, which run outside startTest/stopTest)

        def _fixture(self, test, outcome, err=None, reason=None) -> bool:
            if not isinstance(test, unittest.suite._ErrorHolder):
                return False
            desc = str(test)
            tb = self._exc_info_to_string(err, test) if err is not None else ""
            message = (first_line(err) if err is not None else reason) or ""
            match = fixture_re.match(desc)
            kind, where = (match.group(1), match.group(2)) if match else (desc, "")
            if kind in ("setUpClass",):
                self.class_fixture[short(where)] = (outcome, f"{kind}: {message}", tb)
            elif kind in ("setUpModule",):
                self.module_fixture[where] = (outcome, f"{kind}: {message}", tb)
            elif outcome != "skipped":
                # tearDownClass, tearDownModule, cleanups: a pseudo-test of their own
                owner = short(where)
                pid = f"{owner}.{kind}" if owner else kind
                emit(event="result", id=pid, outcome=outcome, message=message, traceback=tb,
                     duration=0.0, fixture=True)
            return True

        def addSuccess(self, test) -> None:
            super().addSuccess(test)
            self._test = test
            self._note("passed")

        def addFailure(self, test, err) -> None:
            if self._fixture(test, "failed", err):
                return
            self._test = test
            self._note("failed", err)

        def addError(self, test, err) -> None:
            if self._fixture(test, "error", err):
                return
            self._test = test
            self._note("error", err)

        def addSkip(self, test, reason) -> None:
            if isinstance(test, unittest.case._SubTest):
                return  # a skipped subtest: the test's own outcome decides
            if self._fixture(test, "skipped", reason=reason):
                return
            self._test = test
            self._note("skipped", text=str(reason))

        def addExpectedFailure(self, test, err) -> None:
            self._test = test
            self._note("xfail")

        def addUnexpectedSuccess(self, test) -> None:
            self._test = test
            self._note("unexpected-success", text="unexpected success (@expectedFailure)")

        def addSubTest(self, test, subtest, err) -> None:
            if err is None:
                return
            self._test = test
            outcome = "failed" if issubclass(err[0], test.failureException) else "error"
            self._note(outcome, err, prefix=f"[{subtest._subDescription()}] ")

    tests = unittest.TestSuite()
    loader = unittest.defaultTestLoader
    for tid in ids:
        tests.addTest(loader.loadTestsFromName(suite.prefix_of(tid)))
    result = Result()
    tests.run(result)
    # Tests that never started: their class's (or the module's) setUp failed or skipped.
    for tid in ids:
        if tid in result.reported:
            continue
        found = result.class_fixture.get(tid.rsplit(".", 1)[0])
        if found is None:
            full = suite.prefix_of(tid)
            found = next((f for name, f in result.module_fixture.items()
                          if full.startswith(name + ".")), None)
        if found is None:
            found = ("not-run", "not run (no fixture error reported)", "")
        outcome, message, tb = found
        emit(event="result", id=tid, outcome=outcome, message=message, traceback=tb,
             duration=0.0)
    faulthandler.cancel_dump_traceback_later()
    emit(event="done")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no waiting for threads a broken test left behind


# =========================================================================== parent side

class Outcome:
    __slots__ = ("id", "outcome", "message", "traceback", "duration", "fixture", "notes")

    def __init__(self, tid, outcome, message="", traceback="", duration=0.0, fixture=False,
                 notes=None):
        self.id, self.outcome, self.message = tid, outcome, message
        self.traceback, self.duration, self.fixture = traceback, duration, fixture
        self.notes = notes or {}


def child_command(suite: Suite, args, *extra) -> list:
    cmd = [sys.executable, suite.script, *extra]
    mode = suite.mode_of(args)
    if mode is not None:
        cmd.append(mode)
    return cmd


def list_tests(suite: Suite, args) -> dict:
    proc = subprocess.run(child_command(suite, args, "--child-list"), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        print(f"error: could not list the tests of {', '.join(suite.modules)} "
              f"(exit status {proc.returncode})", file=sys.stderr)
        raise SystemExit(2)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_chunks(ids: list) -> list:
    chunks, current, current_class = [], [], None
    for tid in ids:
        cls = tid.rsplit(".", 1)[0]
        if current and (len(current) >= CHUNK or (cls != current_class and
                                                  len(current) >= CHUNK // 2)):
            chunks.append(current)
            current = []
        current.append(tid)
        current_class = cls
    if current:
        chunks.append(current)
    return chunks


def _stderr_section(path: Path, tid) -> str:
    """The child's stderr from the start marker of `tid` on (or the tail)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    if tid is not None:
        mark = f"{MARK}{tid} ===\n"
        at = text.rfind(mark)
        if at >= 0:
            text = text[at + len(mark):]
    return text[-20000:]


def _hang_site(dump: str) -> str:
    """From a faulthandler dump, the innermost frame of the thread running the test."""
    def innermost(block: str, only_fasttls: bool = False) -> str:
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("File ") and (not only_fasttls or "/fasttls/" in line):
                return re.sub(r'^File "(?:[^"]*/)?([^"/]+)", line (\d+),? in (\S+)$',
                              r"\1:\2 \3", line)
        return ""

    dump = dump[max(dump.find("Timeout ("), 0):]  # faulthandler's part, not tracebacks above
    blocks = re.split(r"\n(?=(?:Current thread|Thread) 0x)", dump)
    main = [innermost(b) for b in blocks if "unittest" in b and "case.py" in b]
    fasttls_sites = sorted({innermost(b, True) for b in blocks if "unittest" not in b} - {""})
    site = main[0] if main else ""
    if fasttls_sites:
        site += ("; " if site else "") + "other threads in " + ", ".join(fasttls_sites)
    return site


class Worker:
    def __init__(self, runner, tests: list) -> None:
        self.runner = runner
        self.tests = tests            # not yet reported, in order
        self.current = None           # id of the test in progress
        self.started = time.monotonic()
        self.last_event = self.started
        self.ready = False
        self.done = False
        self.buffer = b""
        read_fd, write_fd = os.pipe()
        self.log = Path(tempfile.mkstemp(prefix=f"{runner.suite.name}_child_", suffix=".log",
                                         dir=runner.tmpdir)[1])
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                child_command(runner.suite, runner.args, "--child-run", str(write_fd),
                              "--timeout", str(runner.args.timeout), *tests),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(write_fd,), start_new_session=True)
        os.close(write_fd)
        self.fd = read_fd
        os.set_blocking(read_fd, False)

    def feed(self, data: bytes) -> None:
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.strip():
                self.handle(json.loads(line))

    def handle(self, event: dict) -> None:
        self.last_event = time.monotonic()
        kind = event["event"]
        if kind == "ready":
            self.ready = True
        elif kind == "start":
            self.current = event["id"]
        elif kind == "result":
            tid = event["id"]
            self.runner.record(Outcome(tid, event["outcome"], event.get("message", ""),
                                       event.get("traceback", ""), event.get("duration", 0.0),
                                       event.get("fixture", False), event.get("notes")))
            if tid in self.tests:
                self.tests.remove(tid)
            if tid == self.current:
                self.current = None
        elif kind == "done":
            self.done = True

    def overdue(self, now: float) -> bool:
        return now - self.last_event > self.runner.args.timeout + KILL_GRACE

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the child's own session: it and its own
        except (ProcessLookupError, PermissionError):
            pass

    def finish(self) -> list:
        """After EOF on the pipe: reap the child, account for a test it did not finish.
        Returns the tests still to run (in a new child)."""
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait(timeout=20)
        os.close(self.fd)
        rc = self.proc.returncode
        if self.done or not self.tests:
            self.log.unlink(missing_ok=True)
            return []
        elapsed = time.monotonic() - self.last_event
        victim = self.current if self.current is not None else self.tests[0]
        dump = _stderr_section(self.log, self.current)
        if rc is not None and rc < 0:
            try:
                how = f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                how = f"killed by signal {-rc}"
        else:
            how = f"exit status {rc}"
        if not self.ready:
            # The child died before running anything: importing the suite failed.
            for tid in list(self.tests):
                self.runner.record(Outcome(tid, "crash", f"child failed to start ({how})",
                                           dump))
            self.log.unlink(missing_ok=True)
            return []
        if elapsed >= self.runner.args.timeout or "Timeout (" in dump:
            outcome = "timeout"
            where = _hang_site(dump)
            message = f"no result within {self.runner.args.timeout:g} s" + (
                f"; hung at {where}" if where else "")
        else:
            outcome = "crash"
            message = f"child process died ({how})"
        if self.current is None:
            message += " (outside the test: in a class or module fixture)"
        self.runner.record(Outcome(victim, outcome, message,
                                   f"child stderr/faulthandler output:\n{dump}"))
        self.log.unlink(missing_ok=True)
        return [t for t in self.tests if t != victim]


class Runner:
    def __init__(self, suite: Suite, args, tmpdir) -> None:
        self.suite = suite
        self.args = args
        self.tmpdir = tmpdir
        self.results = {}

    def record(self, outcome: Outcome) -> None:
        self.results[outcome.id] = outcome
        if self.args.verbose and outcome.outcome in FAILING:
            print(f"  {outcome.id}: {outcome.outcome}", file=sys.stderr, flush=True)

    def run(self, chunks: list) -> None:
        queue = list(chunks)
        total_chunks = len(queue)
        workers = []
        selector = selectors.DefaultSelector()
        deadline = time.monotonic() + TOTAL_LIMIT
        finished = 0
        begin = time.monotonic()
        while queue or workers:
            now = time.monotonic()
            busy = sum(1 for w in workers
                       if w.current is None or now - w.last_event < STALL)
            while queue and busy < self.args.jobs and len(workers) < self.args.jobs + EXTRA:
                busy += 1
                worker = Worker(self, queue.pop(0))
                workers.append(worker)
                selector.register(worker.fd, selectors.EVENT_READ, worker)
            now = time.monotonic()
            if now > deadline:
                for worker in workers:
                    worker.kill()
                for worker in workers:
                    worker.proc.wait(timeout=20)
                    os.close(worker.fd)
                    for tid in worker.tests:
                        self.record(Outcome(tid, "not-run", "the whole run hit its time limit"))
                for chunk in queue:
                    for tid in chunk:
                        self.record(Outcome(tid, "not-run", "the whole run hit its time limit"))
                return
            for key, _ in selector.select(timeout=1.0):
                worker = key.data
                try:
                    data = os.read(worker.fd, 65536)
                except BlockingIOError:
                    continue
                if data:
                    worker.feed(data)
                    continue
                selector.unregister(worker.fd)
                workers.remove(worker)
                rest = worker.finish()
                if rest:
                    queue.insert(0, rest)
                else:
                    finished += 1
                    print(f"[{finished}/{total_chunks} chunks, {len(self.results)} tests, "
                          f"{time.monotonic() - begin:.0f} s]", file=sys.stderr, flush=True)
            now = time.monotonic()
            for worker in workers:
                if worker.overdue(now):
                    worker.kill()  # EOF follows; finish() records the timeout


def parse_expected(path: Path, id_pattern: str, id_example: str) -> dict:
    expected, problems = {}, []
    try:
        text = path.read_text()
    except OSError as error:
        print(f"error: cannot read the expected-failure list: {error}", file=sys.stderr)
        raise SystemExit(2)
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tid, sep, reason = line.partition("#")
        tid, reason = tid.strip(), reason.strip()
        if not sep or not reason:
            problems.append(f"{path.name}:{number}: {tid}: no '# reason'")
        if not re.fullmatch(id_pattern, tid):
            problems.append(f"{path.name}:{number}: {tid!r} is not an id like {id_example}")
        if tid in expected:
            problems.append(f"{path.name}:{number}: {tid} is listed twice")
        expected[tid] = reason
    if problems:
        print("error: malformed expected-failure list:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        raise SystemExit(2)
    return expected


def is_flaky(reason: str) -> bool:
    """A reason starting with "flaky" accepts both outcomes (for a test that fails only
    sometimes; fix it, do not leave it)."""
    return reason.lower().startswith("flaky")


def selected(suite: Suite, tid: str, patterns: list) -> bool:
    if not patterns:
        return True
    for pattern in patterns:
        if "*" not in pattern and "?" not in pattern and "[" not in pattern:
            pattern = f"*{pattern}*"
        if fnmatch.fnmatchcase(tid, pattern) or fnmatch.fnmatchcase(suite.prefix_of(tid),
                                                                     pattern):
            return True
    return False


def deselection(suite: Suite, tid: str) -> Optional[str]:
    """The reason `tid` is deselected: listed itself, or its class or module is."""
    parts = tid.split(".")
    for end in range(len(parts), 0, -1):
        why = suite.deselected.get(".".join(parts[:end]))
        if why:
            return why
    return None


def write_report(suite: Suite, path: Path, versions: dict, results: list, expected: dict,
                 label: str) -> None:
    failing = [r for r in results if r.outcome in FAILING]
    with open(path, "w") as out:
        out.write(f"{suite.name} conformance report ({label})\n")
        out.write(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}\n")
        for key, value in versions.items():
            out.write(f"{key}: {value}\n")
        out.write(f"failing tests: {len(failing)}\n\n")
        for r in failing:
            note = f"  [expected: {expected[r.id]}]" if r.id in expected else ""
            out.write("=" * 78 + "\n")
            out.write(f"{r.id}: {r.outcome.upper()}{note}\n{r.message}\n")
            for key, value in r.notes.items():
                out.write(f"{key}: {value}\n")
            out.write("-" * 78 + "\n")
            out.write((r.traceback or "(no traceback)").rstrip() + "\n\n")


def main(suite: Suite, argv=None) -> int:
    parser = argparse.ArgumentParser(description=suite.description)
    example = suite.expected_name.format(version="X.Y")
    parser.add_argument("--expected", type=Path, default=None,
                        help=f"expected-failure list (default: {example} "
                             "beside this script, for the running Python, if it exists)")
    parser.add_argument("--no-expected", action="store_true",
                        help="ignore the default expected-failure list")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="time limit per test, seconds (default 60)")
    parser.add_argument("--report", type=Path, default=None,
                        help="write the full traceback of every failing test to this file")
    parser.add_argument("-k", dest="patterns", action="append", default=[],
                        help="run only tests whose id matches (substring or glob; repeatable)")
    for flag, help_text in suite.modes:
        parser.add_argument(flag, action="store_true", help=help_text)
    parser.add_argument("--jobs", "-j", type=int, default=2,
                        help="child processes at a time (default 2)")
    parser.add_argument("--list", action="store_true", help="print the test ids and exit")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="also print skipped tests, and failures as they happen")
    parser.add_argument("--child-list", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-run", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("ids", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    given = [flag for flag, _ in suite.modes if getattr(args, _dest(flag))]
    if len(given) > 1:
        parser.error(f"{' and '.join(given)} exclude each other")
    mode = suite.mode_of(args)
    if args.child_list:
        return child_list(suite, mode)
    if args.child_run is not None:
        child_run(suite, mode, args.ids, args.child_run, args.timeout)
        return 0
    if args.ids:
        parser.error(f"unrecognized arguments: {' '.join(args.ids)}")
    args.jobs = max(1, args.jobs)

    label = suite.label(mode)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    expected_path = args.expected
    if expected_path is None and mode is None and not args.no_expected:
        candidate = Path(suite.script).parent / suite.expected_name.format(version=version)
        if candidate.exists():
            expected_path = candidate
    expected = (parse_expected(expected_path, suite.id_pattern, suite.id_example)
                if expected_path is not None else {})

    begin = time.monotonic()
    listing = list_tests(suite, args)
    all_ids = listing["ids"]
    if args.list:
        print("\n".join(all_ids))
        return 0
    chosen = [t for t in all_ids if selected(suite, t, args.patterns)]
    deselected = {t: deselection(suite, t) for t in chosen}
    deselected = {t: why for t, why in deselected.items() if why}
    to_run = [t for t in chosen if t not in deselected]
    print(f"{suite.name} ({', '.join(suite.modules)} of Python {sys.version.split()[0]}) "
          f"under {label}: "
          f"{len(to_run)} tests to run, {len(deselected)} deselected, "
          f"{len(all_ids) - len(chosen)} filtered out by -k; "
          f"expected failures: {expected_path if expected_path else 'none'}", flush=True)
    for line in suite.header(mode, listing["versions"]):
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix=f"{suite.name}_conformance_") as tmpdir:
        runner = Runner(suite, args, tmpdir)
        runner.run(make_chunks(to_run))
    for tid, why in deselected.items():
        runner.results[tid] = Outcome(tid, "skipped", why)

    order = {tid: i for i, tid in enumerate(all_ids)}
    results = sorted(runner.results.values(),
                     key=lambda r: (order.get(r.id, len(order)), r.id))
    known = set(all_ids) | {r.id for r in results}

    counts = {"passed": 0, "failed": 0, "skipped": 0, "expected": 0}
    unexpected, now_passing, missing, listed_skipped = [], [], [], []
    for r in results:
        listed = r.id in expected
        flaky = listed and is_flaky(expected[r.id])
        if r.outcome in FAILING:
            if listed:
                counts["expected"] += 1
                kind = "expected failure, listed as flaky" if flaky else "expected failure"
                print(f"{r.id}: {kind} ({r.outcome}): {r.message}")
            else:
                counts["failed"] += 1
                unexpected.append(r)
                print(f"{r.id}: {r.outcome.upper()}: {r.message}")
        elif r.outcome == "skipped":
            counts["skipped"] += 1
            if listed:
                listed_skipped.append(r)
            if args.verbose:
                print(f"{r.id}: skipped: {r.message}")
        else:
            counts["passed"] += 1
            if flaky:
                print(f"{r.id}: passed this time (listed as flaky: either outcome is accepted)")
            elif listed:
                now_passing.append(r)
                print(f"{r.id}: now passes: remove it from the list ({expected_path.name})")
    for tid in expected:
        if tid not in known:
            missing.append(tid)
            print(f"{tid}: listed in {expected_path.name} but no such test in this suite")
    for r in listed_skipped:
        print(f"{r.id}: note: listed as an expected failure but skipped here ({r.message})")
    if args.verbose:
        for r in results:
            for key, value in r.notes.items():
                print(f"{r.id}: {key}: {value}")

    if args.report is not None:
        write_report(suite, args.report, listing["versions"], results, expected, label)
        print(f"full tracebacks of the failing tests: {args.report}")

    for line in suite.summary(mode, results):
        print(line)
    slow = sorted((r for r in results if r.duration), key=lambda r: -r.duration)[:5]
    if slow:
        print("slowest: " + ", ".join(f"{r.id} {r.duration:.1f}s" for r in slow))
    by_kind = {}
    for r in results:
        if r.outcome in FAILING:
            by_kind[r.outcome] = by_kind.get(r.outcome, 0) + 1
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items())) or "none"
    print(f"summary: {len(results)} tests in {time.monotonic() - begin:.0f} s; "
          f"{counts['passed']} passed, {counts['failed']} failed (not on the list), "
          f"{counts['expected']} expected failures (on the list), "
          f"{counts['skipped']} skipped ({len(deselected)} deselected); "
          f"failing outcomes: {kinds}")
    status = 0
    if unexpected:
        print(f"GATE FAILED: {len(unexpected)} test(s) failed that are not on the list")
        status = 1
    if now_passing:
        print(f"GATE FAILED: {len(now_passing)} listed test(s) now pass: remove them from "
              f"{expected_path}")
        status = 1
    if missing:
        print(f"GATE FAILED: {len(missing)} listed test(s) do not exist in this suite")
        status = 1
    for problem in suite.problems(mode, results):
        print(f"GATE FAILED: {problem}")
        status = 1
    print(f"{suite.name} under {label}: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped")
    return status
