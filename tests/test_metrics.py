"""GET /metrics as Prometheus reads it: a real balancer polling real daemons, parsed by prometheus_client.

The pool is tests/sites.py's RealPool (conftest's shared_pool): one ready
daemon, one drained, one with WEIGHT = 200, one address where nothing listens. The
exposition is parsed with prometheus_client.parser, as a scraper would.
The collector is also fed in-process with known documents, to check
values that real daemons on a shared machine cannot pin down.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from fakeservers import stats as fake_stats
from ltsp_loadbalancer import config, metrics
from ltsp_loadbalancer.balancer import Balancer
from prometheus_client.parser import text_string_to_metric_families
from services import Balancer as BalancerProcess
from sites import write_conf

from get_hosts.probe import ProbeResult
from ltsp_lbcore.states import POOL_STATES

ROOT = Path(__file__).resolve().parent.parent
LABEL_NAMES = {"server", "state", "result", "handler", "code", "version", "le"}


def scrape(pool, accept=None):
    answer = pool.get("/metrics", headers={"Accept": accept} if accept else None)
    assert answer.status == 200
    return answer


def families(text):
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, name=None, **labels):
    """{labels tuple (sorted, without the ones given): value} of FAMILY's samples named NAME that match LABELS."""
    found = {}
    for sample in family.samples:
        if name is not None and sample.name != name:
            continue
        if all(sample.labels.get(key) == value for key, value in labels.items()):
            rest = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in labels))
            found[rest] = sample.value
    return found


def by_server(family, name=None, **labels):
    """{server label: value} for a per-server family."""
    return {dict(key)["server"]: value for key, value in samples(family, name, **labels).items()}


def host(pool, role):
    return pool.names[role].rsplit(":", 1)[0]


def name(pool, role):
    return pool.names[role]


# --- a real balancer -----------------------------------------------------------------------------------


def states_of(family):
    """{server: its state} from the state set (the one series at 1), checking each server has every state once."""
    found = {}
    for sample in family.samples:
        found.setdefault(sample.labels["server"], {})[sample.labels["state"]] = sample.value
    for server, values in found.items():
        assert set(values) == set(POOL_STATES), server
        assert sorted(values.values()) == [0] * (len(POOL_STATES) - 1) + [1], server
    return {server: next(state for state, value in values.items() if value == 1) for server, values in found.items()}


def test_every_server_with_its_state_and_figures(shared_pool):
    shared_pool.wait_for_pool(lambda p: p["polls"] >= 2)
    answer = scrape(shared_pool)
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    found = families(answer.body.decode("utf-8"))
    names = shared_pool.names
    # The state set: every state of every server is a series, the current one at 1.
    states = states_of(found["ltsp_server_state"])
    assert set(states) == set(names.values())
    assert states[names["drain"]] == "Drain" and states[names["down"]] == "Down"
    assert states[names["ready"]] in ("Idle", "Busy") and states[names["heavy"]] in ("Idle", "Busy")
    capacity = by_server(found["ltsp_server_capacity_sessions"])
    assert capacity[names["heavy"]] == pytest.approx(2 * capacity[names["ready"]], rel=0.01)
    # Unknown figures of a Down server are absent, not 0.
    assert names["down"] not in capacity and names["down"] not in by_server(found["ltsp_server_sessions"])
    assert by_server(found["ltsp_server_rating_sessions"])[names["drain"]] == 0
    # When the figures were taken, and when the last poll finished: times, not ages.
    taken = by_server(found["ltsp_server_sample_timestamp_seconds"])
    assert set(taken) == {names["ready"], names["drain"], names["heavy"]}
    assert all(time.time() - 5 < when <= time.time() for when in taken.values())
    (polled,) = found["ltsp_balancer_last_poll_timestamp_seconds"].samples
    assert time.time() - 5 < polled.value <= time.time()
    # Each poll's duration in the histogram: as many as /v1/pool counts, well under POLL_TIMEOUT_MS.
    histogram = found["ltsp_balancer_poll_duration_seconds"]
    (count,) = samples(histogram, "ltsp_balancer_poll_duration_seconds_count").values()
    (total,) = samples(histogram, "ltsp_balancer_poll_duration_seconds_sum").values()
    assert count >= 2 and 0 < total / count < 1.0
    assert samples(found["ltsp_balancer_build_info"])  # the version label
    assert found["process_resident_memory_bytes"].samples[0].value > 0


