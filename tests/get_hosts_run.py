"""The real get_hosts command as the tests run it: ``python -m get_hosts`` in a clean environment.

Shared by tests/test_cli.py and tests/test_retry.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, env=None, lts_conf=None, shell=None):
    """Run get_hosts; ENV adds to a clean environment (no LB_* or SERVER from ours)."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT, "LANG": "C.UTF-8"}
    # Each run a client of its own: no memory of the last run (tests/test_retry.py tests it).
    environ["LB_RETRY_SECONDS"] = "0"
    if lts_conf is not None:
        environ["LTS_CONF"] = str(lts_conf)
    environ.update(env or {})
    command = [sys.executable, "-m", "get_hosts", *args]
    if shell is not None:
        command = ["sh", "-c", shell, "sh", *command]
    return subprocess.run(command, env=environ, cwd=ROOT, capture_output=True, timeout=60)


def pool(*servers):
    return " ".join(s.pool_word if hasattr(s, "pool_word") else s for s in servers)
