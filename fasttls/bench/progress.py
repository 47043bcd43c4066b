"""Progress of ``python -m fasttls bench`` on standard error, so a long run is not silent: which
row (of how many), which side, which step. On a terminal one status line is rewritten in place
(and cleared before each table line); otherwise each row's setup and measuring steps are one
line each, and the individual timed runs only for rows whose runs take seconds (wrk's)."""
import sys
import time


class Progress:
    def __init__(self, total, stream=None):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = False         # a status line is on the terminal
        self._t0 = time.perf_counter()

    def status(self, index, row, text):
        """``harness.run_bench``'s status callback: row `index` (0-based) is at step `text`."""
        line = (f"fasttls bench [{index + 1}/{self.total}, {time.perf_counter() - self._t0:.0f} s]"
                f" {row.name}: {text}")
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self._shown = True
        elif row.fixed_time or not text.startswith("run "):
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self):
        """Before anything else is printed to the same terminal."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
