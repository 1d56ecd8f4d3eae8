"""A subprocess whose stderr is collected line by line, for tests that wait on its log."""

from __future__ import annotations

import re
import subprocess
import threading
import time


class LoggedProcess:
    """COMMAND running with stderr read by a thread into .lines; wait_for() a log line.

    LABEL names it in a failure ("no log line matching ... in LABEL").
    POPEN_OPTIONS go to subprocess.Popen (env, pass_fds...).
    """

    def __init__(self, command, label, **popen_options):
        self.label = label
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            **popen_options,
        )
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern, count=1, timeout=10.0):
        """The first COUNT stderr lines matching PATTERN (a regex), waiting up to TIMEOUT s for them."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in self.lines if regex.search(line)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    log = "\n".join(self.lines)
                    raise AssertionError(f"no log line matching {pattern!r} in {self.label}; log so far:\n{log}")
                self._cond.wait(min(remaining, 0.1))
