"""GET /metrics: the balancer in Prometheus' text format, rendered by prometheus_client.

Rules:

- Nobody hand-writes the format: ``BalancerCollector`` reads the Balancer at
  scrape time (nothing is copied on the login path) and prometheus_client
  renders it, in the classic text format or OpenMetrics as the scraper asks.
- A private CollectorRegistry: importing this module registers nothing
  globally, and two balancers in one process (tests) do not share series.
- Names: ``ltsp_`` prefix, the unit last (``_seconds``, ``_sessions``),
  ``_total`` on counters. Labels name a thing, never carry a measurement:
  ``server`` (as SERVERS names it: the host, with ``:port`` when the port
  is not 377, as on the status page), ``state`` (the server's pool state:
  one series per server, the current one), ``result``, ``handler`` (a fixed
  set of routes, so a scanner's paths cannot grow the series) and ``code``.
- Series per server are kept few (10): at 1,000 servers the library's
  rendering costs about 5 us a series, and the scrape must stay well under
  50 ms. Figures a Down server does not have are absent, never 0.
- Reading the balancer (a copy of /v1/pool's document and the counters)
  happens on the event loop, where the balancer lives; building the
  families and rendering the text, the costly part, may run in a worker
  thread from that copy (``snapshot`` then ``encode``).
- The request latency histogram is fed by http.py's observer, once per
  request: a dictionary lookup and one observe.

``METRICS`` below is the one list of what is exposed; docs/status-page.md
shows it as a table and a test checks the two agree.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections import namedtuple
from time import monotonic

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from ltsp_lbcore import __version__
from ltsp_lbcore.hostport import format_host_port
from ltsp_lbcore.ports import ADVERTISE_PORT
from ltsp_lbcore.states import DOWN, POOL_STATES

from .balancer import NO_SERVER, OK, UNKNOWN_SERVERS

RESULTS = (OK, NO_SERVER, UNKNOWN_SERVERS)
# Routes by path; any other path (a scanner, a typo) is "other".
HANDLERS = {path: path for path in ("/", "/v1/hosts", "/v1/pool", "/v1/history", "/metrics")}
OTHER = "other"
# Seconds: a login answer takes well under a millisecond, a page for 1,000 servers tens of them.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

SERVER = ("server",)
# (name as exposed, type, labels, help): the one list of what /metrics carries.
METRICS = (
    ("ltsp_server_up", "gauge", SERVER, "1 when the server's ltsp-server-advertise answered the latest poll, else 0"),
    (
        "ltsp_server_state",
        "gauge",
        ("server", "state"),
        "Always 1, labelled with the server's pool state: Idle, Busy, Swapped, Drain, Failing or Down",
    ),
    ("ltsp_server_sessions", "gauge", SERVER, "User sessions on the server, by its latest document"),
    ("ltsp_server_capacity_sessions", "gauge", SERVER, "Sessions the server can hold in all (scaled by its WEIGHT)"),
    ("ltsp_server_rating_sessions", "gauge", SERVER, "The server's rating: sessions it can still take"),
    ("ltsp_server_pending_logins", "gauge", SERVER, "Logins handed to the server that its figures do not show yet"),
    ("ltsp_server_sample_age_seconds", "gauge", SERVER, "Age of the server's latest figures"),
    ("ltsp_server_logins_handed_out_total", "counter", SERVER, "Logins handed to the server (first host of an answer)"),
    ("ltsp_server_poll_errors_total", "counter", SERVER, "Polls that found the server Down"),
    (
        "ltsp_server_ejections_total",
        "counter",
        SERVER,
        "Outlier ejections of the server by this balancer: its logins never became sessions, or clients reported them",
    ),
    (
        "ltsp_balancer_answers_total",
        "counter",
        ("result",),
        "Answers to /v1/hosts: ok, no_usable_server, unknown_servers",
    ),
    (
        "ltsp_balancer_fallbacks_total",
        "counter",
        (),
        "Logins answered 503 (no usable server among those named): get_hosts then probes the pool itself",
    ),
    ("ltsp_balancer_polls_total", "counter", (), "Polls of the whole pool finished"),
    ("ltsp_balancer_last_poll_age_seconds", "gauge", (), "Time since the latest poll finished"),
    ("ltsp_balancer_poll_duration_seconds", "gauge", (), "How long the latest poll of the whole pool took"),
    ("ltsp_balancer_servers", "gauge", ("state",), "Servers of SERVERS in each pool state"),
    ("ltsp_balancer_build_info", "gauge", ("version",), "The balancer's version (always 1)"),
    (
        "ltsp_balancer_http_request_duration_seconds",
        "histogram",
        ("handler",),
        "Time to answer an HTTP request, by route",
    ),
    (
        "ltsp_balancer_http_requests_total",
        "counter",
        ("handler", "code"),
        "HTTP requests answered, by route and status",
    ),
)
_HELP = {name: help_ for name, _type, _labels, help_ in METRICS}

# Per-server gauges: metric name -> (/v1/pool field, scale to the metric's unit).
_GAUGES = {
    "ltsp_server_sessions": ("sessions", 1),
    "ltsp_server_capacity_sessions": ("capacity", 1),
    "ltsp_server_rating_sessions": ("rating", 1),
    "ltsp_server_pending_logins": ("pending", 1),
    "ltsp_server_sample_age_seconds": ("sample_age_ms", 0.001),
}


def _family(kind, name, labels=()):
    if kind is CounterMetricFamily:
        return CounterMetricFamily(name.removesuffix("_total"), _HELP[name], labels=labels)
    return kind(name, _HELP[name], labels=labels)


def server_label(host, port):
    """The server label: the host, with its port when that is not 377 (as SERVERS and the status page name it)."""
    return format_host_port(host, None if port in (None, ADVERTISE_PORT) else port)


class BalancerCollector:
    """A prometheus_client collector that reads BALANCER (and POLLER's round time) at each scrape.

    CLOCK: the balancer's clock (time.monotonic; tests drive the balancer with a fake one).
    """

    def __init__(self, balancer, poller=None, clock=monotonic):
        self.balancer = balancer
        self.poller = poller
        self.clock = clock

    def describe(self):
        return []  # the series depend on SERVERS: registering must not scrape

    def read(self):
        """The balancer's figures now, copied (on the thread that owns the balancer: its event loop)."""
        balancer = self.balancer
        return Reading(
            balancer.pool_view(self.clock()),
            dict(balancer.handed_out),
            dict(balancer.poll_errors),
            dict(balancer.ejections),
            dict(balancer.answers),
            balancer.polls,
            getattr(self.poller, "round_seconds", None),
        )

    def collect(self):
        return families(self.read())


Reading = namedtuple("Reading", "view handed_out poll_errors ejections answers polls round_seconds")
Reading.__doc__ = "A copy of the balancer's figures at one scrape: /v1/pool's document and its counters."


def _server_gauges(rows, names, counts):
    """The per-server gauges (up, state, sessions...); COUNTS (state -> servers) is filled on the way."""
    up = _family(GaugeMetricFamily, "ltsp_server_up", SERVER)
    state = _family(GaugeMetricFamily, "ltsp_server_state", ("server", "state"))
    gauges = [(_family(GaugeMetricFamily, metric, SERVER), field, scale) for metric, (field, scale) in _GAUGES.items()]
    for row, name in zip(rows, names):
        labels = (name,)
        up.add_metric(labels, 0 if row["stats"] is None else 1)
        current = row["state"] if row["state"] in counts else DOWN
        counts[current] += 1
        state.add_metric((name, current), 1)
        for family, field, scale in gauges:
            value = row[field]
            if value is not None:  # unknown is absent, never a made-up 0
                family.add_metric(labels, value * scale)
    yield up
    yield state
    for family, _field, _scale in gauges:
        yield family


def families(reading):
    """The metric families of a Reading (pure: any thread)."""
    view = reading.view
    rows = view["servers"]
    names = [server_label(row["host"], row["port"]) for row in rows]
    # The balancer counts hand-outs, poll errors and ejections by host: named as the server when the host is unique.
    per_host = Tally(row["host"] for row in rows)
    by_host = {row["host"]: name for row, name in zip(rows, names) if per_host[row["host"]] == 1}

    counts = dict.fromkeys(POOL_STATES, 0)
    yield from _server_gauges(rows, names, counts)
    for metric, tally in (
        ("ltsp_server_logins_handed_out_total", reading.handed_out),
        ("ltsp_server_poll_errors_total", reading.poll_errors),
        ("ltsp_server_ejections_total", reading.ejections),
    ):
        family = _family(CounterMetricFamily, metric, SERVER)
        for host in {**dict.fromkeys(row["host"] for row in rows), **dict.fromkeys(tally)}:
            # Servers dropped by a reload keep their count: a counter never goes back.
            family.add_metric((by_host.get(host, host),), tally.get(host, 0))
        yield family

    answers = _family(CounterMetricFamily, "ltsp_balancer_answers_total", ("result",))
    for result in {**dict.fromkeys(RESULTS), **dict.fromkeys(reading.answers)}:
        answers.add_metric((result,), reading.answers.get(result, 0))
    yield answers
    fallbacks = _family(CounterMetricFamily, "ltsp_balancer_fallbacks_total")
    fallbacks.add_metric((), sum(n for result, n in reading.answers.items() if result != OK))
    yield fallbacks
    polls = _family(CounterMetricFamily, "ltsp_balancer_polls_total")
    polls.add_metric((), reading.polls)
    yield polls
    if view["last_poll_age_ms"] is not None:
        age = _family(GaugeMetricFamily, "ltsp_balancer_last_poll_age_seconds")
        age.add_metric((), view["last_poll_age_ms"] / 1000.0)
        yield age
    if reading.round_seconds is not None:
        duration = _family(GaugeMetricFamily, "ltsp_balancer_poll_duration_seconds")
        duration.add_metric((), reading.round_seconds)
        yield duration
    servers = _family(GaugeMetricFamily, "ltsp_balancer_servers", ("state",))
    for word, n in counts.items():
        servers.add_metric((word,), n)
    yield servers
    info = InfoMetricFamily("ltsp_balancer_build", _HELP["ltsp_balancer_build_info"])
    info.add_metric((), {"version": __version__})
    yield info


class Scrape:
    """One scrape: the balancer's Reading taken, the other collectors read when encoded (a registry's collect())."""

    def __init__(self, reading, others):
        self.reading = reading
        self.others = others

    def collect(self):
        yield from families(self.reading)
        for collector in self.others:  # prometheus_client's own: thread-safe
            yield from collector.collect()


class Metrics:
    """The registry of one balancer: its collector, the process' own figures and the HTTP request metrics."""

    def __init__(self, balancer, poller=None, clock=monotonic):
        # No *_created series: in the classic text format each is one more gauge per counter child, and
        # Prometheus does not need them (a process-wide setting of prometheus_client 0.17+).
        disable_created = getattr(prometheus_client, "disable_created_metrics", None)
        if disable_created is not None:
            disable_created()
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = BalancerCollector(balancer, poller, clock)
        self.registry.register(self.collector)
        self.process = ProcessCollector(registry=self.registry)  # process_resident_memory_bytes: the RSS budget
        self.latency = Histogram(
            "ltsp_balancer_http_request_duration_seconds",
            _HELP["ltsp_balancer_http_request_duration_seconds"],
            ("handler",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "ltsp_balancer_http_requests",
            _HELP["ltsp_balancer_http_requests_total"],
            ("handler", "code"),
            registry=self.registry,
        )
        # Children resolved once: the login path pays a dict lookup, not prometheus_client's label lock.
        self._latency = {handler: self.latency.labels(handler) for handler in (*HANDLERS, OTHER)}
        self._requests = {}

    def observe(self, path, status, seconds):
        """Count and time one finished request (every route: http.py calls it)."""
        route = HANDLERS.get(path, OTHER)
        self._latency[route].observe(seconds)
        key = (route, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, str(key[1]))
        child.inc()

    def snapshot(self):
        """A Scrape with the balancer's figures read now: call it on the balancer's thread (a few ms)."""
        return Scrape(self.collector.read(), (self.process, self.latency, self.requests))

    @staticmethod
    def encode(scrape, accept=None):
        """(body bytes, content type) of SCRAPE for a scraper whose Accept header is ACCEPT (any thread)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(scrape), content_type

    def render(self, accept=None):
        """snapshot() and encode() at once."""
        return self.encode(self.snapshot(), accept)