def test_every_series_a_dashboard_reads_is_there_from_the_first_scrape(conf_dir):
    """Before any login, any request or any poll: the counters exist at 0, so the first events show in rate()."""
    process = BalancerProcess(write_conf(conf_dir / "b.conf", "POLL_SECONDS = 600\n"), "127.0.0.1:9 127.0.0.1:4000")
    try:
        found = families(process.start().request("GET", "/metrics")[1])
    finally:
        process.stop()
    for counter in ("ltsp_server_logins_handed_out", "ltsp_server_poll_errors", "ltsp_server_ejections"):
        assert set(by_server(found[counter], f"{counter}_total").values()) == {0}
        assert set(by_server(found[counter], f"{counter}_total")) == {"127.0.0.1:9", "127.0.0.1:4000"}, counter
    answers = {s.labels["result"]: s.value for s in found["ltsp_balancer_answers"].samples}
    assert answers == {"ok": 0, "no_usable_server": 0, "unknown_servers": 0, "stale_figures": 0}
    requests = {
        (s.labels["handler"], s.labels["code"]): s.value
        for s in found["ltsp_balancer_http_requests"].samples
        if s.name.endswith("_total")
    }
    for handler, code in metrics.REQUEST_CODES:
        assert requests[(handler, str(code))] == 0, (handler, code)


def test_counters_follow_logins_refusals_and_poll_errors(shared_pool):
    before = families(scrape(shared_pool).body.decode("utf-8"))
    for _ in range(5):
        assert shared_pool.get("/v1/hosts").status == 200
    drained_and_down = f"{host(shared_pool, 'drain')}+{host(shared_pool, 'down')}"
    for _ in range(2):
        assert shared_pool.get(f"/v1/hosts?servers={drained_and_down}").status == 503
    assert shared_pool.get("/v1/hosts", data=b"servers=unknown.example").status == 503
    shared_pool.wait_for_pool(lambda p: p["polls"] >= 3)
    after = families(scrape(shared_pool).body.decode("utf-8"))

    def delta(family, sample, **labels):
        old, new = samples(before[family], sample, **labels), samples(after[family], sample, **labels)
        return {key: value - old.get(key, 0) for key, value in new.items()}

    handed = delta("ltsp_server_logins_handed_out", "ltsp_server_logins_handed_out_total")
    handed = {dict(k)["server"]: v for k, v in handed.items()}
    assert sum(handed.values()) == 5
    assert handed[name(shared_pool, "drain")] == 0 and handed[name(shared_pool, "down")] == 0
    answers = {dict(k)["result"]: v for k, v in delta("ltsp_balancer_answers", "ltsp_balancer_answers_total").items()}
    assert answers == {"ok": 5, "no_usable_server": 2, "unknown_servers": 1, "stale_figures": 0}
    errors = by_server(after["ltsp_server_poll_errors"], "ltsp_server_poll_errors_total")
    assert errors[name(shared_pool, "down")] >= 3
    assert errors[name(shared_pool, "ready")] == errors[name(shared_pool, "heavy")] == 0
    assert after["ltsp_balancer_polls"].samples[0].value >= 3
    # The 503s count from the first one: the series was there at 0 before it.
    requests = delta("ltsp_balancer_http_requests", "ltsp_balancer_http_requests_total", handler="/v1/hosts")
    assert requests == {(("code", "200"),): 5, (("code", "503"),): 3}
    # The latency histogram: every /v1/hosts request observed once, buckets cumulative.
    histogram = after["ltsp_balancer_http_request_duration_seconds"]
    count = delta(
        "ltsp_balancer_http_request_duration_seconds",
        "ltsp_balancer_http_request_duration_seconds_count",
        handler="/v1/hosts",
    )
    assert count == {(): 8}
    buckets = samples(histogram, "ltsp_balancer_http_request_duration_seconds_bucket", handler="/v1/hosts")
    ordered = [value for _key, value in sorted(buckets.items(), key=lambda item: float(dict(item[0])["le"]))]
    assert (
        ordered == sorted(ordered)
        and ordered[-1]
        == samples(histogram, "ltsp_balancer_http_request_duration_seconds_count", handler="/v1/hosts")[()]
    )
    assert 0 < samples(histogram, "ltsp_balancer_http_request_duration_seconds_sum", handler="/v1/hosts")[()] < 8


