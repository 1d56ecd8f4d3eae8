"""What a balancer name whose lookup hangs costs a login through a healthy balancer.

Two rows, each RUNS fresh `python -m get_hosts` processes (as LDM runs it),
median wall time printed as milliseconds above bare interpreter start-up
(`python -c pass`, measured in the same run and the same namespace):

- healthy alone: LB_BALANCER names one fake balancer on loopback (a real
  socket in this process answering /v1/hosts with one host of the pool);
- hanging name first: LB_BALANCER="slow-name.test:8377 <the same balancer>",
  where every lookup goes to a DNS server on loopback that takes the query
  and never answers (a real hanging resolver, not a patched one).

Every get_hosts runs in a mount namespace of its own (`unshare --mount`)
with a resolv.conf naming that DNS server bind-mounted on /etc/resolv.conf:
the machine's own resolver is never touched. Needs root.

The pool is refused ports: a run that misses the balancer's answer prints
the whole pool after probing, and the row says so (`answered: no`).

    .venv/bin/python benchmarks/balancer_names.py [--runs 7] [--timeout-ms 1000] [--tree DIR]

--tree runs the get_hosts of another checkout (e.g. `git archive HEAD~1 | tar -x -C DIR`),
for a before/after figure.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POOL = "127.0.0.1:1 127.0.0.2:1"
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n127.0.0.2\n"


class HangingDns:
    """UDP port 53 on a loopback address: takes every query, answers none."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _attempt in range(20):
            self.address = f"127.53.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
            try:
                self.sock.bind((self.address, 53))
                break
            except OSError:
                continue
        else:
            raise SystemExit("balancer_names: no free port 53 on 127.53.0.0/16")
        self.queries = 0
        self.sock.settimeout(0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                self.sock.recvfrom(4096)
                self.queries += 1
            except socket.timeout:
                continue

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


class Balancer:
    """A fake ltsp-loadbalancer: reads the request's head, answers ANSWER, closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            try:
                conn, _address = self.sock.accept()
            except socket.timeout:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(ANSWER)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def timed(command, env):
    started = time.monotonic()
    # cwd: `python -m` imports from the current directory first.
    out = subprocess.run(command, env=env, cwd=env["PYTHONPATH"], capture_output=True, timeout=60)
    return (time.monotonic() - started) * 1000.0, out


def median_ms(command, env, runs):
    times, outs = [], []
    for _run in range(runs):
        ms, out = timed(command, env)
        times.append(ms)
        outs.append(out)
    return statistics.median(times), outs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per row, median reported (default 7)")
    parser.add_argument("--timeout-ms", type=int, default=1000, help="LB_BALANCER_TIMEOUT (default 1000)")
    parser.add_argument("--tree", default=ROOT, help="the checkout whose get_hosts runs (default: this one)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("balancer_names: skipped: needs root for a private /etc/resolv.conf (unshare --mount)")
        return 0

    dns, balancer = HangingDns(), Balancer()
    workdir = tempfile.mkdtemp(prefix="balancer_names.")
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write(f"nameserver {dns.address}\noptions timeout:30 attempts:1\n")
    private = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.path.abspath(args.tree),
        "LTS_CONF": "/dev/null",
        "LB_SERVERS": POOL,
        "LB_BALANCER_TIMEOUT": str(args.timeout_ms),
        "LB_RETRY_SECONDS": "0",
    }
    healthy = f"127.0.0.1:{balancer.port}"
    rows = []
    try:
        bare_ms, _outs = median_ms([*private, sys.executable, "-c", "pass"], env, args.runs)
        command = [*private, sys.executable, "-m", "get_hosts"]
        for label, balancers in (("healthy alone", healthy), ("hanging name first", f"slow-name.test:8377 {healthy}")):
            row_env = dict(env, LB_BALANCER=balancers)
            timed(command, row_env)  # warm the page cache and the .pyc files
            ms, outs = median_ms(command, row_env, args.runs)
            answered = sum(out.stdout == b"127.0.0.2\n" for out in outs)
            rows.append((label, ms - bare_ms, answered))
    finally:
        dns.close()
        balancer.close()
        os.remove(resolv)
        os.rmdir(workdir)

    print(f"\nbalancer_names: get_hosts as a whole process, median of {args.runs} runs, {os.cpu_count()} CPUs")
    print(f"tree: {os.path.abspath(args.tree)}; LB_BALANCER_TIMEOUT {args.timeout_ms} ms")
    print(f"bare interpreter start-up in the namespace: {bare_ms:.1f} ms; figures below are above it")
    print(f"the hanging DNS server took {dns.queries} queries and answered none\n")
    print(f"{'LB_BALANCER':22}{'get_hosts':>11}{'answered':>10}")
    for label, extra, answered in rows:
        print(f"{label:22}{f'+{extra:.0f} ms':>11}{f'{answered}/{args.runs}':>10}")
    (_label, alone, _a), (_label, hanging, _h) = rows
    print(f"\nratio hanging / alone (whole processes): {(hanging + bare_ms) / (alone + bare_ms):.2f}x")
    print(f"hanging name above start-up: +{hanging:.0f} ms, bound LB_BALANCER_TIMEOUT {args.timeout_ms} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
