"""The admin's view at 1,000 servers: the status page, /metrics, and what they cost the logins.

Runs the real programs on loopback: one ltsp-server-advertise process
listening on 950 addresses (127.1.0.1 to 127.1.3.200, one --listen each,
all ready), one drained daemon on 30 addresses, one WEIGHT = 200 daemon on
10, and 10 addresses where nothing listens (Down): 1,000 servers for one
ltsp-loadbalancer polling them every 2 s (its defaults otherwise).
``--servers N`` scales the same mix. Then:

- the page in headless Chromium (when /usr/bin/chromium and chromedriver
  are there): time from navigation to the server's table on screen (the
  page's own mark after the first frame), and one refresh from
  /status/rows (fetch of the rows the server rendered, and the update of
  the 1,000 rows in place, without reloading);
- ``/``, ``/status/rows`` and ``/metrics`` answer times, and /v1/pool and
  /v1/history for reference: median and p99 over REQUESTS sequential
  requests (each view is built once per poll and shared: views.py), and
  the first request after a poll, which builds it (median of BUILDS);
- a burst of BURST_REQUESTS ``GET /`` at once, each client reading 10 KiB
  and leaving, while logins go on: the balancer's CPU and peak RSS, the
  slowest login;
- ``/v1/hosts`` (one login, the whole pool) latency alone, then while a
  second process fetches ``/`` and ``/metrics`` back to back (the worst
  case: a scrape always running), then with a realistic admin load (four
  open pages refreshing from /status/rows every 2 s and Prometheus scraping
  every 5 s), each twice in turn; ratios to the first;
- the balancer's RSS at the end (its budget: 80 MiB).

Targets on a 2-core machine with everything on it: page drawn < 1 s;
``/`` and ``/metrics`` median <= 50 ms; /v1/hosts p99 under the realistic
admin load within 1.5 x of alone (no visible move); in the burst, peak RSS
<= 80 MiB and no login slower than LB_BALANCER_TIMEOUT (300 ms). --strict
exits 1 when one is missed.

    .venv/bin/python benchmarks/status_page.py [--requests 200] [--strict]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LISTENING = re.compile(r"listening on (\S+):(\d+)$")
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CONFIGS = {"ready": "", "drain": "STATE = drain\n", "heavy": "WEIGHT = 200\n"}


def group_sizes(servers):
    """How many servers of each kind: 3 % drained, 1 % WEIGHT = 200, 1 % Down, the rest ready."""
    drain, heavy, down = max(1, servers * 3 // 100), max(1, servers // 100), max(1, servers // 100)
    return {"ready": servers - drain - heavy - down, "drain": drain, "heavy": heavy, "down": down}


TARGET_PAGE_SECONDS = 1.0
TARGET_ANSWER_MS = 50.0
TARGET_HOSTS_P99_RATIO = 1.5

# A second process, so that its requests do not share this one's GIL with the measured ones.
SCRAPER = r"""
import http.client, sys, time
host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
connection = http.client.HTTPConnection(host, port, timeout=30)
def get(path):
    connection.request("GET", path)
    connection.getresponse().read()
if mode == "continuous":
    while True:
        get("/")
        get("/metrics")
else:  # pages refreshing every 2 s (as their script does), Prometheus every 5 s
    pages, tick = int(mode), 0
    get("/")
    while True:
        for _ in range(pages):
            get("/status/rows")
        if tick % 5 == 0:
            get("/metrics")
        tick += 2
        time.sleep(2)
"""


# 600 clients asking for the page at once, each reading 10 KiB of it and leaving (a reload storm, a script
# gone wrong): in a process of its own, so that the logins timed meanwhile do not wait for it.
BURST = r"""
import selectors, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
started = time.monotonic()
sockets = [socket.create_connection((host, port), timeout=60) for _ in range(count)]
selector = selectors.DefaultSelector()
for sock in sockets:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: balancer\r\n\r\n")
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ, [b""])
statuses = {}
while selector.get_map():  # each client reads 10 KiB of its answer (or all of a short one), then leaves
    for key, _events in selector.select(timeout=60):
        got = key.data
        chunk = key.fileobj.recv(10240 - len(got[0]))
        got[0] += chunk
        if not chunk or len(got[0]) >= 10240 or got[0].endswith(b"\n") and b" 503 " in got[0][:13]:
            status = got[0][9:12].decode() or "closed"
            statuses[status] = statuses.get(status, 0) + 1
            selector.unregister(key.fileobj)
            key.fileobj.close()
