"""docs/grafana-dashboard.json against a real Prometheus scraping two real balancers, for one balancer and for All.

Debian's prometheus (``/usr/bin/prometheus``, 2.42 in Debian 12) scrapes two
ltsp-loadbalancer processes every second on loopback, and itself (a job of
another kind, whose process_* series the dashboard must leave out). Both
balancers poll the same pool of real daemons: two on one host (two ports),
one with WEIGHT = 200, and an address where nothing listens. Then, as a
morning goes: logins through both balancers, two clients reporting a failed
login to one balancer (it ejects that server: Failing there only), a drain
by SIGHUP, a daemon killed, and 503s. Every expression of every panel is
evaluated with the Grafana variables substituted (``$instance`` one
balancer, the other, or All; ``$__rate_interval`` a window that holds the
whole test) and checked: the series expected and no other, each once, the
pool's figures counted once per server, each balancer's own added up, and
no NaN anywhere over the whole run. ``promtool check metrics`` reads both
balancers' /metrics.

As root a missing prometheus is a failure (``make test`` installs it); not
root, the test skips.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

import pytest
from ltsp_loadbalancer import metrics
from services import PROMETHEUS, Balancer, Daemon, Prometheus, is_login, login_source
from sites import http, word, world_readable_dir, write_conf

from ltsp_lbcore.states import POOL_STATES

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
PROMTOOL = "/usr/bin/promtool"
RATE_WINDOW = "5m"  # $__rate_interval: longer than the whole test, so every rate sees every event
BALANCER_CONF = "POLL_SECONDS = 0.5\nPOLL_TIMEOUT_MS = 400\nLOGIN_WINDOW_SECONDS = 600\n"
LOGINS = {"one": 5, "two": 3}  # logins handed out through each balancer before the failure reports
REPORTERS = ("127.0.0.5", "127.0.0.6")  # two clients' addresses: their failed= reports eject a server


def need_prometheus():
    missing = [path for path in (PROMETHEUS, PROMTOOL) if not os.access(path, os.X_OK)]
    if missing:
        reason = f"{' and '.join(missing)} not installed (Debian package prometheus; make test installs it as root)"
        if os.geteuid() != 0:
            pytest.skip(f"{reason}, and not root")
        pytest.fail(f"{reason}; we are root, so make test should have installed it")


class Morning:
    """The pool, the two balancers and Prometheus; ``names``: role -> server label."""

    def __init__(self):
        self.dir = world_readable_dir("prometheus-test-")
        self.started = []
        self.reserved = socket.socket()
        self.daemons, self.confs, self.names, self.balancers = {}, {}, {}, {}

    def start(self):
        # Two servers on one host: their series must stay two (one label value per SERVERS entry).
        for role, host, text in (
            ("first", "127.0.0.2", ""),
            ("second", "127.0.0.2", ""),
            ("heavy", "127.0.0.3", "WEIGHT = 200\n"),
        ):
            self.confs[role] = write_conf(self.dir / f"{role}.conf", text)
            self.daemons[role] = self._started(Daemon(self.confs[role], (f"{host}:0",)))
            self.names[role] = word(self.daemons[role].address)
        self.reserved.bind(("127.0.0.4", 0))  # bound, never listening: Down from the start
        self.names["dead"] = word(self.reserved.getsockname())
        servers = " ".join(self.names[role] for role in ("first", "second", "heavy", "dead"))
        conf = write_conf(self.dir / "balancer.conf", f"{BALANCER_CONF}SERVERS = {servers}\n")
        for name in LOGINS:
            self.balancers[name] = self._started(Balancer(conf))
        self.instance = {name: word(balancer.address) for name, balancer in self.balancers.items()}
        self.prometheus = Prometheus(self.dir / "prometheus", {"ltsp-loadbalancer": list(self.instance.values())})
        self.started.append(self.prometheus)
        self.prometheus.start()
        return self

    def _started(self, service):
        self.started.append(service)
        return service.start()

    def stop(self):
        for service in reversed(self.started):
            if service.proc.poll() is None:
                service.proc.kill()
            service.proc.wait(timeout=10)
        self.reserved.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def get(self, balancer, path, source=None):
        """Status of one GET to BALANCER ("one" or "two"), from SOURCE (a loopback address) if given."""
        host, port = self.balancers[balancer].address
        source = source or (login_source() if is_login(path) else None)  # one thin client per login
        connection = HTTPConnection(host, port, timeout=5, source_address=(source, 0) if source else None)
        try:
            connection.request("GET", path, headers={"X-LTSP-Client": "get_hosts"})
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def pool(self, balancer):
        return json.loads(http(self.balancers[balancer].address, "/v1/pool").body)

    def states(self, balancer):
        return {word((row["host"], row["port"])): row["state"] for row in self.pool(balancer)["servers"]}

    def wait(self, predicate, what, timeout=20.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what}: not in {timeout:g} s"
            time.sleep(0.2)


@pytest.fixture
def morning():
    need_prometheus()
    site = Morning()
    try:
        yield site.start()
    finally:
        site.stop()


def regex(text):
    """TEXT as a PromQL regex in a double-quoted string, as Grafana writes a variable's value (dots escaped)."""
    return re.escape(text).replace("\\", "\\\\")


