"""GET /metrics: the balancer in Prometheus' text format, rendered by prometheus_client.

Rules:

- Nobody hand-writes the format: ``BalancerCollector`` reads the Balancer at
  scrape time (nothing is copied on the login path) and prometheus_client
  renders it, in the classic text format or OpenMetrics as the scraper asks.
- ``METRICS`` is the one list of what is exposed: every family, and every
  instrument (the request counter and the histograms), is built from its
  row (name, type, labels, help; a per-server gauge's /v1/pool field too).
  docs/status-page.md shows it as a table and a test checks the two agree.
- A private CollectorRegistry: importing this module registers nothing
  globally, and two balancers in one process (tests) do not share series.
- Names: ``ltsp_`` prefix, the unit last (``_seconds``, ``_sessions``),
  ``_total`` on counters, ``_timestamp_seconds`` for when something happened
  (Prometheus' advice: a time, never an age, so a stalled balancer shows as
  an age that grows in the query, not as a gauge that froze).
- Labels name a thing, never carry a measurement. ``server``: the SERVERS
  entry, one value per entry on every per-server series (the host, with
  ``:port`` when the port is not 377: two entries on one host stay two
  series). ``state``: a state set, one 0/1 series per pool state and server,
  so a change of state is a change of value, not a new series.
  ``handler``: a fixed set of routes (a scanner's paths cannot grow the
  series); ``code``; ``result``.
- Every labelled series a dashboard reads exists from the first scrape, at
  0: per-server counters for every SERVERS entry, answers for every result,
  requests for the codes that matter (``REQUEST_CODES``). A series born at
  its first event hides that event from ``rate()`` and ``increase()``.
- No family repeats another: servers by state are ``sum by (state)
  (ltsp_server_state)``, Down is ``ltsp_server_state{state="Down"}``, the
  503s are ``ltsp_balancer_answers_total{result!="ok"}``.
- Figures a Down server does not have are absent, never 0.
- Series per server are kept few (14): at 1,000 servers the library renders
  about 5 us a series, off the event loop (``snapshot`` on the loop, a copy
  of the figures; ``encode`` in a worker thread). ``encode`` renders the
  balancer's families one at a time and keeps each one's text: a family
  whose figures are the same as at the previous scrape (most server states,
  capacities, the counters of a quiet pool) is neither made nor rendered
  again (``family_parts``: 82 ms a scrape at 1,000 servers rendered whole,
  about 18 ms so).
"""

from __future__ import annotations

import functools
import time
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

from .balancer import NO_SERVER, OK, STALE, UNKNOWN_SERVERS

RESULTS = (OK, NO_SERVER, UNKNOWN_SERVERS, STALE)
# Routes by path; any other path (a scanner, a typo) is "other".
HANDLERS = {path: path for path in ("/", "/status/rows", "/v1/hosts", "/v1/pool", "/v1/history", "/metrics")}
OTHER = "other"
# The (handler, code) series that exist from the start: what a route answers when it works, a login's 503.
REQUEST_CODES = (*((handler, 200) for handler in HANDLERS), ("/v1/hosts", 503), (OTHER, 404))
# Seconds: a login answer takes well under a millisecond, a page for 1,000 servers tens of them.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Seconds: a poll of a few live servers takes ms, one with a dead server POLL_TIMEOUT_MS (1 s; 60 s at most).
POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

SERVER = ("server",)
Metric = namedtuple("Metric", "name type labels help field")
Metric.__doc__ = "One family of /metrics. FIELD: the /v1/pool field a per-server gauge shows, else None."

