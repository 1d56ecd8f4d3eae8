"""The first login of the morning: a daemon's first answer after an idle spell, against a warm one.

Starts PAIRS pairs of real ltsp-server-advertise processes on loopback and
loads their machine with BURNERS processes spinning. With two CPUs or more
the box stands for two machines: this process, the clients, on the first
CPU, the daemons and the burners (2 per CPU by default) on the others, so
that what a daemon does after it has answered (taking the fresh sample)
cannot delay the client's own wake-up, as it could not across a network.
ROUNDS times, every daemon sits idle for IDLE seconds, then each
pair is asked once per daemon:

- cold: SAMPLE_SECONDS 1 (the default), so its sample is stale when asked:
  the first login after a quiet spell;
- warm (the baseline, same run, same idle): SAMPLE_SECONDS 3600, so its
  sample is still fresh: what a daemon does with a sample it may reuse.

Both processes have slept equally long, so what the operating system costs
to wake one up (cold caches, the scheduler placing a long sleeper behind
the burners) is in both figures and the ratio shows only what the sample
cache adds. The hot answers (each daemon asked every 20 ms afterwards) show
that wake-up cost on its own; it varies a lot from one answer to the next
on a loaded machine, hence several rounds. An answer's time is connect to
EOF, as get_hosts counts it. The pairs alternate which daemon is asked
first.

Prints the cold and warm first answers (median and worst, ms), the ratio,
the hot answers, the sample-age-ms the cold answers carried and the
daemons' CPU while idle. A cold answer is served from a stale sample (its
age over SAMPLE_SECONDS) unless the daemon's once-a-minute idle sample
happened to land just before it, as it does near IDLE = 60 s; the count is
printed. A daemon that holds its first client for a fresh sample shows a
young age and a slow answer instead. Target: cold median / warm median <= 2.
--strict exits 1 when it is missed.

    .venv/bin/python benchmarks/cold_daemon.py [--idle 5] [--rounds 4] [--pairs 12] [--strict]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOT_SPACING_SECONDS = 0.02
# After the first answers: time for the refresh the cold one made due to
# land, so that the hot answers meet no sampler running.
SETTLE_SECONDS = 0.3
BURNER = "import time\nend = time.monotonic() + {limit}\nwhile time.monotonic() < end:\n    pass\n"
AGE = re.compile(rb"<sample-age-ms>(\d+)</sample-age-ms>")
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)$")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machines():
    """(client CPUs, server CPUs): the first of ours and the others; both all of them with one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return (set(cpus), set(cpus)) if len(cpus) < 2 else ({cpus[0]}, set(cpus[1:]))


def start_daemons(count, config_path, cpus):
    """COUNT daemons started at once on CPUS; [(process, port)] once each is listening."""
    command = [sys.executable, "-m", "ltsp_server_advertise.cli", "--config", config_path, "--listen", "127.0.0.1:0"]
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(command, **quiet) for _ in range(count)]
    for proc in procs:
        os.sched_setaffinity(proc.pid, cpus)
    daemons = []
    for proc in procs:
        for line in proc.stderr:
            match = LISTENING.search(line.rstrip())
            if match:
                daemons.append((proc, int(match[1])))
                break
        else:
            raise SystemExit(f"a daemon did not start (exit status {proc.wait()})")
    # Nothing reads their stderr from now on: at the default level they log
    # nothing more, and a full pipe could only block a chatty one.
    return daemons