def substitute(expr, instance):
    """EXPR as Grafana sends it: $instance a regex (one balancer, escaped, or .* for All), $__rate_interval."""
    return expr.replace("$instance", instance).replace("$__rate_interval", RATE_WINDOW)


def panel_exprs():
    """(panel id, title, expr) of every target of every panel."""
    return [
        (panel["id"], panel["title"], target["expr"]) for panel in DASHBOARD["panels"] for target in panel["targets"]
    ]


def labelled(rows, *labels):
    """{tuple of LABELS' values: value} of a query's rows; AssertionError when a label set comes twice."""
    found = {}
    for metric, value in rows:
        key = tuple(metric.get(label) for label in labels)
        assert key not in found, f"{key} twice in {rows}"
        found[key] = value
    return found


@pytest.mark.slow
def test_every_dashboard_expression_for_one_balancer_and_for_all(morning):
    site = morning
    names, instance = site.names, site.instance
    first, second, heavy, dead = (names[role] for role in ("first", "second", "heavy", "dead"))
    prometheus = site.prometheus
    began = time.time()
    site.wait(lambda: len(prometheus.query('up{job="ltsp-loadbalancer"} == 1')) == 2, "both balancers scraped")

    # The morning: logins through both balancers, then two clients report their login to FIRST failed (to one).
    for balancer, count in LOGINS.items():
        for _ in range(count):
            assert site.get(balancer, "/v1/hosts") == 200
    for source in REPORTERS:
        assert site.get("one", f"/v1/hosts?failed={urllib.parse.quote(first)}", source=source) == 200
    assert site.states("one")[first] == "Failing" and site.states("two")[first] != "Failing"
    # A drain by SIGHUP and a daemon killed.
    write_conf(site.confs["second"], "STATE = drain\n")
    site.daemons["second"].proc.send_signal(signal.SIGHUP)
    site.daemons["heavy"].proc.kill()
    for balancer in LOGINS:
        site.wait(
            lambda b=balancer: (site.states(b)[second], site.states(b)[heavy]) == ("Drain", "Down"),
            f"{balancer}'s view",
        )
    # 503s through one balancer: twice nothing usable among those named, once no server of SERVERS named.
    assert site.get("one", f"/v1/hosts?servers={second}+{dead}") == 503
    assert site.get("one", f"/v1/hosts?servers={second}+{dead}") == 503
    assert site.get("one", "/v1/hosts?servers=unknown.example") == 503
    one = regex(instance["one"])
    site.wait(
        lambda: (
            prometheus.query(f'ltsp_balancer_answers_total{{instance=~"{one}", result="unknown_servers"}} == 1')
            and len(prometheus.query(f'ltsp_server_state{{server="{heavy}", state="Down"}} == 1')) == 2
        ),
        "Prometheus to scrape the last events",
    )
    time.sleep(2)  # two more scrapes: every rate has its last sample
    handed = {"one": LOGINS["one"] + len(REPORTERS), "two": LOGINS["two"]}  # each report is a login too

    contexts = {"one": regex(instance["one"]), "two": regex(instance["two"]), "All": ".*"}
    balancers_in = {"one": ["one"], "two": ["two"], "All": ["one", "two"]}
    checked = set()
    loads = {}

    def run(panel, expr, context):
        rows = prometheus.query(substitute(expr, contexts[context]))
        for metric, value in rows:
            assert math.isfinite(value), (panel, context, metric, value)
        checked.add((panel, expr))
        return rows

    for context, inside in balancers_in.items():
        insts = {instance[b] for b in inside}
        by_panel = {}
        for panel_id, _title, expr in panel_exprs():
            by_panel.setdefault(panel_id, []).append((expr, run(panel_id, expr, context)))
        where = f"$instance={context}"

        # 1. Servers by state: each balancer's own view, every state, the pool once per balancer.
        ((_expr, rows),) = by_panel[1]
        counts = labelled(rows, "instance", "state")
        assert set(counts) == {(i, s) for i in insts for s in POOL_STATES}, where
        for b in inside:
            mine = {s: counts[(instance[b], s)] for s in POOL_STATES}
            assert sum(mine.values()) == 4 and (mine["Drain"], mine["Down"]) == (1, 2), (where, b, mine)
            assert mine["Failing"] == (1 if b == "one" else 0), (where, b, mine)
        # 2. Pool load: one figure, the same whichever balancers are selected.
        ((_expr, rows),) = by_panel[2]
        assert len(rows) == 1 and 0 <= rows[0][1] <= 1, (where, rows)
        loads[context] = rows[0][1]
        # 3. Logins handed out in the last hour: each balancer's own, added up. increase() extrapolates
        # from the samples it has to the window's edges (by up to half a scrape interval each side):
        # over the few seconds of samples this test has, that adds up to a third; counting a balancer
        # twice, or every server once per balancer, would double it.
        ((_expr, rows),) = by_panel[3]
        assert rows[0][1] == pytest.approx(sum(handed[b] for b in inside), rel=0.35), where
        # 4. 503s in the last hour: only the first balancer answered any.
        ((_expr, rows),) = by_panel[4]
        expected = 3 if "one" in inside else 0
        assert rows[0][1] == pytest.approx(expected, rel=0.35, abs=0.01), where
        # 5. Fullness: one line per server that answers, two entries on one host are two lines.
        ((_expr, rows),) = by_panel[5]
        assert set(labelled(rows, "server")) == {(first,), (second,)}, where
        # 6. Pool load over time: capacity once per server; pending logins are each balancer's, added up.
        (_s, sessions), (_c, capacity), (_p, pending) = by_panel[6]
        assert len(sessions) == len(capacity) == 1, where
        servers = f"{regex(first)}|{regex(second)}"
        alone = prometheus.query(
            f'sum(ltsp_server_capacity_sessions{{instance="{instance["one"]}", server=~"{servers}"}})'
        )
        assert capacity[0][1] == pytest.approx(alone[0][1], rel=0.05), (where, "capacity counted once")
        assert pending[0][1] == sum(handed[b] for b in inside), (where, pending)
        # 7. Logins per minute per server: every server, once; all the logins, once.
        ((_expr, rows),) = by_panel[7]
        per_server = labelled(rows, "server")
        assert set(per_server) == {(first,), (second,), (heavy,), (dead,)}, where
        # (rate() extrapolates as increase() does in panel 3.)
        assert sum(per_server.values()) * 5 == pytest.approx(sum(handed[b] for b in inside), rel=0.35), where
        # 8. Answers per minute by result: every result from the start, each once.
        ((_expr, rows),) = by_panel[8]
        answers = labelled(rows, "result")
        assert set(answers) == {(result,) for result in metrics.RESULTS}, where
        assert answers[("ok",)] * 5 == pytest.approx(sum(handed[b] for b in inside), rel=0.35), where
        assert answers[("unknown_servers",)] * 5 == pytest.approx(1 if "one" in inside else 0, rel=0.35, abs=0.01)
        # 9. Servers not Idle: each (server, state) once, with how many balancers see it so.
        ((_expr, rows),) = by_panel[9]
        table = labelled(rows, "server", "state")
        ready_busy = {key: table.pop(key) for key in list(table) if key[0] == first and key[1] == "Busy"}
        expected = {(second, "Drain"): len(inside), (heavy, "Down"): len(inside), (dead, "Down"): len(inside)}
        if "one" in inside:
            expected[(first, "Failing")] = 1
        assert table == expected, where
        assert sum(ready_busy.values()) <= (1 if "two" in inside else 0), where  # a ready server on a busy machine
        # 10. Poll errors: the two servers that did not answer, each once.
        ((_expr, rows),) = by_panel[10]
        assert set(labelled(rows, "server")) == {(heavy,), (dead,)}, where
        # 11. Answer times: only routes that had requests, each once per quantile; no NaN (checked above).
        for _expr, rows in by_panel[11]:
            handlers = set(labelled(rows, "handler"))
            assert ("/v1/hosts",) in handlers and ("/metrics",) in handlers, where
            assert handlers <= {("/v1/hosts",), ("/metrics",), ("/v1/pool",)}, (where, handlers)
        # 12. Requests by route and status: every series from the start, the first 503s counted.
        ((_expr, rows),) = by_panel[12]
        requests = labelled(rows, "handler", "code")
        assert {(h, str(c)) for h, c in metrics.REQUEST_CODES} <= set(requests), where
        assert (requests[("/v1/hosts", "503")] > 0) == ("one" in inside), where
        # 13. Freshness: each balancer's own, named by its instance.
        for _expr, rows in by_panel[13]:
            assert set(labelled(rows, "instance")) == {(i,) for i in insts}, where
            assert all(0 <= value < 10 for _metric, value in rows), (where, rows)
        # 14. Memory and CPU: the balancers' processes only, not Prometheus'.
        for _expr, rows in by_panel[14]:
            assert set(labelled(rows, "instance")) == {(i,) for i in insts}, where
        # 15. Ejections: the first balancer's one ejection of FIRST.
        ((_expr, rows),) = by_panel[15]
        ejections = labelled(rows, "server", "instance")
        # (increase() extrapolates as in panel 3; two ejections would be twice as many.)
        assert ejections == ({(first, instance["one"]): pytest.approx(1, rel=0.35)} if "one" in inside else {}), where

    assert loads["All"] == pytest.approx(loads["one"], abs=0.02) == pytest.approx(loads["two"], abs=0.02)
    assert checked == {(panel_id, expr) for panel_id, _title, expr in panel_exprs()}  # every expression, every panel

    # No NaN line at any time of the run, for any selection.
    for panel_id, title, expr in panel_exprs():
        for context, selection in contexts.items():
            for metric, values in prometheus.query_range(substitute(expr, selection), began, time.time()):
                assert all(not math.isnan(value) for value in values), (panel_id, title, context, metric)

    # promtool reads both balancers' /metrics as Prometheus' own linter does.
    for balancer in site.balancers.values():
        text = http(balancer.address, "/metrics").body
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