METRICS = (
    Metric(
        "ltsp_server_state",
        "gauge",
        ("server", "state"),
        "1 for the server's pool state, 0 for the others: Idle, Busy, Swapped, Drain, Failing, Down",
        None,
    ),
    Metric("ltsp_server_sessions", "gauge", SERVER, "User sessions on the server, by its latest document", "sessions"),
    Metric(
        "ltsp_server_capacity_sessions",
        "gauge",
        SERVER,
        "Sessions the server can hold in all (scaled by its WEIGHT)",
        "capacity",
    ),
    Metric("ltsp_server_rating_sessions", "gauge", SERVER, "The server's rating: sessions it can still take", "rating"),
    Metric(
        "ltsp_server_pending_logins",
        "gauge",
        SERVER,
        "Logins handed to the server that its figures do not show yet",
        "pending",
    ),
    Metric(
        "ltsp_server_sample_timestamp_seconds",
        "gauge",
        SERVER,
        "When the server's latest figures were taken, in seconds since the epoch",
        None,
    ),
    Metric(
        "ltsp_server_logins_handed_out_total",
        "counter",
        SERVER,
        "Logins handed to the server (first host of an answer)",
        None,
    ),
    Metric("ltsp_server_poll_errors_total", "counter", SERVER, "Polls that found the server Down", None),
    Metric(
        "ltsp_server_ejections_total",
        "counter",
        SERVER,
        "Outlier ejections of the server by this balancer: its logins never became sessions, or clients reported them",
        None,
    ),
    Metric(
        "ltsp_balancer_answers_total",
        "counter",
        ("result",),
        "Answers to /v1/hosts: ok, or a 503 (get_hosts probes alone): no_usable_server, unknown_servers, stale_figures",
        None,
    ),
    Metric("ltsp_balancer_polls_total", "counter", (), "Polls of the whole pool finished", None),
    Metric(
        "ltsp_balancer_last_poll_timestamp_seconds",
        "gauge",
        (),
        "When the latest poll of the whole pool finished, in seconds since the epoch",
        None,
    ),
    Metric("ltsp_balancer_poll_duration_seconds", "histogram", (), "How long each poll of the whole pool took", None),
    Metric("ltsp_balancer_build_info", "info", ("version",), "The balancer's version (always 1)", None),
    Metric(
        "ltsp_balancer_http_request_duration_seconds",
        "histogram",
        ("handler",),
        "Time to answer an HTTP request, by route",
        None,
    ),
    Metric(
        "ltsp_balancer_http_requests_total",
        "counter",
        ("handler", "code"),
        "HTTP requests answered, by route and status",
        None,
    ),
)
BY_NAME = {metric.name: metric for metric in METRICS}
# The families prometheus_client builds for each type; an info family is a gauge named *_info.
_FAMILIES = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily, "info": InfoMetricFamily}
_PER_SERVER_GAUGES = tuple(metric for metric in METRICS if metric.field is not None)


def family(name):
    """An empty metric family for the METRICS row NAME: its type, labels and help."""
    metric = BY_NAME[name]
    base = _base_name(metric)
    if metric.type == "info":
        return InfoMetricFamily(base, metric.help)
    return _FAMILIES[metric.type](base, metric.help, labels=metric.labels)


def instrument(name, registry, **options):
    """A live prometheus_client instrument (Counter or Histogram) for the METRICS row NAME, in REGISTRY."""
    metric = BY_NAME[name]
    kind = {"counter": Counter, "histogram": Histogram}[metric.type]
    return kind(_base_name(metric), metric.help, metric.labels, registry=registry, **options)


def _base_name(metric):
    """The name prometheus_client takes: counters without _total, infos without _info (it adds them)."""
    suffix = {"counter": "_total", "info": "_info"}.get(metric.type)
    return metric.name.removesuffix(suffix) if suffix else metric.name


def server_label(host, port):
    """The server label of a SERVERS entry: the host, with its port when that is not 377 (as the status page)."""
    return format_host_port(host, port, default_port=ADVERTISE_PORT)


class BalancerCollector:
    """A prometheus_client collector that reads BALANCER at each scrape.

    CLOCK: the balancer's clock (time.monotonic; tests drive the balancer with a fake one); WALL: the
    epoch clock the timestamps are in.
    """

    def __init__(self, balancer, clock=monotonic, wall=time.time):
        self.balancer = balancer
        self.clock = clock
        self.wall = wall

    def describe(self):
        return []  # the series depend on SERVERS: registering must not scrape

    def read(self, view=None, wall=None):
        """The balancer's figures now, copied (on the thread that owns the balancer: its event loop).

        VIEW: the balancer's pool_view already taken at WALL (views.py shares one among the admin's views)."""
        balancer = self.balancer
        if view is None:
            view, wall = balancer.pool_view(self.clock()), self.wall()
        return Reading(
            view,
            wall,
            dict(balancer.handed_out),
            dict(balancer.poll_errors),
            dict(balancer.ejections),
            dict(balancer.answers),
            balancer.polls,
        )

    def collect(self):
        return families(self.read())


