"""The admin's view, served beside the API: the status page, its history, the Prometheus metrics.

Routes (cli.py adds them to http.py's application; ALLOW applies to them as to the API):

- ``GET /``: the status page (statuspage.py), rendered on the server, so it
  reads without scripts.
- ``GET /status/rows``: the page's live parts rendered by the same
  templates, which its script fetches every few seconds to update the page.
- ``GET /v1/history``: the last hour of every server's fullness (history.py)
  as JSON, for the page's sparklines.
- ``GET /metrics``: Prometheus' text format (metrics.py).

Rules:

- Read-only: no route here changes the balancer.
- Logins come first. Each of these answers is read from the balancer on the
  event loop (a copy of the figures, a few ms for 1,000 servers), then
  turned into text in ONE worker thread of its own: a page or a scrape of a
  big pool never holds the loop for the whole rendering, and admins
  reloading pages can neither take more than that thread nor delay the
  poller's threads. cli.py lowers the GIL switch interval so that the loop
  gets the interpreter back quickly from that thread.

``extra_routes`` also returns the observer that counts and times every
request (the /metrics latency histogram).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from time import monotonic

import tornado.ioloop
import tornado.web

from . import statuspage
from .history import History
from .http import BaseHandler
from .metrics import Metrics


class _ReadOnlyHandler(BaseHandler):
    def initialize(self, balancer, history, metrics, renderer):
        super().initialize(balancer)
        self.history = history
        self.metrics = metrics
        self.renderer = renderer

    def compute_etag(self):
        # No ETag: the answers are no-store, and Tornado's is a SHA-1 of the whole body (1 ms for a page of
        # 1,000 servers) that no client could use.
        return None

    def render_off_loop(self, function, *args):
        return tornado.ioloop.IOLoop.current().run_in_executor(self.renderer, function, *args)


class StatusPageHandler(_ReadOnlyHandler):
    """GET /: the whole page (TEMPLATE: statuspage.PAGE); StatusRowsHandler: its live parts."""

    template = statuspage.PAGE

    async def get(self):
        pool = self.balancer.pool_view(monotonic(), documents=False)
        pool_series, series = self.history.snapshot()
        page = await self.render_off_loop(
            _render, self.template, pool, series, pool_series, self.balancer.config.poll_seconds, self.history.points
        )
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", statuspage.CONTENT_SECURITY_POLICY)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")
        self.finish(page)


class StatusRowsHandler(StatusPageHandler):
    template = statuspage.ROWS


def _render(template, pool, series, pool_series, refresh_seconds, points):
    generated_at = time.strftime("%Y-%m-%d %H:%M:%S")
    return statuspage.render(template, pool, series, pool_series, refresh_seconds, generated_at, points)


class HistoryHandler(_ReadOnlyHandler):
    async def get(self):
        now = monotonic()
        snapshot = self.history.snapshot()
        body = await self.render_off_loop(_history_json, self.history, now, snapshot)
        self.set_header("Content-Type", "application/json")
        self.finish(body)


def _history_json(history, now, snapshot):
    return json.dumps(history.view(now, snapshot), separators=(",", ":")).encode("utf-8")


class MetricsHandler(_ReadOnlyHandler):
    async def get(self):
        snapshot = self.metrics.snapshot()
        body, content_type = await self.render_off_loop(
            self.metrics.encode, snapshot, self.request.headers.get("Accept")
        )
        self.set_header("Content-Type", content_type)
        self.finish(body)


def extra_routes(balancer, poller):
    """(tornado routes to add to the API's application, observe(path, status, seconds) for every request)."""
    options = {
        "balancer": balancer,
        "history": History().attach(balancer),
        "metrics": Metrics(balancer, poller),
        # Threads start at the first request, after the privilege drop: every module is imported by then.
        "renderer": ThreadPoolExecutor(max_workers=1, thread_name_prefix="admin-view"),
    }
    routes = [
        (r"/", StatusPageHandler, options),
        (r"/status/rows", StatusRowsHandler, options),
        (r"/v1/history", HistoryHandler, options),
        (r"/metrics", MetricsHandler, options),
    ]
    return routes, options["metrics"].observe
