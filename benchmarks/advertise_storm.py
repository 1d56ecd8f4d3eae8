"""A school's morning against ltsp-server-advertise: waves of 1,400 clients at once.

Runs the real daemon as a subprocess on a free loopback port, throws WAVES
waves of 1,400 concurrent connections at it from a selector-driven client in
this process (each reads its document to EOF), and prints answers/s, p50/p99
latency, the daemon's RSS, its CPU seconds per 1,000 answers, failed
connections and its idle CPU with no clients. Then the same wave against a
baseline that starts a process per query, as xinetd's ldminfod and the X2Go
agent do: a tiny inetd-style server (at most BASELINE_INSTANCES children at
once, as xinetd's `instances`) that spawns `python3 -I -S -c` printing the
document from /proc, i.e. the cheapest possible Python process per query.

Targets on a 2-core machine with the load generator beside the daemon:
>= 5,000 answers/s, p99 <= 50 ms, RSS <= 30 MB, no failed connection, idle
CPU near zero. --strict exits 1 when one is missed.

    .venv/bin/python benchmarks/advertise_storm.py [--waves 10] [--strict]
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

CLIENTS_PER_WAVE = 1400
# Connections opened between two looks at the selector: the generator keeps
# reading answers while it opens the wave, so its own work does not pile onto
# the latencies it measures.
OPEN_BATCH = 50
CONNECTION_TIMEOUT_SECONDS = 30.0
IDLE_SECONDS = 3.0
BASELINE_INSTANCES = 8
DOCUMENT_END = b"</ltsp-server>\n"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The baseline's per-query process: read /proc, print a document, exit.
BASELINE_CHILD = r"""
import os
load = open('/proc/loadavg').read().split()
mem = dict(line.split(':', 1) for line in open('/proc/meminfo'))
kib = lambda k: int(mem[k].split()[0]) * 1024
os.write(1, ('<?xml version="1.0" encoding="UTF-8"?>\n<ltsp-server version="1">\n'
  '  <hostname>%s</hostname>\n  <state>ready</state>\n  <weight>100</weight>\n  <rating>0</rating>\n'
  '  <sample-age-ms>0</sample-age-ms>\n  <load-1min>%s</load-1min>\n'
  '  <mem-total-bytes>%d</mem-total-bytes>\n  <mem-available-bytes>%d</mem-available-bytes>\n'
  '</ltsp-server>\n' % (os.uname().nodename, load[0], kib('MemTotal'), kib('MemAvailable'))).encode())
"""


def baseline_server():
    """inetd 'nowait' in miniature: one spawned process per connection."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    print(listener.getsockname()[1], flush=True)
    children = 0
    argv = [sys.executable, "-I", "-S", "-c", BASELINE_CHILD]
    while True:
        while children >= BASELINE_INSTANCES:
            os.waitpid(-1, 0)
            children -= 1
        conn, _peer = listener.accept()
        # posix_spawn, not subprocess: no Popen object that could reap our children behind our back.
        os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, conn.fileno(), 1),
            ],
        )
        children += 1
        conn.close()
        while children and os.waitpid(-1, os.WNOHANG)[0]:
            children -= 1


# --- measuring a process -------------------------------------------------------


def cpu_seconds(pid, children=False):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:  # reaped children: the baseline's spawned processes
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def memory_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --- the load generator ---------------------------------------------------------


def wave(address, count):
    """count concurrent connections; returns (latencies in seconds, failures)."""
    selector = selectors.DefaultSelector()
    latencies = []
    failures = 0
    pending = 0
    opened = 0
    deadline = time.monotonic() + CONNECTION_TIMEOUT_SECONDS

    def finish(sock, started, ok):
        nonlocal failures, pending
        selector.unregister(sock)
        sock.close()
        pending -= 1
        if ok:
            latencies.append(time.monotonic() - started)
        else:
            failures += 1

    def on_event(sock, state):
        started, chunks = state
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    finish(sock, started, b"".join(chunks).endswith(DOCUMENT_END))
                    return
                chunks.append(chunk)
        except BlockingIOError:
            return
        except OSError:
            finish(sock, started, False)

    while opened < count or pending:
        for _ in range(min(OPEN_BATCH, count - opened)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            started = time.monotonic()
            result = sock.connect_ex(address)
            opened += 1
            if result not in (0, errno.EINPROGRESS):
                sock.close()
                failures += 1
                continue
            selector.register(sock, selectors.EVENT_READ, (started, []))
            pending += 1
        timeout = 0 if opened < count else max(0.0, deadline - time.monotonic())
        for key, _mask in selector.select(timeout):
            on_event(key.fileobj, key.data)
        if time.monotonic() > deadline:
            for key in list(selector.get_map().values()):
                finish(key.fileobj, key.data[0], False)
    selector.close()
    return latencies, failures


def percentile(sorted_values, fraction):
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def storm(address, waves, pid, with_children=False):
    """Run the waves; figures for one server."""
    cpu_before = cpu_seconds(pid, with_children)
    latencies, failures = [], 0
    started = time.monotonic()
    for _ in range(waves):
        wave_latencies, wave_failures = wave(address, CLIENTS_PER_WAVE)
        latencies += wave_latencies
        failures += wave_failures
    elapsed = time.monotonic() - started
    time.sleep(0.2)  # let the baseline reap its last children
    cpu = cpu_seconds(pid, with_children) - cpu_before
    latencies.sort()
    answers = len(latencies)
    return {
        "answers": answers,
        "answers_per_s": answers / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else float("nan")) * 1000,
        "cpu_s_per_1000": cpu / answers * 1000 if answers else float("nan"),
        "failed": failures,
        "seconds": elapsed,
    }