def ask(port):
    """(seconds from connect to EOF, the document's sample-age-ms)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    elapsed = time.monotonic() - started
    match = AGE.search(b"".join(chunks))
    if match is None:
        raise SystemExit(f"no sample-age-ms in the answer of port {port}: {b''.join(chunks)[:200]!r}")
    return elapsed, int(match[1])


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def write_config(workdir, name, text):
    path = os.path.join(workdir, name)
    with open(path, "w") as conf:
        conf.write(text)
    os.chmod(path, 0o644)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=5.0, help="seconds the daemons sit idle first (default 5)")
    parser.add_argument("--pairs", type=int, default=12, help="pairs of daemons, one cold and one warm (default 12)")
    parser.add_argument("--rounds", type=int, default=4, help="idle spells, each then asks every pair (default 4)")
    parser.add_argument("--hot", type=int, default=5, help="hot answers per daemon afterwards (default 5)")
    client_cpus, server_cpus = machines()
    parser.add_argument(
        "--burners", type=int, default=2 * len(server_cpus), help="CPU-burning processes (2 per server CPU)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when cold/warm > 2")
    args = parser.parse_args()
    if args.idle <= 2:
        parser.error("--idle must be over 2 s (twice SAMPLE_SECONDS), or the first answer is not a cold one")

    workdir = tempfile.mkdtemp(prefix="cold-daemon-")
    os.chmod(workdir, 0o755)
    cold_conf = write_config(workdir, "cold.conf", "SAMPLE_SECONDS = 1\n")
    warm_conf = write_config(workdir, "warm.conf", "SAMPLE_SECONDS = 3600\n")

    per_round = args.idle + args.pairs * (SETTLE_SECONDS + 2 * args.hot * HOT_SPACING_SECONDS * 3)
    limit = 30 + args.rounds * per_round
    burners = []
    os.sched_setaffinity(0, client_cpus)
    cold_daemons = start_daemons(args.pairs, cold_conf, server_cpus)
    warm_daemons = start_daemons(args.pairs, warm_conf, server_cpus)
    everyone = cold_daemons + warm_daemons
    last_asked = {}
    cold, cold_ages, warm, hot, idles = [], [], [], [], []
    try:
        burner_code = BURNER.format(limit=limit)
        burners = [subprocess.Popen([sys.executable, "-c", burner_code]) for _ in range(args.burners)]
        for burner in burners:
            os.sched_setaffinity(burner.pid, server_cpus)
        started = time.monotonic()
        cpu_before = [cpu_seconds(proc.pid) for proc, _port in everyone]
        time.sleep(args.idle)
        idle_cpu = [cpu_seconds(proc.pid) - before for (proc, _port), before in zip(everyone, cpu_before)]
        idle_used = time.monotonic() - started
        for round_ in range(args.rounds):
            if round_:
                time.sleep(args.idle)
            for index, ((_c, cold_port), (_w, warm_port)) in enumerate(zip(cold_daemons, warm_daemons)):
                idles.append(time.monotonic() - last_asked.get(cold_port, started))
                order = [(cold_port, cold), (warm_port, warm)]
                for port, figures in order if (index + round_) % 2 == 0 else order[::-1]:
                    elapsed, age = ask(port)
                    figures.append(elapsed * 1000)
                    if figures is cold:
                        cold_ages.append(age)
                time.sleep(SETTLE_SECONDS)
                for _ in range(args.hot):
                    for port in (cold_port, warm_port):
                        hot.append(ask(port)[0] * 1000)
                    time.sleep(HOT_SPACING_SECONDS)
                last_asked[cold_port] = time.monotonic()
    finally:
        for proc, _port in everyone:
            proc.terminate()
        for proc, _port in everyone:
            proc.wait(10)
        for burner in burners:
            burner.kill()
            burner.wait()

    cold_median, warm_median, hot_median = statistics.median(cold), statistics.median(warm), statistics.median(hot)
    ratio = cold_median / warm_median
    stale = sum(age > 1000 for age in cold_ages)
    idle_percent = sum(idle_cpu) / len(idle_cpu) / idle_used * 100
    load = f"{args.burners} burners with the daemons on CPUs {sorted(server_cpus)}, clients on {sorted(client_cpus)}"
    print(f"\ncold_daemon: {args.pairs} pairs of daemons, {args.rounds} rounds, {load}")
    idle_range = f"{min(idles):.1f}-{max(idles):.1f}"
    print(f"idle used: {args.idle:g} s requested; each daemon idle {idle_range} s at its first answer of a round\n")
    rows = [
        ("cold first answer (ms)", f"median {cold_median:7.2f}   worst {max(cold):7.2f}   (n={len(cold)})"),
        ("warm first answer, baseline (ms)", f"median {warm_median:7.2f}   worst {max(warm):7.2f}   (n={len(warm)})"),
        ("ratio cold/warm", f"median {ratio:7.2f}   worst {max(cold) / max(warm):7.2f}"),
        ("hot answer (ms)", f"median {hot_median:7.2f}   p90   {percentile(hot, 0.9):7.2f}   (n={len(hot)})"),
        ("sample-age-ms of the cold answers", f"{min(cold_ages)}-{max(cold_ages)} ({stale} of {len(cold)} stale)"),
        ("daemon CPU while idle (%)", f"{idle_percent:.3f} per daemon (over {idle_used:.1f} s)"),
    ]
    for label, text in rows:
        print(f"{label:36}{text}")
    print("per pair, cold/warm ms: " + " ".join(f"{c:.1f}/{w:.1f}" for c, w in zip(cold, warm)))
    ok = ratio <= 2
    print(f"\ntarget: cold median / warm median <= 2: {'ok' if ok else 'MISSED'}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
