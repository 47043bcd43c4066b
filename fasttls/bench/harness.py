"""The harness of ``python -m fasttls bench``: the environment both libraries run in, the row
description, timing, and the fasttls/stdlib ratio of each row.

Every row runs one workload twice, once through fasttls and once through the stdlib, on the same
TLS 1.3 cipher suite (checked on both ends of every connection), with the same ephemeral ECDSA
P-256 certificate made in memory. Runs alternate between the two sides and the best of several
repeats is kept. Everything received is checked (lengths, contents), so a row cannot silently
measure nothing.

Each row's ``setup(env, side)`` returns ``run(n)``, which does n units of work and returns what it
received (checked by the caller); the pytest-benchmark suite in ``bench/`` drives the same
functions. Rows driven by an outside load generator (``fixed_time``: wrk against uvicorn)
instead return ``run(seconds)``, which runs for that long and returns (units done, seconds
measured), checked by the row itself. The workloads themselves are in ``workloads``,
``dropin``, ``aio_rows``, ``anyio_rows`` and ``asgi``.
"""
import gc
import importlib.util
import os
import platform
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

from fasttls.bench import peer

SUITE = "TLS_AES_256_GCM_SHA384"
HOSTNAME = "localhost"
SIDES = ("fasttls", "stdlib")
ECHO_PEER = "fasttls.bench.peer:peer_main"


class BenchError(AssertionError):
    """A workload produced something other than what was sent (or the wrong cipher)."""


# ---------------------------------------------------------------------------------------------
# environment: certificate, contexts, peer processes


class Env:
    """Certificate, one client and one server context per library, and (lazily) the peer
    processes.

    Use as a context manager; ``close()`` runs the on_close callbacks, stops the peers and
    removes the temporary directory (``tmpdir``: the certificate and key files the stdlib loads).
    """

    def __init__(self):
        import fasttls
        from fasttls import _binding

        self.fasttls = fasttls
        self.cert_pem, self.key_pem = _binding.make_self_signed(HOSTNAME)
        self._tmp = tempfile.TemporaryDirectory(prefix="fasttls-bench-")
        self.tmpdir = self._tmp.name
        self.certfile = os.path.join(self.tmpdir, "cert.pem")
        self.keyfile = os.path.join(self.tmpdir, "key.pem")
        with open(self.certfile, "wb") as f:
            f.write(self.cert_pem)
        with open(self.keyfile, "wb") as f:
            f.write(self.key_pem)

        tls13 = ssl.TLSVersion.TLSv1_3
        # fasttls: the suite is forced with set_ciphersuites on both roles.
        self.ft_client_ctx = fasttls.newctx(minimum_version=tls13, ciphersuites=SUITE,
                                            cadata=self.cert_pem)
        self.ft_server_ctx = fasttls.newctx(minimum_version=tls13, ciphersuites=SUITE)
        self.ft_server_ctx.set_cert(self.cert_pem, self.key_pem)
        # stdlib: no set_ciphersuites; OpenSSL's default TLS 1.3 order puts AES-256-GCM first,
        # which every connection below checks with cipher() on both ends.
        self.std_client_ctx = make_std_client_ctx(self.cert_pem)
        self.std_server_ctx = peer.make_std_server_ctx(self.certfile, self.keyfile)

        self._peers: Dict[str, Tuple[object, Tuple[str, int]]] = {}   # entry -> (process, address)
        self._closers: List[Callable[[], None]] = []
        self.negotiated = set()     # (library, role, cipher, version) seen on every connection
        self.notes: Dict[str, str] = {}     # what a row ran on (e.g. uvicorn's loop), by key

    def peer(self, entry=ECHO_PEER):
        """Address of the peer process `entry` (``module:function``, see ``peer``), started on
        first use with this certificate; by default the stdlib-ssl echo/sink server."""
        if entry not in self._peers:
            self._peers[entry] = peer.spawn_peer(entry, (self.certfile, self.keyfile))
        return self._peers[entry][1]

    def on_close(self, fn):
        self._closers.append(fn)

    def close(self):
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:
                pass
        while self._peers:
            proc, _addr = self._peers.popitem()[1]
            peer.stop_peer(proc)
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_cipher(self, library, role, obj):
        """`obj` (anything with cipher(): SSLObject, SSLSocket, TLS) negotiated SUITE."""
        name, version, _bits = obj.cipher()
        self.check_negotiated(library, role, name, version)

    def check_negotiated(self, library, role, name, version):
        if name != SUITE or version != "TLSv1.3":
            raise BenchError(f"{library} {role} negotiated {name} {version}, "
                             f"expected {SUITE} TLSv1.3")
        self.negotiated.add((library, role, name, version))


