"""The first login after a quiet spell: a cold daemon on a loaded server is not Down.

Real ltsp-server-advertise processes, a real get_hosts process, one box
standing in for several machines by CPU affinity:

- the light CPU: the thin client (get_hosts) and WARM servers whose sample
  is always fresh (SAMPLE_SECONDS = 3600), so they answer in a few ms;
- the loaded CPU: BURNERS processes spinning, and COLD daemons left idle
  past twice their sample lifetime (the default SAMPLE_SECONDS = 1).

The warm ones are at least half of the pool, so once they have answered the
straggler rule's grace is short (4 x the slowest, at least GRACE_MIN_MS). A
daemon that holds its first client until it has taken a fresh sample (it
did, before the sample cache served stale-while-revalidate) answers that
client only when a whole collection has had its share of the loaded CPU,
and get_hosts called it Down: "no answer within the straggler grace".
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from services import Daemon

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WARM, COLD = 8, 8
BURNERS = 6
# Past 2 x SAMPLE_SECONDS: where the daemon used to hold its first client.
IDLE_SECONDS = 2.5
ROUNDS = 2
BURN_LIMIT_SECONDS = 60  # the burners stop by themselves even if the test dies
BURNER = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"


def two_cpus():
    """({light CPU}, {loaded CPU}) of the ones we may run on, or None with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0))
    return None if len(cpus) < 2 else ({cpus[0]}, {cpus[-1]})


def conf(conf_dir, name, text):
    path = conf_dir / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path


@contextlib.contextmanager
def started(specs):
    """Daemons for (conf, address, cpus) specs, started at once (each pinned to its CPUs); killed at the end."""
    running = []
    try:
        for conf_path, address, cpus in specs:
            daemon = Daemon(conf_path, listen=(address,))
            running.append(daemon)
            os.sched_setaffinity(daemon.proc.pid, cpus)
        yield [daemon.start() for daemon in running]
    finally:
        for daemon in running:
            if daemon.proc.poll() is None:
                daemon.proc.kill()
            daemon.proc.wait()


@contextlib.contextmanager
def burning(cpus, count):
    """COUNT processes spinning on CPUS, for the block (and never past BURN_LIMIT_SECONDS)."""
    code = BURNER.format(limit=BURN_LIMIT_SECONDS)
    burners = []
    try:
        for _ in range(count):
            burners.append(subprocess.Popen([sys.executable, "-c", code]))
            os.sched_setaffinity(burners[-1].pid, cpus)
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def get_hosts_json(pool, cpus):
    """get_hosts --json on CPUS, the way a thin client runs it: {host: server entry}."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "LB_SERVERS": pool}
    env["LB_RETRY_SECONDS"] = "0"  # each run a first login
    done = subprocess.run(
        [sys.executable, "-m", "get_hosts", "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    assert done.returncode == 0, done.stderr
    return {server["host"]: server for server in json.loads(done.stdout)["servers"]}


@pytest.mark.skipif(two_cpus() is None, reason="needs two CPUs: one for the thin client, one loaded")
def test_cold_daemons_on_a_loaded_server_are_not_down(conf_dir):
    light, loaded = two_cpus()
    warm_conf = conf(conf_dir, "warm.conf", "SAMPLE_SECONDS = 3600\n")
    cold_conf = conf(conf_dir, "cold.conf", "")
    specs = [(warm_conf, f"127.0.6.{i + 1}:0", light) for i in range(WARM)]
    specs += [(cold_conf, f"127.0.7.{i + 1}:0", loaded) for i in range(COLD)]
    with started(specs) as running, burning(loaded, BURNERS):
        pool = " ".join(f"{host}:{port}" for host, port in (daemon.address for daemon in running))
        for round_ in range(ROUNDS):
            time.sleep(IDLE_SECONDS)
            servers = get_hosts_json(pool, light)
            assert len(servers) == WARM + COLD
            down = {host: s["reason"] for host, s in servers.items() if s["state"] == "Down"}
            times = {host: round(s["response_ms"] or -1) for host, s in servers.items()}
            assert not down, f"round {round_ + 1}: {down}\nresponse ms: {times}"
