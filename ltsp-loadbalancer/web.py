"""The admin's view, served beside the API: the status page, the pool, its history, the Prometheus metrics.

Routes (cli.py adds them to http.py's application; ALLOW applies to them as to the API):

- ``GET /``: the status page (statuspage.py), rendered on the server, so it
  reads without scripts.
- ``GET /status/rows``: the page's live parts rendered by the same
  templates, which its script fetches every few seconds to update the page.
- ``GET /v1/pool``: the whole pool as JSON (get_hosts --status reads it).
- ``GET /v1/history``: the last hour of every server's fullness (history.py)
  as JSON, for the page's sparklines.
- ``GET /metrics``: Prometheus' text format (metrics.py).

Rules:

- Read-only: no route here changes the balancer.
- Logins come first. Every answer here is a view of views.py: built once
  per poll in one worker thread of its own and shared by every request
  (cli.py lowers the GIL switch interval so that the event loop gets the
  interpreter back quickly from that thread), at most MAX_IN_FLIGHT
  answered at once.

``extra_routes`` also returns the observer that counts and times every
request (the /metrics latency histogram).
"""

from __future__ import annotations

import tornado.iostream

from . import statuspage, views
from .history import History
from .http import BaseHandler
from .metrics import Metrics


class ViewHandler(BaseHandler):
    """GET of one shared view (VIEW, a views.BUILDERS name)."""

    view = None

    def initialize(self, balancer, views):
        super().initialize(balancer)
        self.views = views

    def compute_etag(self):
        # No ETag: the answers are no-store, and Tornado's is a SHA-1 of the whole body (1 ms for a page of
        # 1,000 servers) that no client could use.
        return None

    def variant(self):
        return None

    def set_view_headers(self):
        """Headers of this view besides its type and length."""

    async def get(self):
        if not self.views.enter(self.request.remote_ip):
            await self.views.turn()  # refusals too, one a turn: a burst of them never holds the logins back
            try:
                self.set_header("Retry-After", "1")
                self.plain(503, f"{self.views.max_in_flight} status requests are being answered: try again later")
            finally:
                self.views.turn_done()
            return
        try:
            body, content_type = await self.views.body(self.view, self.variant())
            await self.views.turn()
            try:
                if self.request.connection.stream.closed():
                    return  # the client left while its answer waited
                self.set_header("Content-Type", content_type)
                self.set_header("Content-Length", len(body))
                self.set_view_headers()
                # The headers alone first: finish() then writes the shared body as it is (Tornado keeps a view
                # of it), where a body given with the headers would be copied behind them, once per request.
                self.flush()
                self.finish(body)
            finally:
                self.views.turn_done()
            # In flight until the whole answer is with the kernel (the future of finish() may resolve with
            # the headers' write): an empty write's future resolves once everything queued is written.
            await self.request.connection.stream.write(b"")
        except tornado.iostream.StreamClosedError:
            pass  # the client left: nothing to say
        finally:
            self.views.leave()


class StatusPageHandler(ViewHandler):
    view = views.PAGE

    def set_view_headers(self):
        self.set_header("Content-Security-Policy", statuspage.CONTENT_SECURITY_POLICY)
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Frame-Options", "DENY")


class StatusRowsHandler(StatusPageHandler):
    view = views.ROWS


class PoolHandler(ViewHandler):
    view = views.POOL


class HistoryHandler(ViewHandler):
    view = views.HISTORY


class MetricsHandler(ViewHandler):
    view = views.METRICS

    def variant(self):
        return views.metrics_variant(self.request.headers.get("Accept"))


def extra_routes(balancer, poller):
    """(tornado routes to add to the API's application, observe(path, status, seconds) for every request)."""
    metrics = Metrics(balancer, poller)
    options = {"balancer": balancer, "views": views.Views(balancer, History().attach(balancer), metrics)}
    routes = [
        (r"/", StatusPageHandler, options),
        (r"/status/rows", StatusRowsHandler, options),
        (r"/v1/pool", PoolHandler, options),
        (r"/v1/history", HistoryHandler, options),
        (r"/metrics", MetricsHandler, options),
    ]
    return routes, metrics.observe