def make_std_client_ctx(cert_pem):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)      # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cadata=cert_pem.decode("ascii"))
    return ctx


# ---------------------------------------------------------------------------------------------
# rows and measurement


@dataclass
class Row:
    name: str
    title: str
    unit: str
    per_op: float           # units per operation of run(n)
    check: int              # what run(1) returns when correct (bytes or count)
    target: float
    setup: Callable         # setup(env, side) -> run(n), or run(seconds) if fixed_time
    seconds: float = 0.3    # per timed run
    repeat: int = 7         # timed runs per side (best kept)
    # modules the row needs (not fasttls dependencies; "fasttls.aio" while it is being built)
    requires: Union[str, Tuple[str, ...]] = ()
    tools: Tuple[str, ...] = ()     # executables the row needs on PATH (e.g. wrk)
    fixed_time: bool = False        # run(seconds) -> (units, seconds): see the module docstring

    def missing(self) -> List[str]:
        """What the row needs and this environment lacks, with why; empty if nothing.

        A module counts as present only if it imports: a half-built optional module (or one
        whose own dependencies are missing) makes its rows unavailable, not failing."""
        requires = (self.requires,) if isinstance(self.requires, str) else self.requires
        lacking = []
        for module in requires:
            reason = _import_problem(module)
            if reason:
                lacking.append(f"{module} ({reason})")
        lacking += [f"{tool} (not on PATH)" for tool in self.tools if shutil.which(tool) is None]
        return lacking

    def available(self) -> bool:
        return not self.missing()


_import_problems: Dict[str, Optional[str]] = {}


def _import_problem(module) -> Optional[str]:
    """None if `module` imports, else why not (cached: rows share requirements)."""
    if module not in _import_problems:
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:             # a parent package that is not there
            found = False
        reason = None if found else "not installed"
        if found:
            try:
                importlib.import_module(module)
            except Exception as e:      # anything an import can raise: it is not usable
                reason = f"import failed: {type(e).__name__}: {e}"
        _import_problems[module] = reason
    return _import_problems[module]


@dataclass
class Result:
    row: Row
    rates: Dict[str, float] = field(default_factory=dict)    # best rate per side
    samples: Dict[str, List[float]] = field(default_factory=dict)
    n: int = 0

    @property
    def ratio(self):
        return self.rates["fasttls"] / self.rates["stdlib"]

    @property
    def met(self):
        return self.ratio >= self.row.target

    def as_dict(self):
        return {
            "name": self.row.name, "workload": self.row.title, "unit": self.row.unit,
            "fasttls": self.rates["fasttls"], "stdlib": self.rates["stdlib"],
            "ratio": self.ratio, "target": self.row.target, "met": self.met,
            "ops_per_run": self.n,
            "runs_per_side": len(self.samples["fasttls"]),
            "samples": self.samples,
        }


def timed(run, n, expect):
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        got = run(n)
        dt = time.perf_counter() - t0
    finally:
        gc.enable()
    if got != expect:
        raise BenchError(f"run({n}) returned {got}, expected {expect}")
    return dt


def _quiet(_message):
    pass


def measure(row, runs, seconds, repeat, note=_quiet):
    """Calibrate n so the slower side takes ~seconds, then alternate the sides `repeat` times
    (swapping which goes first) and keep the best rate of each. ``note(text)`` is told each
    step (progress)."""
    if row.fixed_time:
        return _measure_fixed_time(row, runs, seconds, repeat, note)
    note("calibrating")
    n = 1
    while True:
        worst = max(timed(runs[s], n, n * row.check) for s in SIDES)
        if worst >= seconds / 5 or worst >= 0.02 and n >= 1 << 20:
            break
        n = n * 4 if worst < seconds / 50 else n * 2
    n = max(1, int(n * seconds / worst))
    res = Result(row, n=n, samples={s: [] for s in SIDES})
    for i in range(repeat):
        order = SIDES if i % 2 == 0 else SIDES[::-1]
        for side in order:
            note(f"run {i + 1}/{repeat}, {side}")
            dt = timed(runs[side], n, n * row.check)
            res.samples[side].append(n * row.per_op / dt)
    res.rates = {s: max(res.samples[s]) for s in SIDES}
    return res


