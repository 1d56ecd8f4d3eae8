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
  limit of 40);
- --status or --json through a balancer whose /v1/pool nests 100,000 deep
  ("internal error: RecursionError"), gives a list as a port or a pending
  count of 10**400 ("internal error: TypeError", "OverflowError"): exit 0 but
  a host line instead of the table; NaN as a response time: --json printed
  NaN, which is no JSON; other wrong types (a string as the document, a
  number as the host, bad stats, a number of a million digits): the pool was
  probed or a row dropped without a word.

The servers here are refused ports on loopback: the whole pool comes back
in configured order, which is what a login screen gets when nothing
answers, so the output is exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakeservers import answer, http

ROOT = Path(__file__).resolve().parent.parent
POOL = "127.0.0.1:1 127.0.0.2:1"  # refused: nothing listens on port 1
HOSTS = b"127.0.0.1 127.0.0.2\n"


def get_hosts(lts_conf, env=None, timeout=15, args=()):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "LTS_CONF": str(lts_conf)}
    environ["LB_RETRY_SECONDS"] = "0"  # each run a first login: no memory of the last run's host
    environ.update(env or {})
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "get_hosts", *args], env=environ, cwd=ROOT, capture_output=True, timeout=timeout
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


# --- --status and --json through a hostile balancer -------------------------------------

GOOD_STATS = {
    "hostname": "app",
    "state": "ready",
    "weight": 100,
    "rating": 10.0,
    "sample_age_ms": 5,
}


def pool_row(**change):
    row = {"host": "127.0.0.1", "port": 1, "state": "Idle", "pending": 0, "response_ms": 2.0, "stats": GOOD_STATS}
    row.update(change)
    return row


def pool_document(*rows):
    return json.dumps({"servers": list(rows)}).encode()


# (what, /v1/pool body, words the one warning about the balancer must hold)
HOSTILE_POOLS = [
    ("nested 100,000 deep", b'{"servers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ["nested deeper than 8"]),
    ("a list as the port", pool_document(pool_row(port=[1, 2])), ["servers[0].port is not a port", "[1, 2]"]),
    ("pending of 10**400", pool_document(pool_row(pending=10**400)), ["a number of 401 digits: 1000000000"]),
    ("NaN as the response time", pool_document(pool_row(response_ms=float("nan"))), ["NaN is not a number"]),
    ("Infinity as the rating", pool_document(pool_row(rating=float("inf"))), ["Infinity is not a number"]),
    ("a number as the host", pool_document(pool_row(host=127)), ["servers[0].host is not a host name: 127"]),
    ("a string as the document", b'"servers"', ["the document is not an object: 'servers'"]),
    ("servers as an object", b'{"servers": {"host": "127.0.0.1"}}', ["servers is not a list: {'host'"]),
    ("no servers", b'{"pool": []}', ["servers is missing"]),
    ("a row that is a list", pool_document([1]), ["servers[0] is not an object: [1]"]),
    ("stats of the wrong type", pool_document(pool_row(stats={**GOOD_STATS, "rating": "10"})), ["rating"]),
    ("a million-digit number", b'{"servers": [], "polls": ' + b"9" * 1_000_000 + b"}", ["1000000 digits"]),
    ("not UTF-8", b'{"servers": [{"host": "\xff"}]}', ["not JSON"]),
]


@pytest.mark.parametrize("mode", ["--status", "--json"])
@pytest.mark.parametrize(("body", "words"), [c[1:] for c in HOSTILE_POOLS], ids=[c[0] for c in HOSTILE_POOLS])
def test_a_hostile_pool_document_is_one_warning_and_the_pool_is_probed(tmp_path, serve, mode, body, words):
    balancer = serve(answer(http(200, body, content_type="application/json")))
    env = {"LB_SERVERS": POOL, "LB_BALANCER": f"127.0.0.1:{balancer.port}", "LB_BALANCER_TIMEOUT": "2000"}
    out, seconds = get_hosts(tmp_path / "absent", {**env, "LTS_CONF": ""}, args=[mode])
    assert out.returncode == 0, out.stderr
    assert "internal error" not in out.stderr.decode()
    [warning] = [line for line in warnings(out) if "balancer" in line]
    assert warning.startswith(f"get_hosts: warning: balancer 127.0.0.1:{balancer.port} sent a bad /v1/pool: ")
    for word in words:
        assert word in warning, warning
    assert len(warning) < 400  # the bad value is quoted, cut short
    # The table of the pool as probed here: both refused, so both Down with their own reason.
    if mode == "--status":
        lines = out.stdout.decode().splitlines()
        assert lines[0].split()[:2] == ["HOST", "STATE"]
        # Port 1 is not LB_PORT: --status names each entry with its port, as the pool does.
        assert [line.split()[:2] for line in lines[1:]] == [["127.0.0.1:1", "Down"], ["127.0.0.2:1", "Down"]]
    else:
        document = json.loads(out.stdout, parse_constant=lambda name: pytest.fail(f"{name} in --json's output"))
        assert [(s["host"], s["state"]) for s in document["servers"]] == [("127.0.0.1", "Down"), ("127.0.0.2", "Down")]
        assert all("connect failed" in s["reason"] for s in document["servers"])
    assert seconds < 5