Reading = namedtuple("Reading", "view wall handed_out poll_errors ejections answers polls")
Reading.__doc__ = "A copy of the balancer's figures at one scrape (WALL: the epoch time of VIEW's now)."


def _state_family(name, names, states):
    state = family(name)
    for label, current in zip(names, states):
        for word in POOL_STATES:
            state.add_metric((label, word), 1 if word == current else 0)
    return state


def _labelled_family(metric_name, items):
    """A family of one labelled sample per (label value, value) of ITEMS; a None value has none."""
    built = family(metric_name)
    for label, value in items:
        if value is not None:  # unknown is absent, never a made-up 0
            built.add_metric((label,), value)
    return built


def _unlabelled_family(metric_name, value):
    built = family(metric_name)
    built.add_metric((), value)
    return built


def _part(name, key, make, *figures):
    """(NAME, KEY, a maker of the family NAME by MAKE from FIGURES): one entry of family_parts."""
    return name, key, functools.partial(make, name, *figures)


def family_parts(reading):
    """(name, key, make) for each metric family of a Reading, in exposition order (pure: any thread).

    KEY (hashable, cheap: the figures the family is made of) decides the family whole, so a family whose KEY
    is the previous scrape's need not be made nor rendered again; make() builds it."""
    view = reading.view
    rows = view["servers"]
    names = tuple(server_label(row["host"], row["port"]) for row in rows)
    # Per server: the state set, the figures of the latest document, when it was taken.
    states = tuple(row["state"] if row["state"] in POOL_STATES else DOWN for row in rows)
    yield _part("ltsp_server_state", (names, states), _state_family, names, states)
    for metric in _PER_SERVER_GAUGES:
        values = tuple(zip(names, (row[metric.field] for row in rows)))
        yield _part(metric.name, values, _labelled_family, values)
    ages = (row["sample_age_ms"] for row in rows)
    taken = tuple(zip(names, (None if age is None else reading.wall - age / 1000.0 for age in ages)))
    yield _part("ltsp_server_sample_timestamp_seconds", taken, _labelled_family, taken)
    for name, tally in (
        ("ltsp_server_logins_handed_out_total", reading.handed_out),
        ("ltsp_server_poll_errors_total", reading.poll_errors),
        ("ltsp_server_ejections_total", reading.ejections),
    ):
        # Every entry from the start at 0; servers dropped by a reload keep their count (a counter never goes back).
        items = tuple((label, tally.get(label, 0)) for label in {**dict.fromkeys(names), **dict.fromkeys(tally)})
        yield _part(name, items, _labelled_family, items)
    results = {**dict.fromkeys(RESULTS), **dict.fromkeys(reading.answers)}
    answers = tuple((result, reading.answers.get(result, 0)) for result in results)
    yield _part("ltsp_balancer_answers_total", answers, _labelled_family, answers)
    yield _part("ltsp_balancer_polls_total", reading.polls, _unlabelled_family, reading.polls)
    if view["last_poll_age_ms"] is not None:
        polled = reading.wall - view["last_poll_age_ms"] / 1000.0
        yield _part("ltsp_balancer_last_poll_timestamp_seconds", polled, _unlabelled_family, polled)
    yield _part("ltsp_balancer_build_info", __version__, _unlabelled_family, {"version": __version__})


def families(reading):
    """The metric families of a Reading (pure: any thread)."""
    for _name, _key, make in family_parts(reading):
        yield make()


class Scrape:
    """One scrape: the balancer's Reading taken, the other collectors read when encoded (a registry's collect())."""

    def __init__(self, reading, others):
        self.reading = reading
        self.others = others

    def reading_parts(self):
        return family_parts(self.reading)

    def collect(self):
        yield from families(self.reading)
        for collector in self.others:  # prometheus_client's own: thread-safe
            yield from collector.collect()