def test_scanner_paths_do_not_grow_the_series(shared_pool):
    for path in ("/wp-login.php", "/a/b/c", "/v1/hosts/../x"):
        shared_pool.get(path)
    found = families(scrape(shared_pool).body.decode("utf-8"))
    handlers = {s.labels["handler"] for s in found["ltsp_balancer_http_requests"].samples}
    assert handlers <= {*metrics.HANDLERS, metrics.OTHER}
    assert "other" in handlers


def test_exposition_follows_prometheus_conventions(shared_pool):
    text = scrape(shared_pool).body.decode("utf-8")
    found = families(text)
    ours = {name for name in found if name.startswith("ltsp_")}
    assert set(found) - ours <= {name for name in found if name.startswith("process_")}
    declared = {metric.name for metric in metrics.METRICS}
    exposed = {f"{name}_total" if found[name].type == "counter" else name for name in ours}
    assert exposed == declared
    for family in found.values():
        for sample in family.samples:
            assert set(sample.labels) <= LABEL_NAMES, sample
            if family.type == "counter" and not sample.name.endswith("_created"):
                assert sample.name.endswith("_total"), sample
    for name, kind, labels, _help, _field in metrics.METRICS:
        family = found[name.removesuffix("_total")]
        assert family.type == {"info": "gauge"}.get(kind, kind), name  # the classic format has no info type
        label_sets = {frozenset(s.labels) - {"le"} for s in family.samples}
        assert label_sets == {frozenset(labels)}, (name, label_sets)
    # Units last: seconds, never milliseconds; times, not ages.
    assert not re.search(r"^ltsp_\w*_ms", text, re.M)
    assert not re.search(r"^ltsp_\w*_age_", text, re.M)


def test_openmetrics_when_the_scraper_asks(shared_pool):
    answer = scrape(shared_pool, "application/openmetrics-text; version=1.0.0; charset=utf-8")
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.body.endswith(b"# EOF\n")


# --- the collector in-process, with known documents ----------------------------------------------------


def test_collector_reads_the_balancer_at_scrape_time():
    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", "app1 app2:4000 gone", "test")
    balancer = Balancer(settings)
    registry = metrics.Metrics(balancer, clock=lambda: 100.0, wall=lambda: 1_700_000_000.0)
    found = families(registry.render()[0].decode())
    assert states_of(found["ltsp_server_state"]) == {"app1": "Down", "app2:4000": "Down", "gone": "Down"}
    assert "ltsp_balancer_last_poll_timestamp_seconds" not in found  # no poll yet: absent, not 0

    entries = balancer.entries
    results = [
        ProbeResult(entries[0], fake_stats(sessions=4, capacity=24.0, rating=20.0, sample_age_ms=1500), 2.5, None),
        ProbeResult(entries[1], fake_stats(state="drain", sessions=10, capacity=12.0, rating=0.0), 40.0, None),
        ProbeResult(entries[2], None, None, "connect failed: Connection refused"),
    ]
    balancer.polled(entries, results, 100.0)
    line, _reason = balancer.hosts(None, 100.0)
    assert line == "app1"
    found = families(registry.render()[0].decode())
    assert by_server(found["ltsp_server_sessions"]) == {"app1": 4, "app2:4000": 10}
    assert by_server(found["ltsp_server_capacity_sessions"]) == {"app1": 24, "app2:4000": 12}
    assert by_server(found["ltsp_server_pending_logins"]) == {"app1": 1, "app2:4000": 0, "gone": 0}
    taken = by_server(found["ltsp_server_sample_timestamp_seconds"])
    assert taken == {"app1": 1_700_000_000 - 1.5, "app2:4000": 1_700_000_000 - 0.05}
    assert found["ltsp_balancer_last_poll_timestamp_seconds"].samples[0].value == 1_700_000_000
    assert states_of(found["ltsp_server_state"]) == {"app1": "Idle", "app2:4000": "Drain", "gone": "Down"}
    handed = by_server(found["ltsp_server_logins_handed_out"], "ltsp_server_logins_handed_out_total")
    assert handed == {"app1": 1, "app2:4000": 0, "gone": 0}
    errors = by_server(found["ltsp_server_poll_errors"], "ltsp_server_poll_errors_total")
    assert errors == {"app1": 0, "app2:4000": 0, "gone": 1}

    # A reload that drops a server keeps its counters (they never go back) and drops its gauges.
    balancer.reconfigure(config.SCHEMA.override(settings, "SERVERS", "app2:4000", "test"), 101.0)
    found = families(registry.render()[0].decode())
    assert set(states_of(found["ltsp_server_state"])) == {"app2:4000"}
    assert by_server(found["ltsp_server_logins_handed_out"], "ltsp_server_logins_handed_out_total")["app1"] == 1


