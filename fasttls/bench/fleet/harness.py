"""The fleet: N server processes (fleet.server) behind haproxy in TCP mode (round robin), all
on 127.0.0.1, sharing resumption state the way a sharing mode says.

    with Fleet("tickets", workdir, cert, key, servers=3) as fleet:
        fleet.address              # haproxy's frontend: (host, port)
        fleet.reload()             # SIGHUP every server, wait until each has reloaded
        fleet.stats()              # each server's counters, asked directly (not via haproxy)

Every wait is bounded; stop() (or leaving the with block) kills every process it started."""
import contextlib
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from fasttls.bench.fleet.clients import read_until_closed
from fasttls.bench.fleet.sharing import Sharing, sharing

__all__ = ["Fleet", "FleetError", "HAPROXY_CONF"]

START_TIMEOUT = 30.0   # a server or haproxy must be listening within this
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

HAPROXY_CONF = """\
global
    maxconn 2048
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend fleet
    bind 127.0.0.1:{port}
    default_backend servers
backend servers
    balance roundrobin
{servers}
"""


class FleetError(RuntimeError):
    """The fleet could not be started, or a server did not do what it was told."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child, before exec (Linux): SIGKILL when the harness dies, so a harness killed
    without its teardown leaves no haproxy behind (the servers watch their stdin instead)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FleetError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.02)
    raise FleetError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Fleet:
    """Servers and haproxy for one sharing mode; a context manager."""

    def __init__(self, mode: str, workdir: str, certfile: str, keyfile: str, *,
                 servers: int = 3, impl: str = "fasttls", version: Optional[str] = None,
                 haproxy: Optional[str] = "haproxy", ca_pem: Optional[bytes] = None,
                 **mode_options: Any) -> None:
        """`ca_pem`: what the harness trusts when it asks a server for its counters (default:
        the certificate itself, for a self-signed one). `haproxy=None`: servers only, no
        balancer (`ports()` gives their addresses)."""
        self.sharing: Sharing = sharing(mode, workdir, **mode_options)
        self.mode = mode
        self.workdir = workdir
        self.certfile, self.keyfile = certfile, keyfile
        self.count, self.impl, self.version = servers, impl, version
        self.haproxy_program = haproxy
        self.servers: List[Tuple[str, subprocess.Popen, int]] = []  # (name, process, port)
        self.haproxy: Optional[subprocess.Popen] = None
        self.address: Tuple[str, int] = ("127.0.0.1", 0)
        if ca_pem is None:
            with open(certfile, "rb") as f:
                ca_pem = f.read()
        self._stats_ctx = ssl.create_default_context(cadata=ca_pem.decode("ascii"))

    # ---- lifetime

    def start(self) -> "Fleet":
        try:
            self.sharing.start()
            for i in range(self.count):
                self.servers.append(self._start_server(f"s{i}"))
            if self.haproxy_program is not None:
                self._start_haproxy()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_server(self, name: str) -> Tuple[str, subprocess.Popen, int]:
        args = [sys.executable, "-m", "fasttls.bench.fleet.server", "--name", name,
                "--cert", self.certfile, "--key", self.keyfile, "--mode", self.mode,
                "--config", json.dumps(self.sharing.server_config()), "--impl", self.impl]
        if self.version:
            args += ["--version", self.version]
        env = dict(os.environ)
        # The fasttls this harness runs (a checkout or the installed one) in the child too.
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__)))))
        env["PYTHONPATH"] = package_parent + os.pathsep + env.get("PYTHONPATH", "")
        err = open(os.path.join(self.workdir, f"{name}.err"), "wb")
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=err, env=env, cwd=self.workdir)
        err.close()
        try:
            port = self._read_port(proc, name)
        except BaseException:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
            raise
        return name, proc, port

    def _read_port(self, proc: subprocess.Popen, name: str) -> int:
        assert proc.stdout is not None
        seen = b""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline -
                                                                 time.monotonic()))
            if not ready:
                break
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
            match = re.search(rb"LISTENING (\d+)\n", seen)
            if match:
                return int(match.group(1))
        with open(os.path.join(self.workdir, f"{name}.err"), "rb") as f:
            errors = f.read()[-2000:]
        raise FleetError(f"fleet server {name} did not start: {errors.decode(errors='replace')}")

    def _start_haproxy(self) -> None:
        assert self.haproxy_program is not None
        lines = "\n".join(f"    server {name} 127.0.0.1:{port}"
                          for name, _proc, port in self.servers)
        for _attempt in range(5):  # a free port can be taken before haproxy binds it
            port = _free_port()
            conf = os.path.join(self.workdir, "haproxy.cfg")
            with open(conf, "w") as f:
                f.write(HAPROXY_CONF.format(port=port, servers=lines))
            log = open(os.path.join(self.workdir, "haproxy.log"), "wb")
            proc = subprocess.Popen([self.haproxy_program, "-db", "-f", conf],
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=self.workdir,
                                    preexec_fn=_die_with_parent)
            log.close()
            self.haproxy = proc
            try:
                _wait_listening(port, proc)
            except FleetError:
                self._stop_haproxy()
                with open(os.path.join(self.workdir, "haproxy.log"), "rb") as f:
                    output = f.read()
                if b"cannot bind" in output or b"in use" in output:
                    continue
                raise FleetError(f"haproxy did not start: {output[-2000:]!r}") from None
            self.address = ("127.0.0.1", port)
            return
        raise FleetError("haproxy could not bind a free port in 5 attempts")

    def _stop_haproxy(self) -> None:
        if self.haproxy is not None:
            self.haproxy.kill()
            self.haproxy.wait(STOP_TIMEOUT)
            self.haproxy = None

    def stop(self) -> None:
        self._stop_haproxy()
        for _name, proc, _port in self.servers:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
        for _name, proc, _port in self.servers:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.servers = []
        self.sharing.stop()

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- control

    def server_names(self) -> List[str]:
        return [name for name, _proc, _port in self.servers]

    def ports(self) -> List[int]:
        """Each server's own port (haproxy's frontend is `address`)."""
        return [port for _name, _proc, port in self.servers]

    def ask(self, port: int) -> Dict[str, Any]:
        """One server's counters, over TLS directly to it (not through haproxy)."""
        with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as raw:
            with self._stats_ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                sock.sendall(b"STATS\n")
                data = read_until_closed(lambda: sock.recv(65536))
        return json.loads(data)

    def stats(self) -> Dict[str, Dict[str, Any]]:
        return {name: self.ask(port) for name, _proc, port in self.servers}

    def reload(self, timeout: float = START_TIMEOUT) -> None:
        """SIGHUP every server, then wait until each reports the sharing mode's generation
        (so the next step of a rotation starts only once the whole fleet has this one)."""
        want = self.sharing.generation
        for name, proc, _port in self.servers:
            if proc.poll() is not None:
                raise FleetError(f"fleet server {name} exited with {proc.returncode}")
            proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        for name, _proc, port in self.servers:
            while True:
                stats = self.ask(port)
                if stats["reload_errors"]:
                    raise FleetError(f"fleet server {name} failed to reload")
                if stats["generation"] >= want:
                    break
                if time.monotonic() > deadline:
                    raise FleetError(f"fleet server {name} is at generation "
                                     f"{stats['generation']}, not {want}, after {timeout} s")
                time.sleep(0.01)

    # Ticket-key rotations (sharing mode "tickets"), each step fleet-wide before the next.

    def rotate_ticket_keys(self) -> None:
        """The two-phase rotation (see TicketKeySharing): stage a new key, reload, promote it,
        reload. No ticket in the fleet is ever under a key some server lacks."""
        self.sharing.stage_next_key()  # type: ignore[attr-defined]
        self.reload()
        self.sharing.promote_next_key()  # type: ignore[attr-defined]
        self.reload()

    def replace_ticket_keys(self) -> None:
        """Every key replaced at once: every ticket in the fleet is then under a dropped key."""
        self.sharing.replace_all_keys()  # type: ignore[attr-defined]
        self.reload()