print(time.monotonic() - started, " ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
"""
BURST_REQUESTS = 600
BUILDS = 5  # polls after which each view's first request (its build) is timed
LOGIN_BUDGET_MS = 300  # LB_BALANCER_TIMEOUT's default: slower, and get_hosts probes the pool itself


class Service:
    """One of our programs in a subprocess; its addresses come from its "listening on" log lines."""

    def __init__(self, args, sockets):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.addresses = []
        log = []
        deadline = time.monotonic() + 60
        while len(self.addresses) < sockets:
            line = self.proc.stderr.readline().decode(errors="replace")
            log.append(line)
            if not line or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise SystemExit(f"{args[0]} did not start; its log:\n{''.join(log[-10:])}")
            match = LISTENING.search(line.strip())
            if match:
                self.addresses.append(f"{match[1]}:{match[2]}")
        # Keep reading its log so that it never blocks on a full pipe.
        self._drain = subprocess.Popen(["cat"], stdin=self.proc.stderr, stdout=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.wait(timeout=5)

    def rss_mib(self, field="VmRSS"):
        """The resident memory now (VmRSS), or its peak since the start (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def addresses(first_octet, count, start=0):
    """COUNT loopback addresses 127.FIRST_OCTET.x.y, from the START-th on."""
    return [f"127.{first_octet}.{i // 250}.{i % 250 + 1}" for i in range(start, start + count)]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed_gets(connection, path, count):
    """Seconds of COUNT sequential GETs of PATH on one keep-alive connection."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
        assert response.status in (200, 503), (path, response.status)
    return times


def client_address(index):
    """A loopback address of its own for login INDEX: the balancer counts one login per client address."""
    return f"127.{100 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"


def timed_logins(host, port, count):
    """Seconds of COUNT sequential logins, each a client of its own (its own address and connection)."""
    times = []
    for index in range(count):
        started = time.perf_counter()
        connection = http.client.HTTPConnection(host, port, timeout=30, source_address=(client_address(index), 0))
        connection.request("GET", "/v1/hosts", headers={"X-LTSP-Client": "get_hosts"})
        response = connection.getresponse()
        response.read()
        connection.close()
        times.append(time.perf_counter() - started)
        assert response.status in (200, 503), ("/v1/hosts", response.status)
    return times


def describe(times):
    return f"median {statistics.median(times) * 1000:6.1f} ms, p99 {percentile(times, 0.99) * 1000:6.1f} ms"


def wait_for_polls(connection, count, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        connection.request("GET", "/v1/pool")
        pool = json.loads(connection.getresponse().read())
        if pool["polls"] >= count:
            return pool
        if time.monotonic() > deadline:
            raise SystemExit(f"the balancer finished {pool['polls']} polls in {timeout} s")
        time.sleep(0.2)


def browser_figures(url, loads, servers):
    """(seconds to the whole table drawn and to the first paint, per load; seconds of one refresh), or None.

    None when Chromium or chromedriver is missing.
    """
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        return None
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        drawn, first = [], []
        for _ in range(loads):
            driver.get(url)
            body = driver.find_element("tag name", "body")
            deadline = time.monotonic() + 30
            while body.get_attribute("data-drawn-ms") is None and time.monotonic() < deadline:
                time.sleep(0.02)
            drawn.append(float(body.get_attribute("data-drawn-ms")) / 1000)
            paint = "return performance.getEntriesByName('first-contentful-paint').map(e => e.startTime)"
            first.extend(value / 1000 for value in driver.execute_script(paint))
            rows = driver.execute_script("return document.querySelectorAll('#servers tr').length")
            assert rows == servers, rows
        deadline = time.monotonic() + 30
        while body.get_attribute("data-refresh-ms") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        refresh = float(body.get_attribute("data-refresh-ms")) / 1000
        return drawn, first, refresh
    finally:
        driver.quit()


def page_burst(balancer, host, port):
    """BURST_REQUESTS GET / at once while logins go on: the balancer's CPU and peak memory, the slowest login."""
    cpu = balancer.cpu_seconds()
    burst = subprocess.Popen([sys.executable, "-c", BURST, host, port, str(BURST_REQUESTS)], stdout=subprocess.PIPE)
    logins = []
    while burst.poll() is None:
        logins += timed_logins(host, int(port), 10)
    seconds, statuses = burst.stdout.read().decode().split(maxsplit=1)
    slowest = max(logins) * 1000
    peak = balancer.rss_mib("VmHWM")
    print(
        f"burst of {BURST_REQUESTS} GET / at once (10 KiB of each read, then closed): {float(seconds):.2f} s "
        f"({statuses.strip()}), balancer CPU {balancer.cpu_seconds() - cpu:.2f} s, peak RSS {peak:.1f} MiB "
        f"[<= 80]; {len(logins)} logins meanwhile: {describe(logins)}, slowest {slowest:.1f} ms "
        f"[< {LOGIN_BUDGET_MS}]"
    )
    return {"burst peak": peak, "burst slowest": slowest}


def run(args):
    conf_dir = Path(tempfile.mkdtemp(prefix="status-page-bench-"))
    conf_dir.chmod(0o755)
    started, reserved, servers = [], [], []
    try:
        first_octet = 1
        offset = 0
        sizes = group_sizes(args.servers)
        for role, text in CONFIGS.items():
            count = sizes[role]
            conf = conf_dir / f"{role}.conf"
            conf.write_text(text)
            conf.chmod(0o644)
            listen = [f"{address}:0" for address in addresses(first_octet, count, offset)]
            offset += count
            # No sshd on this machine: the login-service check is off (a Failing row is drawn like the others).
            args_ = ["ltsp_server_advertise.cli", "--config", str(conf), "--ssh-port", "0"]
            args_ += [arg for address in listen for arg in ("--listen", address)]
            daemon = Service(args_, len(listen))
            started.append(daemon)
            servers += daemon.addresses
        for address in addresses(first_octet, sizes["down"], offset):
            sock = socket.socket()
            sock.bind((address, 0))  # bound, never listening: refused, and the port stays ours
            reserved.append(sock)
            servers.append(f"{address}:{sock.getsockname()[1]}")
        conf = conf_dir / "balancer.conf"
        conf.write_text("")
        conf.chmod(0o644)
        balancer = Service(
            ["ltsp_loadbalancer", "--config", str(conf), "--listen", "127.0.0.1:0", "--servers", " ".join(servers)], 1
        )
        started.append(balancer)
        host, port = balancer.addresses[0].rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        pool = wait_for_polls(connection, 2)
        states = {}
        for server in pool["servers"]:
            states[server["state"]] = states.get(server["state"], 0) + 1
        print(
            f"pool: {len(pool['servers'])} servers ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}); "
            f"one daemon on {sizes['ready']} addresses, one drained on {sizes['drain']}, "
            f"one WEIGHT = 200 on {sizes['heavy']}, {sizes['down']} Down"
        )
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
        total = re.search(r"^ltsp_balancer_poll_duration_seconds_sum (\S+)$", text, re.M)
        count = re.search(r"^ltsp_balancer_poll_duration_seconds_count (\S+)$", text, re.M)
        if total and count and float(count[1]):
            print(f"one poll of the {args.servers:,}: {float(total[1]) / float(count[1]):.2f} s (mean)")
        else:
            print("one poll: not reported yet")
        print(f"balancer RSS after two polls: {balancer.rss_mib():.1f} MiB")
        results = {}

        figures = browser_figures(f"http://{host}:{port}/", 5, args.servers)
        if figures is None:
            print("page in Chromium: skipped (/usr/bin/chromium or /usr/bin/chromedriver missing)")
        else:
            drawn, first, refresh = figures
            results["page"] = statistics.median(drawn)
            print(
                f"page in headless Chromium: whole table drawn {statistics.median(drawn):.2f} s after navigation "
                f"(median of {len(drawn)}, worst {max(drawn):.2f} s), first rows painted at "
                f"{statistics.median(first):.2f} s; one refresh from /status/rows {refresh * 1000:.0f} ms"
            )

        print(f"balancer RSS after the browser: {balancer.rss_mib():.1f} MiB")
        connection.close()  # idle past CLIENT_TIMEOUT_SECONDS while the browser ran: the balancer closed it
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        paths = ("/", "/status/rows", "/metrics", "/v1/pool", "/v1/history")
        built = {path: [] for path in paths}
        for _ in range(BUILDS):  # the first request after a poll builds each view: its time is the rendering's
            wait_for_polls(connection, pool["polls"] + 1)
            pool = wait_for_polls(connection, 0)
            for path in paths:
                built[path] += timed_gets(connection, path, 1)
        for path in paths:
            connection.request("GET", path)
            size = len(connection.getresponse().read())
            times = timed_gets(connection, path, args.requests)
            results[path] = statistics.median(times) * 1000
            print(
                f"GET {path:<12} {describe(times)}  ({size / 1024:.0f} KiB, {args.requests} requests); "
                f"built (first after a poll) median {statistics.median(built[path]) * 1000:5.1f} ms"
            )

        print(f"balancer RSS after the admin routes: {balancer.rss_mib():.1f} MiB")
        results.update(page_burst(balancer, host, port))
        # Alone and under each load in turn, twice, so that a quieter or busier minute of this shared
        # machine is spread over all three.
        runs = {"alone": [], "continuous": [], "admin load": []}
        for _ in range(2):
            for label, mode in (("alone", None), ("continuous", "continuous"), ("admin load", "4")):
                scraper = mode and subprocess.Popen([sys.executable, "-c", SCRAPER, host, port, mode])
                try:
                    if scraper:
                        time.sleep(1.0)
                    runs[label] += timed_logins(host, int(port), args.logins // 2)
                finally:
                    if scraper:
                        scraper.terminate()
                        scraper.wait()
        alone = runs["alone"]
        print(f"GET /v1/hosts alone:                {describe(alone)}  ({len(alone)} logins)")
        for label, what in (
            ("continuous", "with / and /metrics back to back"),
            ("admin load", "with 4 pages open, scraped at 5 s"),
        ):
            busy = runs[label]
            ratio_median = statistics.median(busy) / statistics.median(alone)
            ratio_p99 = percentile(busy, 0.99) / percentile(alone, 0.99)
            results[label] = ratio_p99
            print(f"GET /v1/hosts {what}: {describe(busy)}  ratio median x{ratio_median:.2f}, p99 x{ratio_p99:.2f}")
        results["rss"] = balancer.rss_mib()
        print(f"balancer RSS at the end: {results['rss']:.1f} MiB (budget 80 MiB)")
        connection.close()
        return results
    finally:
        for service in reversed(started):
            service.stop()
        for sock in reserved:
            sock.close()
        shutil.rmtree(conf_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000, help="servers in the pool (default 1,000; at most 60,000)")
    parser.add_argument("--requests", type=int, default=200, help="requests per admin route (default 200)")
    parser.add_argument("--logins", type=int, default=2000, help="logins per /v1/hosts run (default 2000)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    started = time.monotonic()
    results = run(args)
    missed = []
    if results.get("page", 0) >= TARGET_PAGE_SECONDS:
        missed.append(f"page drawn in {results['page']:.2f} s (target < {TARGET_PAGE_SECONDS:g} s)")
    for path in ("/", "/metrics"):
        if results[path] > TARGET_ANSWER_MS:
            missed.append(f"{path} median {results[path]:.1f} ms (target <= {TARGET_ANSWER_MS:g} ms)")
    if results["admin load"] > TARGET_HOSTS_P99_RATIO:
        ratio = results["admin load"]
        missed.append(f"/v1/hosts p99 x{ratio:.2f} under admin load (target <= x{TARGET_HOSTS_P99_RATIO})")
    if results["rss"] > 80 or results["burst peak"] > 80:
        missed.append(f"RSS {results['rss']:.1f}, peak {results['burst peak']:.1f} MiB (budget 80 MiB)")
    if results["burst slowest"] >= LOGIN_BUDGET_MS:
        missed.append(f"a login took {results['burst slowest']:.0f} ms in the page burst (< {LOGIN_BUDGET_MS} ms)")
    verdict = "all met" if not missed else "MISSED: " + "; ".join(missed)
    print(f"targets: {verdict} ({time.monotonic() - started:.0f} s)")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
