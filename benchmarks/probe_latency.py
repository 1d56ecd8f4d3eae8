"""What get_hosts costs a login: the whole process against 30 live servers, plus stalled or powered-off ones.

Three pools, each run RUNS times as `python -m get_hosts` (a fresh process,
as LDM runs it), median wall time printed as milliseconds above bare
interpreter start-up (`python -c pass`, measured in the same run):

- 30 live servers: the real ltsp-server-advertise daemon (one process with
  30 --listen addresses, 127.0.2.1-30) when it is importable, else
  real-socket servers in this process serving wire.encode() bytes; the
  output says which.
- 30 live + 5 stalled: five listeners (127.0.3.1-5) that accept and never
  answer.
- 30 live + 5 powered off (root only): five hosts 198.18.30.10-14 in a network
  namespace behind a bridge, reached once, then the namespace is deleted so
  their SYNs go unanswered, as for a machine switched off. Not root: the row
  says so and is skipped.

With --balancer, two more rows: the 30 live servers through the real
ltsp-loadbalancer (polling them; LB_BALANCER set), with the balancer's own
choice and with LB_ALGORITHM=mac-hash (get_hosts looks up its MAC and sends
it; the balancer hashes on it). Same target as the live row.

Beside each, LDM's way: every server probed one after the other with a 5 s
timeout per host (LDM runs `nc -w 5` per host). The live row is measured here
in-process (connect and read to EOF, no fork of nc: a lower bound); for the
stalled and powered-off rows the 5 s per dead host is computed, not waited.

Targets: live <= +50 ms, powered off <= +150 ms (a server that has not taken
the connection gets GRACE_UNREACHED_MIN_MS, 75 ms), stalled <= +300 ms (one
that took it gets at least GRACE_MIN_MS, 250 ms: get_hosts/probe.py).
--strict exits 1 when one is missed.

    .venv/bin/python benchmarks/probe_latency.py [--runs 7] [--strict] [--balancer] [--python PATH]

--python runs get_hosts (and the bare start-up it is measured above) with
another interpreter: a thin client's python3, e.g. pyenv's 3.6.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "ltsp-server-advertise"))

from ltsp_lbcore import wire  # noqa: E402 (after the path it comes from)

LIVE, DEAD = 30, 5
LIVE_HOSTS = [f"127.0.2.{i}" for i in range(1, LIVE + 1)]
STALLED_HOSTS = [f"127.0.3.{i}" for i in range(1, DEAD + 1)]
OFF_NET, OFF_BRIDGE_IP = "198.18.30", "198.18.30.1"
OFF_HOSTS = [f"{OFF_NET}.{i}" for i in range(10, 10 + DEAD)]
LDM_TIMEOUT_S = 5.0
TARGETS_MS = {"live": 50, "stalled": 300, "off": 150, "balancer": 50, "balancer-mac": 50}


def free_port(host):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_listening(addresses, seconds=10.0):
    """True once every (host, port) accepts a connection."""
    deadline = time.monotonic() + seconds
    for address in addresses:
        while True:
            try:
                socket.create_connection(address, timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
    return True


# --- live servers ---------------------------------------------------------------


def start_daemon(addresses, workdir):
    """The real daemon on ADDRESSES, or None when it is not there or does not start."""
    try:
        import ltsp_server_advertise.cli  # noqa: F401
    except ImportError:
        return None
    config = os.path.join(workdir, "advertise.conf")
    with open(config, "w") as f:
        # No sshd on this machine: the login-service check is off, or every server would be Failing.
        f.write("STATE = ready\nSSH_PORT = 0\n")
    command = [sys.executable, "-c", "import sys; from ltsp_server_advertise.cli import main; sys.exit(main())"]
    command += ["--config", config]
    for host, port in addresses:
        command += ["--listen", f"{host}:{port}"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.path.join(ROOT, "ltsp-server-advertise"))
    daemon = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if wait_listening(addresses) and daemon.poll() is None:
        return daemon
    daemon.kill()
    print("note: the daemon did not start:", daemon.stderr.read().decode(errors="replace")[-300:])
    return None


class Listeners:
    """Listening sockets served by one thread: send BYTES and close, or (stall) accept and hold."""

    def __init__(self, addresses, data=None):
        self.socks = []
        for host, port in addresses:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(256)
            sock.setblocking(False)
            self.socks.append(sock)
        self.data = data
        self.held = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        import selectors

        selector = selectors.DefaultSelector()
        for sock in self.socks:
            selector.register(sock, selectors.EVENT_READ)
        while not self.stop.is_set():
            for key, _ in selector.select(0.05):
                try:
                    conn, _ = key.fileobj.accept()
                except OSError:
                    continue
                if self.data is None:
                    self.held.append(conn)  # stalled: never answer
                else:
                    conn.setblocking(True)
                    conn.sendall(self.data)
                    conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        for sock in self.socks + self.held:
            sock.close()


def start_balancer(addresses, workdir):
    """The real ltsp-loadbalancer polling ADDRESSES: (process, its host:port), or None when it does not start."""
    config = os.path.join(workdir, "balancer.conf")
    with open(config, "w") as f:
        f.write("SERVERS = " + " ".join(f"{h}:{p}" for h, p in addresses) + "\nPOLL_SECONDS = 1\n")
    port = free_port("127.0.0.1")
    command = [sys.executable, "-m", "ltsp_loadbalancer", "--config", config, "--listen", f"127.0.0.1:{port}"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    balancer = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and balancer.poll() is None:
        try:
            import urllib.request

            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/pool", timeout=2) as response:
                if json.loads(response.read())["polls"] >= 2:
                    return balancer, f"127.0.0.1:{port}"
        except OSError:
            pass
        time.sleep(0.2)
    balancer.kill()
    print("note: the balancer did not start")
    return None


# --- powered-off hosts -------------------------------------------------------------


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


class PoweredOff:
    """Hosts OFF_HOSTS that existed and then vanished: SYNs to them go unanswered."""

    def __init__(self):
        tag = secrets.token_hex(3)
        self.bridge, self.ns = f"g2br{tag}", f"g2bench-{tag}"
        outer, inner = f"g2bo{tag}", f"g2bi{tag}"
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{OFF_BRIDGE_IP}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        ip("netns", "add", self.ns)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", self.ns)
        ip("link", "set", outer, "master", self.bridge, "up")
        for host in OFF_HOSTS:
            ip("-n", self.ns, "addr", "add", f"{host}/24", "dev", inner)
        ip("-n", self.ns, "link", "set", inner, "up")
        self.reached = all(self._alive(host) for host in OFF_HOSTS)
        ip("netns", "del", self.ns)  # power off: the veth pair goes with it

    @staticmethod
    def _alive(host):
        """The host answers (a refusal is an answer): it was on before we switched it off."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, 377), timeout=1).close()
                return True
            except ConnectionRefusedError:
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def close(self):
        ip("netns", "del", self.ns, check=False)
        ip("link", "del", self.bridge, check=False)


