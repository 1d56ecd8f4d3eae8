"""ltsp-loadbalancer against faults and hostile clients: each case issue 17's attack review found, kept as a test.

Real processes on loopback: daemons (services.Daemon, --ssh-port 0) and the
balancer (services.Balancer); the faults are real too (the balancer's own
descriptor limit lowered with prlimit, a pipelining client that never reads).

Before the fixes: a poll round that failed (EMFILE at os.pipe() with a name
in SERVERS) ended polling for the life of the process, silently, and the
balancer went on answering from frozen figures.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from services import Balancer, Daemon

SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody, unlike a virtualenv under /root
HOSTS_HEADERS = {"X-LTSP-Client": "get_hosts"}


def write(path, text):
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path


@pytest.fixture
def procs():
    started = []

    def track(proc):
        started.append(proc)
        return proc

    yield track
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()


@pytest.fixture
def daemon(conf_dir, procs):
    return procs(Daemon(write(conf_dir / "d.conf", "STATE = ready\n"), listen=("127.0.0.1:0",)).start())


def pool(balancer):
    return json.loads(balancer.request("GET", "/v1/pool")[1])


def hosts_on(connection, query=""):
    """(status, body) of GET /v1/hosts on an open keep-alive CONNECTION."""
    connection.request("GET", f"/v1/hosts{query}", headers=HOSTS_HEADERS)
    response = connection.getresponse()
    return response.status, response.read().decode("utf-8")


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def prlimit_files(pid, soft=None):
    """PID's RLIMIT_NOFILE, set to SOFT first when given: by a process of its own user and group (the balancer
    dropped to nobody; root here has no CAP_SYS_RESOURCE in a container)."""
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
    gid = int(next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1])
    code = (
        "import resource, sys; pid, soft = int(sys.argv[1]), sys.argv[2]; r = resource.RLIMIT_NOFILE\n"
        "if soft != 'none': resource.prlimit(pid, r, (int(soft), resource.prlimit(pid, r)[1]))\n"
        "print(*resource.prlimit(pid, r))"
    )
    own = {} if uid == os.getuid() else {"user": uid, "group": gid, "extra_groups": []}
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", code, str(pid), "none" if soft is None else str(soft)],
        capture_output=True,
        text=True,
        check=True,
        **own,
    )
    return tuple(map(int, done.stdout.split()))


def no_free_descriptor(pid):
    """Lower PID's soft RLIMIT_NOFILE to its lowest free descriptor number: its next open fails (EMFILE)."""
    used = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = min(set(range(len(used) + 1)) - used)
    saved = prlimit_files(pid)
    prlimit_files(pid, lowest_free)
    return saved


# --- 1. polling cannot stop unseen ------------------------------------------------------------


def test_a_failed_poll_round_is_one_line_and_polling_goes_on_and_stale_figures_are_not_answered(
    conf_dir, procs, daemon
):
    port = daemon.address[1]
    conf = write(conf_dir / "b.conf", f"SERVERS = localhost:{port}\nPOLL_SECONDS = 0.2\nPOLL_TIMEOUT_MS = 150\n")
    balancer = procs(Balancer(conf).start())
    balancer.wait_polls(2)
    host, bport = balancer.address
    kept = http.client.HTTPConnection(host, bport, timeout=5)  # open before the descriptors run out
    try:
        assert hosts_on(kept) == (200, "localhost\n")
        saved = no_free_descriptor(balancer.proc.pid)  # every round now fails at the resolver's pipe
        try:
            balancer.wait_for(r"poll round failed: OSError: .*Too many open files", timeout=5)
            # Figures older than 3 x POLL_SECONDS + POLL_TIMEOUT_MS: not answered from.
            time.sleep(3 * 0.2 + 0.15 + 0.3)
            status, body = hosts_on(kept)
            assert status == 503 and "polling has stopped" in body and body.count("\n") == 1, body
        finally:
            prlimit_files(balancer.proc.pid, saved[0])
        balancer.wait_for(r"poll round worked again", timeout=5)
        assert hosts_on(kept) == (200, "localhost\n")
    finally:
        kept.close()
    before = pool(balancer)["polls"]
    balancer.wait_polls(3)
    view = pool(balancer)
    assert view["polls"] >= before + 3 and view["last_poll_age_ms"] < view["stale_after_ms"] == 750
    failed = [line for line in balancer.lines if "poll round" in line]
    # One line when the rounds start failing, one when they work again: not one per round.
    assert len(failed) == 2, failed
    assert not [line for line in balancer.lines if "Traceback" in line]


def test_a_hanging_resolver_costs_a_few_threads_however_many_names_and_rounds():
    import threading

    from ltsp_loadbalancer.resolver import WORKERS, NameCache

    class Probe:
        def __init__(self, host):
            self.host, self.port = host, 377

    release = threading.Event()
    asked = []

    def hanging(host, port):
        asked.append(host)
        release.wait(10)
        return None, "cannot resolve the name: timed out"

    names = NameCache(lookup=hanging)
    probes = [Probe(f"app{i}.example") for i in range(200)]
    before = threading.active_count()
    for _round in range(20):  # twenty rounds while DNS hangs
        resolver = names.for_round(probes)
        assert resolver.drain() == []
        resolver.close()
    assert threading.active_count() - before <= WORKERS
    assert names.lookups_running() == 200  # one lookup per name, never one per round
    release.set()
    wait_until(lambda: names.lookups_running() == 0, 5, "the lookups to end")
    assert len(asked) == 200
    resolver = names.for_round(probes)  # the answers are kept: this round has them at once
    assert len(resolver.drain()) == 200
    resolver.close()
