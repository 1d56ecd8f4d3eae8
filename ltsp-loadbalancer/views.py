"""The admin's views (the page, its rows, /v1/pool, /v1/history, /metrics) built once per poll and shared.

Rules:

- A view is bytes built from one ``Reading`` of the balancer: its figures
  copied on the event loop (the pool with its documents, READING_STEP rows
  per turn of the loop so that logins go between, the history, the
  counters), once for every view. A Reading is taken again only when the
  figures have moved on: a poll finished, a reload, an ejection, the figures turned stale
  (polling stopped: the page must say so), or POLL_SECONDS passed (ages
  stay within a round of true when polls stop). Logins handed out between
  polls show at the next one.
- Each view is built from a Reading once, in ONE renderer thread of its
  own (admins can neither take more than that thread nor delay the
  poller's); a request for a view being built waits for that build (single
  flight), even when a newer Reading exists: at most one build per view at
  a time, whatever the request pattern. A build that failed is tried again
  by the next request.
- Every request for a view gets the same bytes object, written without a
  copy (headers first, with its length, then the body: Tornado keeps a
  view of large bodies), so 600 pages at once cost one page of memory.
- One answer written per turn of the event loop: a burst of page requests
  is written one by one, with the logins that became ready meanwhile
  answered in between (written all in one turn, 600 pages held every login
  for half a second).
- At most MAX_IN_FLIGHT admin requests are answered at once (from their
  arrival until their answer is written or their client gone); beyond, 503
  at once with ``Retry-After``, one warning per client a minute.
- Read-only: nothing here changes the balancer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from time import monotonic

from prometheus_client.exposition import choose_encoder

from ltsp_lbcore.refusals import RefusalLog

from . import statuspage
from .balancer import stale_after

log = logging.getLogger(__name__)

# Admin requests answered at once. A school has a few pages open and one Prometheus; the bound is for a
# burst (a script, a scanner, a reload storm): each request in flight holds a connection and some loop time.
MAX_IN_FLIGHT = 64
READING_STEP = 200  # /v1/pool rows copied per turn of the event loop (~0.5 ms)
PAGE, ROWS, POOL, HISTORY, METRICS = "page", "rows", "pool", "history", "metrics"

Reading = namedtuple("Reading", "key taken_at wall pool history snapshot metrics scrape poll_seconds")
Reading.__doc__ = """The balancer's figures at one moment, for every view: KEY says what they are of (Views.key);
TAKEN_AT the monotonic and WALL the epoch time; POOL /v1/pool's document with the stats documents; HISTORY
the History and SNAPSHOT its copy (pool series, {(host, port): series}); METRICS the metrics.Metrics that
renders SCRAPE, a metrics.Scrape."""

_Build = namedtuple("_Build", "reading future")


def _page(template):
    def build(reading, _variant):
        pool_series, series = reading.snapshot
        generated_at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reading.wall))
        body = statuspage.render(
            template, reading.pool, series, pool_series, reading.poll_seconds, generated_at, reading.history.points
        )
        return body, "text/html; charset=utf-8"

    return build


def _json_by_item(document, key):
    """json.dumps of DOCUMENT with the list at KEY last, encoded an item at a time: the C encoder holds the
    interpreter for the whole of one call (7 ms for /v1/pool at 1,000 servers), microseconds for one item."""
    rest = _dumps({name: value for name, value in document.items() if name != key})
    items = ",".join([_dumps(item) for item in document[key]])
    return f'{rest[:-1]}{"," if len(rest) > 2 else ""}"{key}":[{items}]}}'.encode()


def _dumps(value):
    return json.dumps(value, separators=(",", ":"))


def _pool(reading, _variant):
    return _json_by_item(reading.pool, "servers"), "application/json"


def _history(reading, _variant):
    return _json_by_item(reading.history.view(reading.taken_at, reading.snapshot), "servers"), "application/json"


def _metrics(reading, content_type):
    return reading.metrics.encode(reading.scrape, content_type)


BUILDERS = {
    PAGE: _page(statuspage.PAGE),
    ROWS: _page(statuspage.ROWS),
    POOL: _pool,
    HISTORY: _history,
    METRICS: _metrics,
}


# The two /metrics variants: prometheus_client passes an Accept header's version= through to the content
# type, so a client could otherwise ask for endlessly many (each a build, kept).
TEXT_TYPE = choose_encoder("")[1]
OPENMETRICS_TYPE = choose_encoder("application/openmetrics-text; version=1.0.0")[1]


def metrics_variant(accept):
    """The variant of /metrics an Accept header asks for: OPENMETRICS_TYPE or TEXT_TYPE, whatever the header."""
    try:
        chosen = choose_encoder(accept or "")[1]
    except Exception:  # a version it cannot read (version=1.x raises): the classic format, as for no header
        return TEXT_TYPE
    return OPENMETRICS_TYPE if chosen.startswith("application/openmetrics-text") else TEXT_TYPE


class Views:
    """The shared views of one balancer (BALANCER, its HISTORY and METRICS); CLOCK: the balancer's clock."""

    def __init__(self, balancer, history, metrics, clock=monotonic, wall=time.time, max_in_flight=MAX_IN_FLIGHT):
        self.balancer, self.history, self.metrics = balancer, history, metrics
        self.clock, self.wall = clock, wall
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.refusals = RefusalLog(log)  # requests beyond MAX_IN_FLIGHT: one warning per client a minute
        self.readings = 0  # Readings taken since start
        self.builds = 0  # views built since start (the tests count them)
        # Threads start at the first build, after the privilege drop: every module is imported by then.
        self.renderer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="admin-view")
        self._reading = None
        self._taking = None  # the task taking a Reading, while one is
        self._builds = {}  # (view, variant) -> _Build
        self._writing = False  # an answer has the current turn
        self._next_writers = collections.deque()  # futures of the answers waiting for a turn, oldest first

    def key(self, now):
        """What a Reading now would be of: (reload generation, polls finished, ejections, figures stale)."""
        balancer = self.balancer
        polled_at = balancer.pool.polled_at
        stale = polled_at is not None and now - polled_at > stale_after(balancer.config)
        # An ejection (from clients' reports, between polls) is a change of state: shown at once.
        return balancer.generation, balancer.polls, sum(balancer.ejections.values()), stale

    async def reading(self):
        """The current Reading: the kept one while the figures have not moved on, else a new one (on the loop,
        in steps); requests that come while one is being taken wait for it."""
        now = self.clock()
        kept = self._reading
        if kept is not None and kept.key == self.key(now) and now - kept.taken_at < self.balancer.config.poll_seconds:
            return kept
        if self._taking is None:
            self._taking = asyncio.ensure_future(self._take())
        return await asyncio.shield(self._taking)

    async def _take(self):
        try:
            balancer = self.balancer
            while True:
                now, wall = self.clock(), self.wall()
                key, pool = self.key(now), balancer.pool
                rows = []
                for first in range(0, len(pool.servers), READING_STEP):
                    if first:
                        await asyncio.sleep(0)  # logins go between the steps
                    rows += balancer.pool_rows(now, first, first + READING_STEP)
                if balancer.pool is pool and self.key(now) == key:
                    break  # else a reload, a poll or an ejection came between the steps: take them in
            view = balancer.pool_view(now, rows=rows)
            snapshot = self.history.snapshot()
            scrape = self.metrics.snapshot(view, wall)
            self._reading = Reading(
                key, now, wall, view, self.history, snapshot, self.metrics, scrape, balancer.config.poll_seconds
            )
            self.readings += 1
            return self._reading
        finally:
            self._taking = None

    def enter(self, peer):
        """Take a place among the requests in flight for PEER: False when MAX_IN_FLIGHT are (answer 503 then)."""
        if self.in_flight >= self.max_in_flight:
            self.refusals.refused(peer, f"{self.max_in_flight} status requests in flight (503)", self.clock())
            return False
        self.in_flight += 1
        return True

    def leave(self):
        self.in_flight -= 1

    async def body(self, view, variant=None):
        """(bytes, content type) of VIEW (one of BUILDERS) for the current Reading, built at most once."""
        reading = await self.reading()
        slot = (view, variant)
        build = self._builds.get(slot)
        if build is None or (build.future.done() and (build.reading is not reading or build.future.exception())):
            future = asyncio.get_running_loop().run_in_executor(self.renderer, BUILDERS[view], reading, variant)
            build = self._builds[slot] = _Build(reading, future)
            self.builds += 1
        return await asyncio.shield(build.future)  # a waiter cancelled never cancels the others' build

    async def turn(self):
        """Wait for this answer's turn to be written (call ``turn_done`` once its write has started)."""
        if not self._writing:
            self._writing = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._next_writers.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._pass_turn()  # it had been given the turn: the next one gets it, or none is held
            raise

    def turn_done(self):
        """The next answer gets its turn on the next pass of the event loop, after the I/O ready by then."""
        asyncio.get_running_loop().call_soon(self._pass_turn)

    def _pass_turn(self):
        while self._next_writers:
            waiter = self._next_writers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._writing = False
