"""`openssl s_server` as a test peer that the test can watch and command."""
import re
import subprocess
import threading
import time

TIMEOUT = 5.0  # how long to wait for a line of its output
JOIN = 20.0  # how long to wait for it to stop


class OpenSSLServer:
    """`openssl s_server -msg` on 127.0.0.1 for one connection; its output is collected by a
    thread so the test can wait (bounded) for a line, and commands go to its stdin."""

    def __init__(self, openssl, cert_dir, *extra):
        self.lines = []
        self.proc = subprocess.Popen(
            [openssl, "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-msg",
             "-cert", str(cert_dir / "cert.pem"), "-key", str(cert_dir / "key.pem"), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()
        accept = self.wait_for(lambda line: line.startswith("ACCEPT"), "ACCEPT")
        self.port = int(re.search(r":(\d+)\s*$", accept).group(1))

    def _collect(self):
        for line in self.proc.stdout:
            self.lines.append(line.decode("latin-1"))

    def wait_for(self, predicate, what="the expected line", timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if predicate(line):
                    return line
            time.sleep(0.02)
        tail = "".join(line for line in self.lines if line[:3] in (">>>", "<<<"))[-1500:]
        raise AssertionError(f"s_server never showed {what}; its last messages:\n{tail}")

    def command(self, text):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def stop(self):
        self.proc.kill()
        self.proc.wait(JOIN)
        self.reader.join(JOIN)
        self.proc.stdout.close()
        self.proc.stdin.close()