def test_an_ejection_shows_as_failing_and_is_counted_even_after_a_reload():
    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", "app1 app2 app3", "test")
    balancer = Balancer(settings)
    registry = metrics.Metrics(balancer, clock=lambda: 100.0)
    entries = balancer.entries
    balancer.polled(entries, [ProbeResult(e, fake_stats(sessions=0, capacity=24.0), 2.0, None) for e in entries], 100.0)
    for peer in ("10.0.0.1", "10.0.0.2"):  # two clients say their login to app2 did not last
        balancer.hosts(None, 100.0, failed=["app2"], peer=peer)
    found = families(registry.render()[0].decode())
    ejections = by_server(found["ltsp_server_ejections"], "ltsp_server_ejections_total")
    assert ejections == {"app1": 0, "app2": 1, "app3": 0}
    assert states_of(found["ltsp_server_state"]) == {"app1": "Idle", "app2": "Failing", "app3": "Idle"}
    balancer.reconfigure(config.SCHEMA.override(settings, "SERVERS", "app1", "test"), 101.0)
    found = families(registry.render()[0].decode())
    assert by_server(found["ltsp_server_ejections"], "ltsp_server_ejections_total")["app2"] == 1


def test_two_entries_on_one_host_are_two_servers_on_every_series():
    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", "app1 app1:4000 app1:4001", "test")
    balancer = Balancer(settings)
    registry = metrics.Metrics(balancer, clock=lambda: 100.0)
    entries = balancer.entries
    results = [
        ProbeResult(entries[0], fake_stats(sessions=0, capacity=24.0, rating=24.0), 2.0, None),
        ProbeResult(entries[1], fake_stats(state="drain", sessions=3, capacity=24.0, rating=0.0), 2.0, None),
        ProbeResult(entries[2], None, None, "connect failed: Connection refused"),
    ]
    balancer.polled(entries, results, 100.0)
    assert balancer.hosts(None, 100.0) == ("app1", None)  # answers name hosts, as get_hosts prints them
    found = families(registry.render()[0].decode())
    expected = {"app1", "app1:4000", "app1:4001"}
    for name, family in found.items():
        if name.startswith("ltsp_server_"):
            assert {s.labels["server"] for s in family.samples} <= expected, name
    handed = by_server(found["ltsp_server_logins_handed_out"], "ltsp_server_logins_handed_out_total")
    assert handed == {"app1": 1, "app1:4000": 0, "app1:4001": 0}
    errors = by_server(found["ltsp_server_poll_errors"], "ltsp_server_poll_errors_total")
    assert errors == {"app1": 0, "app1:4000": 0, "app1:4001": 1}
    assert states_of(found["ltsp_server_state"]) == {"app1": "Idle", "app1:4000": "Drain", "app1:4001": "Down"}


def test_an_ejection_is_counted_under_the_entry_it_hit():
    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", "app1:4000 app1:4001 app2", "test")
    balancer = Balancer(settings)
    registry = metrics.Metrics(balancer, clock=lambda: 100.0)
    entries = balancer.entries
    balancer.polled(entries, [ProbeResult(e, fake_stats(sessions=0, capacity=24.0), 2.0, None) for e in entries], 100.0)
    for peer in ("10.0.0.1", "10.0.0.2"):  # two clients say their login to app1:4001 did not last
        balancer.hosts(None, 100.0, failed=["app1:4001"], peer=peer)
    found = families(registry.render()[0].decode())
    ejections = by_server(found["ltsp_server_ejections"], "ltsp_server_ejections_total")
    assert ejections == {"app1:4000": 0, "app1:4001": 1, "app2": 0}
    assert states_of(found["ltsp_server_state"])["app1:4001"] == "Failing"