# --- the daemon ------------------------------------------------------------------


def start_daemon(config_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltsp_server_advertise.cli", "--config", config_path, "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = []
    for line in proc.stderr:
        log.append(line.rstrip())
        if "listening on 127.0.0.1:" in line:
            port = int(line.rsplit(":", 1)[1])
            threading.Thread(target=lambda: [log.append(line.rstrip()) for line in proc.stderr], daemon=True).start()
            return proc, ("127.0.0.1", port), log
    raise SystemExit("the daemon did not start:\n" + "\n".join(log))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waves", type=int, default=10, help="waves of 1,400 against the daemon (default 10)")
    parser.add_argument("--baseline-waves", type=int, default=1, help="waves against the baseline (default 1)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server()
        return 0

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    workdir = tempfile.mkdtemp(prefix="advertise-storm-")
    os.chmod(workdir, 0o755)
    config_path = os.path.join(workdir, "advertise.conf")
    with open(config_path, "w") as conf:
        conf.write("# benchmark: defaults\n")
    os.chmod(config_path, 0o644)

    daemon, address, daemon_log = start_daemon(config_path)
    baseline = None
    try:
        time.sleep(0.3)
        wave(address, 200)  # warm-up: first sample, caches
        rss_start_kib = memory_kib(daemon.pid, "VmRSS")
        result = storm(address, args.waves, daemon.pid)
        result["rss_mib"] = memory_kib(daemon.pid, "VmRSS") / 1024
        result["hwm_mib"] = memory_kib(daemon.pid, "VmHWM") / 1024
        time.sleep(0.5)
        idle_before = cpu_seconds(daemon.pid)
        time.sleep(IDLE_SECONDS)
        idle_percent = (cpu_seconds(daemon.pid) - idle_before) / IDLE_SECONDS * 100
        generator_cpu = resource.getrusage(resource.RUSAGE_SELF)
        generator_cpu_s = generator_cpu.ru_utime + generator_cpu.ru_stime

        baseline = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--baseline-server"],
            stdout=subprocess.PIPE,
            text=True,
        )
        baseline_address = ("127.0.0.1", int(baseline.stdout.readline()))
        base = storm(baseline_address, args.baseline_waves, baseline.pid, with_children=True)
        base["rss_mib"] = memory_kib(baseline.pid, "VmRSS") / 1024
    finally:
        daemon.terminate()
        daemon_status = daemon.wait(10)
        if baseline is not None:
            baseline.kill()
            baseline.wait()

    n = CLIENTS_PER_WAVE
    print(f"\nadvertise_storm: waves of {n:,} concurrent connections on loopback, {os.cpu_count()} CPUs")
    print(f"daemon: {args.waves} waves; baseline (one process per query): {args.baseline_waves} wave(s)\n")
    rows = [
        ("answers", "{:,.0f}", "answers"),
        ("answers/s", "{:,.0f}", "answers_per_s"),
        ("p50 latency (ms)", "{:.1f}", "p50_ms"),
        ("p99 latency (ms)", "{:.1f}", "p99_ms"),
        ("max latency (ms)", "{:.1f}", "max_ms"),
        ("CPU s per 1,000 answers", "{:.3f}", "cpu_s_per_1000"),
        ("failed connections", "{:,.0f}", "failed"),
        ("server RSS (MiB) *", "{:.1f}", "rss_mib"),
    ]
    print(f"{'':26}{'daemon':>14}{'process/query':>16}{'ratio':>10}")
    for label, fmt, key in rows:
        ratio = ""
        if key == "answers_per_s":
            ratio = f"{result[key] / base[key]:,.0f}x"
        elif key in ("p50_ms", "p99_ms", "cpu_s_per_1000"):
            ratio = f"1/{base[key] / result[key]:,.0f}" if result[key] > 0 else ""
        print(f"{label:26}{fmt.format(result[key]):>14}{fmt.format(base[key]):>16}{ratio:>10}")
    print("* the baseline's figure is its inetd-like parent only: each query also runs a whole Python process\n")
    print(f"{'daemon peak RSS (MiB)':26}{result['hwm_mib']:>14.1f}  (at start of the storm {rss_start_kib / 1024:.1f})")
    print(f"{'daemon idle CPU (%)':26}{idle_percent:>14.2f}  (over {IDLE_SECONDS:g} s, no clients)")
    print(f"{'load generator CPU (s)':26}{generator_cpu_s:>14.2f}  (this process, daemon part)")
    print(f"{'daemon exit status':26}{daemon_status:>14}  (SIGTERM)")

    targets = [
        ("answers/s >= 5,000", result["answers_per_s"] >= 5000),
        ("p99 <= 50 ms", result["p99_ms"] <= 50),
        ("RSS <= 30 MB", result["hwm_mib"] * 2**20 <= 30e6),
        ("no failed connection", result["failed"] == 0),
        ("idle CPU near zero (< 0.5%)", idle_percent < 0.5),
        ("clean exit on SIGTERM", daemon_status == 0),
    ]
    print("\ntargets: " + ", ".join(f"{name}: {'ok' if ok else 'MISSED'}" for name, ok in targets))
    warnings = [line for line in daemon_log if "WARNING" in line or "ERROR" in line]
    if warnings:
        print("daemon log warnings:\n  " + "\n  ".join(warnings[:10]))
    return 1 if args.strict and not all(ok for _name, ok in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