def _measure_fixed_time(row, runs, seconds, repeat, note):
    """A fixed_time row: after one short warm-up run per side (unless there is only one run),
    `repeat` runs of `seconds` per side, alternating; the best rate is kept. n is the units done
    in the best fasttls run."""
    for side in SIDES if repeat > 1 else ():
        note(f"warm-up, {side}")
        runs[side](1)
    res = Result(row, samples={s: [] for s in SIDES})
    done = {}
    for i in range(repeat):
        order = SIDES if i % 2 == 0 else SIDES[::-1]
        for side in order:
            note(f"run {i + 1}/{repeat}, {side} ({seconds:g} s)")
            units, dt = runs[side](seconds)
            if units <= 0 or dt <= 0:
                raise BenchError(f"{row.name} {side}: no work measured ({units} in {dt} s)")
            res.samples[side].append(units * row.per_op / dt)
            done[side, len(res.samples[side])] = units
    res.rates = {s: max(res.samples[s]) for s in SIDES}
    best = res.samples["fasttls"].index(res.rates["fasttls"]) + 1
    res.n = done["fasttls", best]
    return res


def versions():
    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "stdlib_openssl": ssl.OPENSSL_VERSION,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    try:
        from fasttls import _binding
        lib, ffi = _binding.lib, _binding.ffi
        info["fasttls_openssl"] = ffi.string(lib.OpenSSL_version(0)).decode()
    except Exception:
        info["fasttls_openssl"] = None
    try:
        from fasttls._version import __version__
        info["fasttls"] = __version__
    except Exception:
        info["fasttls"] = None
    return info


def pin_allocator():
    """Fix glibc malloc's mmap and trim thresholds for this process; returns a note, or None.

    By default glibc adapts both thresholds to the allocation history, and whether a 1 MiB
    buffer comes from a warm heap or from freshly faulted pages then depends on which large
    objects happened to be freed together: the 1 MiB row swings 0.4x-1.1x run to run, for both
    libraries, measuring the heap rather than TLS. Both sides run in this process, so pinning
    changes their conditions equally."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3
    size = 32 << 20  # glibc's largest dynamic mmap threshold on 64-bit
    if mallopt(m_mmap_threshold, size) and mallopt(m_trim_threshold, size):
        return "allocator: glibc malloc mmap/trim thresholds pinned at 32 MiB for this process " \
               "(both sides; --no-pin-malloc to leave them adaptive)"
    return None


def run_params(row, quick):
    """(seconds, repeat) of one row's timed runs; --quick makes every row short."""
    if quick:
        return (1 if row.fixed_time else 0.02), (1 if row.fixed_time else 2)
    return row.seconds, row.repeat


def run_bench(rows, quick=False, progress=None, status=None):
    """Run `rows` (Row objects) in one Env; ``progress(result)`` after each, ``status(index,
    row, text)`` at each step of each row (to show a long run is alive). Returns a JSON-able
    dict (the ``--json`` output, less what the command adds)."""
    t0 = time.perf_counter()
    results = []
    with Env() as env:
        for index, row in enumerate(rows):
            def note(text, index=index, row=row):
                if status:
                    status(index, row, text)

            runs = {}
            for side in SIDES:
                note(f"setting up {side}")
                runs[side] = row.setup(env, side)
            seconds, repeat = run_params(row, quick)
            res = measure(row, runs, seconds, repeat, note)
            results.append(res)
            if progress:
                progress(res)
        negotiated = sorted(env.negotiated)
        notes = dict(env.notes)
    return {
        "versions": versions(),
        "cipher": SUITE,
        "tls_version": "TLSv1.3",
        "negotiated": [list(x) for x in negotiated],
        "quick": quick,
        "elapsed_s": time.perf_counter() - t0,
        "rows": [r.as_dict() for r in results],
        "notes": notes,
    }