def test_two_balancers_in_one_process_do_not_share_series():
    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", "a b", "test")
    one, two = metrics.Metrics(Balancer(settings)), metrics.Metrics(Balancer(settings))
    one.latency.labels("/").observe(0.01)
    count = "ltsp_balancer_http_request_duration_seconds_count"
    assert samples(
        families(one.render()[0].decode())["ltsp_balancer_http_request_duration_seconds"], count, handler="/"
    ) == {(): 1}
    assert samples(
        families(two.render()[0].decode())["ltsp_balancer_http_request_duration_seconds"], count, handler="/"
    ) == {(): 0}


# --- the docs and the dashboard name what is exposed ---------------------------------------------------


def test_the_docs_table_lists_every_metric():
    text = (ROOT / "docs" / "status-page.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(ltsp_\w+)`", text, re.M))
    assert documented == {metric.name for metric in metrics.METRICS}


def test_the_grafana_dashboard_uses_only_exposed_metrics():
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert exprs
    used = set(re.findall(r"\b((?:ltsp|process)_\w+)", " ".join(exprs)))
    known = {metric.name for metric in metrics.METRICS} | {"process_resident_memory_bytes", "process_cpu_seconds_total"}
    for metric in metrics.METRICS:
        if metric.type == "histogram":
            known |= {f"{metric.name}_bucket", f"{metric.name}_sum", f"{metric.name}_count"}
    assert used <= known, used - known
    # Every panel reads the dashboard's data source variable, so an import asks for one.
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel} == {"${datasource}"}


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0; charset=utf-8"])
def test_families_kept_from_the_previous_scrape_render_exactly_what_the_library_renders_whole(accept):
    from prometheus_client.exposition import choose_encoder

    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", " ".join(f"s{i}" for i in range(50)), "t")
    balancer = Balancer(settings)
    registry = metrics.Metrics(balancer, clock=lambda: 100.0, wall=lambda: 1_700_000_000.0)
    entries = balancer.entries
    encoder, content_type = choose_encoder(accept)
    for step, sessions in enumerate((3, 3, 5)):  # a scrape, the same figures again, then some changed
        results = [
            ProbeResult(e, fake_stats(sessions=sessions + i % 3, capacity=24.0), 2.0, None)
            for i, e in enumerate(entries)
        ]
        balancer.polled(entries, results, 100.0 + step)
        balancer.hosts(None, 100.0 + step)
        scrape = registry.snapshot()
        body, answered_type = registry.encode(scrape, accept)
        assert answered_type == content_type
        # The same scrape rendered whole by prometheus_client (its process and instrument figures read again:
        # those lines may differ by what the process did meanwhile; every balancer line must be equal).
        whole = encoder(scrape)
        ours = [line for line in body.splitlines() if line.startswith((b"ltsp_", b"# HELP ltsp_", b"# TYPE ltsp_"))]
        theirs = [line for line in whole.splitlines() if line.startswith((b"ltsp_", b"# HELP ltsp_", b"# TYPE ltsp_"))]
        assert ours == theirs and ours
        assert body.endswith(b"# EOF\n") == bool(accept) and body.count(b"# EOF") == bool(accept)


def test_a_family_unchanged_since_the_previous_scrape_in_its_format_is_not_rendered_again():
    from prometheus_client.exposition import choose_encoder

    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", "app1 app2", "test")
    balancer = Balancer(settings)
    registry = metrics.Metrics(balancer, clock=lambda: 100.0, wall=lambda: 1_700_000_000.0)
    rendered = []

    def counting(content_type):
        encoder = choose_encoder(content_type)[0]
        return lambda collector: rendered.append(content_type) or encoder(collector)

    text, openmetrics = choose_encoder("")[1], choose_encoder("application/openmetrics-text; version=1.0.0")[1]
    scrape = registry.snapshot()
    others = len(scrape.others)
    texts = metrics.FamilyTexts()
    first = texts.encode(counting(text), text, scrape)
    families_rendered = len(rendered) - others
    assert families_rendered > 5
    texts.encode(counting(openmetrics), openmetrics, scrape)  # the other format: its own texts
    del rendered[:]
    again = texts.encode(counting(text), text, scrape)

    def balancer_lines(body):  # the process' own figures (CPU, memory) are read live at each scrape
        return [line for line in body.splitlines() if b"process_" not in line]

    assert balancer_lines(again) == balancer_lines(first)
    assert len(rendered) == others  # the balancer's families all kept: only the live instruments rendered