# --- measuring ---------------------------------------------------------------------


def timed_run(command, env):
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, timeout=60)
    return (time.perf_counter() - start) * 1000.0, out


def median_ms(command, env, runs):
    times, last = [], None
    for _ in range(runs):
        ms, last = timed_run(command, env)
        times.append(ms)
    return statistics.median(times), last


# LDM's way in one process: connect and read to EOF, one host after the other,
# 5 s timeout each. LDM forks `nc -w 5` per host, so this is a lower bound.
SEQUENTIAL = """
import socket, sys
for word in sys.argv[1:]:
    host, port = word.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        while sock.recv(65536):
            pass
""".replace("TIMEOUT", repr(LDM_TIMEOUT_S))


def check_output(name, out, expected_hosts):
    """The run printed exactly the live hosts (in some order); say so when not."""
    hosts = out.stdout.decode().split()
    if out.returncode != 0 or sorted(hosts) != sorted(expected_hosts):
        printed = f"{len(hosts)} hosts (exit {out.returncode})"
        print(f"warning: {name}: get_hosts printed {printed}, expected {len(expected_hosts)}")
        print("  stderr:", out.stderr.decode(errors="replace")[-400:])
        return False
    return True


def down_reasons(env, command):
    """A --json run: the distinct reasons of the Down servers, and the probe phase they were in."""
    out = subprocess.run([*command, "--json"], env=env, capture_output=True, timeout=60)
    doc = json.loads(out.stdout)
    reasons = set()
    for server in doc["servers"]:
        if server["state"] == "Down":
            reason = server["reason"]
            phase = reason.rsplit(" while ", 1)[1].split(" (")[0] if " while " in reason else ""
            reasons.add(reason.split(":")[0] + (f" while {phase}" if phase else ""))
    return sorted(reasons)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per row, median reported (default 7)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--python",
        default=sys.executable,
        metavar="PATH",
        help="the interpreter get_hosts runs with, as a thin client's python3 (e.g. pyenv's 3.6); the "
        "bare start-up is measured with it too (default: this one)",
    )
    parser.add_argument(
        "--balancer", action="store_true", help="also the 30 live servers through a real ltsp-loadbalancer"
    )
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="probe_latency.")
    lts_conf = os.path.join(workdir, "lts.conf")
    with open(lts_conf, "w") as f:
        f.write("[Default]\nSCREEN_07 = ldm\n")
    live = [(host, free_port(host)) for host in LIVE_HOSTS]
    stalled = [(host, free_port(host)) for host in STALLED_HOSTS]
    cleanups = []
    try:
        daemon = start_daemon(live, workdir)
        if daemon is not None:
            cleanups.append(lambda: (daemon.terminate(), daemon.wait(10)))
            source = "the real ltsp-server-advertise daemon (one process, 30 --listen addresses)"
        else:
            document = wire.encode(
                wire.ServerStats(hostname="bench", state="ready", weight=100, rating=20.0, sample_age_ms=10)
            )
            servers = Listeners(live, document)
            cleanups.append(servers.close)
            source = "real-socket servers in this process serving wire.encode() bytes (daemon not available)"
        stall = Listeners(stalled, None)
        cleanups.append(stall.close)
        wait_listening(stalled)

        off_note = None
        if os.geteuid() != 0 or shutil.which("ip") is None:
            off_note = "skipped: needs root and iproute2 for network namespaces"
        else:
            try:
                off = PoweredOff()
                cleanups.append(off.close)
                if not off.reached:
                    off_note = "skipped: the namespaced hosts were never reachable"
            except subprocess.CalledProcessError as error:
                off_note = f"skipped: cannot build the namespace: {error.stderr.strip()}"

        def word(address):
            return f"{address[0]}:{address[1]}"

        pools = {
            "live": " ".join(map(word, live)),
            "stalled": " ".join(map(word, live + stalled)),
            "off": " ".join([*map(word, live), *(f"{h}:377" for h in OFF_HOSTS)]),
        }
        cases = [("live", "30 live"), ("stalled", "30 live + 5 stalled"), ("off", "30 live + 5 powered off")]
        extra_env = {}
        if args.balancer:
            started = start_balancer(live, workdir)
            if started is not None:
                process, address = started
                cleanups.append(lambda: (process.terminate(), process.wait(10)))
                pools["balancer"] = pools["balancer-mac"] = pools["live"]
                extra_env["balancer"] = {"LB_BALANCER": address}
                extra_env["balancer-mac"] = {"LB_BALANCER": address, "LB_ALGORITHM": "mac-hash"}
                cases += [("balancer", "30 live via balancer"), ("balancer-mac", "  the same, mac-hash")]
        base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT, "LTS_CONF": lts_conf}
        base_env["LB_RETRY_SECONDS"] = "0"  # each run a first login
        command = [args.python, "-m", "get_hosts"]

        bare_ms, _ = median_ms([args.python, "-c", "pass"], base_env, args.runs)
        rows = []
        ldm_live, _ = median_ms([args.python, "-c", SEQUENTIAL, *map(word, live)], base_env, args.runs)
        ldm_live -= bare_ms
        for key, label in cases:
            if key == "off" and off_note:
                rows.append((label, None, TARGETS_MS[key], None, off_note))
                continue
            env = dict(base_env, LB_SERVERS=pools[key], **extra_env.get(key, {}))
            timed_run(command, env)  # warm the page cache and the daemon's sample
            ms, out = median_ms(command, env, args.runs)
            check_output(label, out, [h for h, _ in live])
            if key.startswith("balancer"):
                explained = subprocess.run([*command, "--explain"], env=env, capture_output=True, timeout=60)
                if b"answered in" not in explained.stderr:
                    print(f"warning: {label}: the balancer did not answer; the row measures get_hosts probing")
            if key in ("live", "balancer", "balancer-mac"):
                ldm_ms, how = ldm_live, "measured: one process, sequential, no nc fork"
            else:
                ldm_ms, how = ldm_live + DEAD * LDM_TIMEOUT_S * 1000, f"live + {DEAD} x {LDM_TIMEOUT_S:g} s, computed"
            reasons = down_reasons(env, command)
            note = f"{how}; dead: {', '.join(reasons)}" if reasons else how
            rows.append((label, ms - bare_ms, TARGETS_MS[key], ldm_ms, note))
    finally:
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as error:
                print("cleanup:", error)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nprobe_latency: get_hosts as a whole process, median of {args.runs} runs, {os.cpu_count()} CPUs")
    print(f"live servers: {source}")
    print(f"get_hosts runs with {args.python}")
    print(f"bare interpreter start-up (python -c pass): {bare_ms:.1f} ms; figures below are above it\n")
    print(f"{'pool':26}{'get_hosts':>11}{'target':>9}{'LDM way':>11}{'ratio':>8}  how LDM's way was obtained")
    missed = []
    for label, extra, target, ldm_ms, note in rows:
        if extra is None:
            print(f"{label:26}{'-':>11}{'<= +' + str(target):>9}{'-':>11}{'-':>8}  {note}")
            continue
        ok = extra <= target
        if not ok:
            missed.append(label)
        ratio = (ldm_ms + bare_ms) / (extra + bare_ms)
        ratio = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.1f}x"
        flag = "" if ok else "  MISSED"
        figures = f"{f'+{extra:.0f} ms':>11}{'<= +' + str(target):>9}{f'+{ldm_ms:.0f} ms':>11}{ratio:>8}"
        print(f"{label:26}{figures}  {note}{flag}")
    print("\nLDM way: every server one after the other, 5 s timeout per host, also above start-up")
    print("ratio: LDM's way / get_hosts, whole processes (start-up included)")
    print("targets: " + ("all met" if not missed else "MISSED: " + ", ".join(missed)))
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
