"""get_hosts against a hostile admin file and a hostile environment: what the attack found, kept as regressions.

The contract: never leave a login screen without a host. Each case runs the
real command as LDM would, with the exact input the attack used, and checks
the outcome: a host on stdout (exit 0) and one warning naming file:line, or,
when nothing at all names a pool, one error line (exit 2). Before the fix:

- a syntax error in another client's section, a UTF-8 BOM or a key before
  any section: exit 2 and no host, although [Default] named the pool;
- --lts-conf or include of /dev/zero: "internal error: MemoryError", exit 2,
  no host even with LB_SERVERS exported; of a FIFO: a hang (killed at 15 s);
- LB_TIMEOUT of 10**10 and more: "internal error: OverflowError";
- a pool larger than the open-file limit: live servers marked Down with
  "Too many open files" (tests/test_probe_round.py probes 60 servers under a
  limit of 40).

The servers here are refused ports on loopback: the whole pool comes back
in configured order, which is what a login screen gets when nothing
answers, so the output is exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POOL = "127.0.0.1:1 127.0.0.2:1"  # refused: nothing listens on port 1
HOSTS = b"127.0.0.1 127.0.0.2\n"


def get_hosts(lts_conf, env=None, timeout=15):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "LTS_CONF": str(lts_conf)}
    environ.update(env or {})
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "get_hosts"], env=environ, cwd=ROOT, capture_output=True, timeout=timeout
    )
    return out, time.monotonic() - started


def warnings(out):
    return [line for line in out.stderr.decode().splitlines() if line.startswith("get_hosts: warning: ")]


# (what, lts.conf bytes, words the first warning must hold; {path} is the file)
BROKEN_FILES = [
    (
        "a syntax error in another client's section",
        b'[Default]\nLB_SERVERS = "' + POOL.encode() + b'"\n[lab-ws*]\nLB_ALGORITHM = "mac-hash\n',
        ["{path}:4: unterminated quoted value", "(line skipped)"],
    ),
    (
        "a broken section header of another client",
        b'[Default]\nLB_SERVERS = "' + POOL.encode() + b'"\n[00:1a:2b\nLB_SERVERS = evil\n',
        ["{path}:3: section header without ']'", "lines under it up to the next section"],
    ),
    ("a UTF-8 byte order mark", b'\xef\xbb\xbf[Default]\nLB_SERVERS = "' + POOL.encode() + b'"\n', None),
    (
        "a key before any section",
        b'LB_SERVERS = "' + POOL.encode() + b'"\n[Default]\nSCREEN_07 = ldm\n',
        ["{path}:1: LB_SERVERS", "outside any section: read as [Default]'s"],
    ),
]


@pytest.mark.parametrize(("text", "words"), [c[1:] for c in BROKEN_FILES], ids=[c[0] for c in BROKEN_FILES])
def test_a_broken_line_never_costs_the_pool_of_default(tmp_path, text, words):
    path = tmp_path / "lts.conf"
    path.write_bytes(text)
    out, _seconds = get_hosts(path)
    assert (out.returncode, out.stdout) == (0, HOSTS), out.stderr
    if words is not None:
        first = warnings(out)[0]
        for word in words:
            assert word.format(path=path) in first, first


def special_file(tmp_path, kind):
    if kind == "/dev/zero":
        return "/dev/zero"
    if kind == "a FIFO":
        os.mkfifo(tmp_path / "fifo")
        return str(tmp_path / "fifo")
    if kind == "a link to /dev/zero":
        (tmp_path / "link").symlink_to("/dev/zero")
        return str(tmp_path / "link")
    if kind == "a directory":
        return str(tmp_path)
    raise AssertionError(kind)


KINDS = ["/dev/zero", "a FIFO", "a link to /dev/zero", "a directory"]


@pytest.mark.parametrize("kind", KINDS)
def test_lts_conf_that_is_no_regular_file_falls_back_to_the_environment_at_once(tmp_path, kind):
    path = special_file(tmp_path, kind)
    out, seconds = get_hosts(path, {"LB_SERVERS": POOL})
    assert (out.returncode, out.stdout) == (0, HOSTS), out.stderr
    first = warnings(out)[0]
    assert first.startswith(f"get_hosts: warning: {path}: cannot read: is a") and "not a regular file" in first
    assert first.endswith("; using the environment alone")
    assert seconds < 5  # a FIFO used to block until killed


@pytest.mark.parametrize("kind", KINDS)
def test_an_include_that_is_no_regular_file_is_skipped_and_the_rest_read(tmp_path, kind):
    target = special_file(tmp_path, kind)
    path = tmp_path / "lts.conf"
    path.write_text(f'[Default]\nLB_SERVERS = "{POOL}"\ninclude "{target}"\n')
    out, seconds = get_hosts(path)
    assert (out.returncode, out.stdout) == (0, HOSTS), out.stderr
    first = warnings(out)[0]
    assert f"{path}:3: cannot include" in first and first.endswith("(include skipped)")
    assert seconds < 5


@pytest.mark.parametrize("kind", KINDS)
def test_with_no_pool_anywhere_it_is_one_error_line(tmp_path, kind):
    out, _seconds = get_hosts(special_file(tmp_path, kind))
    assert (out.returncode, out.stdout) == (2, b"")
    [line] = out.stderr.decode().splitlines()
    assert line.startswith("get_hosts: error: ") and "not a regular file" in line


@pytest.mark.parametrize("value", ["10000000000", "99999999999999999999", "3600001", "1e10", "-1"])
def test_a_huge_or_odd_lb_timeout_is_a_warning_and_the_default(tmp_path, value):
    out, _seconds = get_hosts(tmp_path / "absent", {"LB_SERVERS": POOL, "LB_TIMEOUT": value, "LTS_CONF": ""})
    assert (out.returncode, out.stdout) == (0, HOSTS), out.stderr
    assert any(f"LB_TIMEOUT in the environment: {value!r}" in line for line in warnings(out)), out.stderr
    assert "internal error" not in out.stderr.decode()