class _One:
    """A collector of one family: what prometheus_client's encoders take."""

    __slots__ = ("family",)

    def __init__(self, family):
        self.family = family

    def collect(self):
        return (self.family,)


EOF_LINE = b"# EOF\n"  # OpenMetrics' last line, once per exposition
OPENMETRICS = "application/openmetrics-text"


class FamilyTexts:
    """Each of the balancer's families rendered by prometheus_client, its text kept until its figures change
    (its key: family_parts).

    The text of a whole scrape is the families' texts one after the other (the classic format is exactly
    that; OpenMetrics ends once with EOF_LINE), so a family kept is bytes already rendered.
    """

    def __init__(self):
        self._kept = {}  # content type -> {family name: (key, text)}, from its latest scrape

    def encode(self, encoder, content_type, scrape):
        """The body of SCRAPE in CONTENT_TYPE, rendered by ENCODER (prometheus_client's, for that type)."""
        kept, texts = {}, []
        before = self._kept.get(content_type, {})
        for name, key, make in scrape.reading_parts():
            previous = before.get(name)
            unchanged = previous is not None and previous[0] == key
            text = previous[1] if unchanged else _without_eof(encoder(_One(make())))
            kept[name] = (key, text)
            texts.append(text)
        for collector in scrape.others:  # prometheus_client's own instruments: few samples, read live
            texts.append(_without_eof(encoder(collector)))
        self._kept[content_type] = kept  # one per format asked for (views.py: two at most)
        if content_type.startswith(OPENMETRICS):
            texts.append(EOF_LINE)
        return b"".join(texts)


def _without_eof(text):
    return text[: -len(EOF_LINE)] if text.endswith(EOF_LINE) else text


class Metrics:
    """The registry of one balancer: its collector, the process' own figures, the poll and HTTP instruments.

    POLLER (poller.Poller), when given, reports each round's duration to the poll histogram.
    """

    def __init__(self, balancer, poller=None, clock=monotonic, wall=time.time):
        # No *_created series: in the classic text format each is one more gauge per counter child, and
        # Prometheus does not need them (a process-wide setting of prometheus_client 0.17+).
        disable_created = getattr(prometheus_client, "disable_created_metrics", None)
        if disable_created is not None:
            disable_created()
        self.registry = CollectorRegistry(auto_describe=False)
        self._families = FamilyTexts()
        self.collector = BalancerCollector(balancer, clock, wall)
        self.registry.register(self.collector)
        self.process = ProcessCollector(registry=self.registry)  # process_resident_memory_bytes: the RSS budget
        self.polls = instrument("ltsp_balancer_poll_duration_seconds", self.registry, buckets=POLL_BUCKETS)
        if poller is not None:
            poller.on_round.append(self.polls.observe)
        self.latency = instrument("ltsp_balancer_http_request_duration_seconds", self.registry, buckets=LATENCY_BUCKETS)
        self.requests = instrument("ltsp_balancer_http_requests_total", self.registry)
        # Children resolved once: the login path pays a dict lookup, not prometheus_client's label lock.
        self._latency = {handler: self.latency.labels(handler) for handler in (*HANDLERS.values(), OTHER)}
        self._requests = {(handler, code): self.requests.labels(handler, str(code)) for handler, code in REQUEST_CODES}

    def observe(self, path, status, seconds):
        """Count and time one finished request (every route: http.py calls it)."""
        route = HANDLERS.get(path, OTHER)
        self._latency[route].observe(seconds)
        key = (route, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(route, str(status))
        child.inc()

    def snapshot(self, view=None, wall=None):
        """A Scrape with the balancer's figures read now (or VIEW, its pool_view taken at WALL): call it on the
        balancer's thread (a few ms)."""
        return Scrape(self.collector.read(view, wall), (self.process, self.polls, self.latency, self.requests))

    def encode(self, scrape, accept=None):
        """(body bytes, content type) of SCRAPE for a scraper whose Accept header is ACCEPT (one thread at a
        time: views.py's renderer)."""
        encoder, content_type = choose_encoder(accept or "")
        return self._families.encode(encoder, content_type, scrape), content_type

    def render(self, accept=None):
        """snapshot() and encode() at once."""
        return self.encode(self.snapshot(), accept)
