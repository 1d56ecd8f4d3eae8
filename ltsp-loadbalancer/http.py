"""The HTTP API on port 8377, served by Tornado (python3-tornado in Debian).

Why Tornado: it is packaged by Debian for years, has no dependencies, takes
already-bound sockets (``add_sockets``: we bind as root or get them from
systemd, then drop privileges), and bounds what a client can hold: a
timeout on reading the request headers and body (a client that sends
nothing, or one byte a second, is dropped), and caps on header and body
size. aiohttp has no header-read timeout of its own.

Routes (SPEC.md has the contract):

- ``GET /v1/hosts?servers=H1+H2&mac=M&ip=I&hostname=N`` and the same fields
  as a form-encoded ``POST /v1/hosts``: one line of hosts, ``text/plain``,
  or 503 with a one-line reason. mac, ip and hostname are accepted and not
  used: two-choice needs no client identity, and none is logged.
- ``GET /v1/pool``: the whole pool as JSON.

Connections: a client outside ALLOW is closed before anything is read;
beyond MAX_CLIENTS open connections, new ones are closed at once.
"""

from __future__ import annotations

import json
import logging
from time import monotonic

import tornado.httpserver
import tornado.web

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192


class BaseHandler(tornado.web.RequestHandler):
    """Headers and errors every route shares: no Server header, no caching, no sniffing, plain-text errors."""

    def initialize(self, balancer):
        self.balancer = balancer

    def set_default_headers(self):
        self.clear_header("Server")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    def plain(self, status, text):
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text + "\n")


class HostsHandler(BaseHandler):
    """One login: the hosts best first, the first handed out."""

    def get(self):
        self._answer()

    def post(self):
        self._answer()

    def _answer(self):
        servers = self.get_argument("servers", None)
        words = servers.split() if servers is not None and servers.strip() else None
        line, reason = self.balancer.hosts(words, monotonic())
        if line is None:
            self.plain(503, reason)
        else:
            self.plain(200, line)


class PoolHandler(BaseHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.balancer.pool_view(monotonic()), separators=(",", ":")))


def make_application(balancer, extra_routes=(), log_function=None):
    routes = [
        (r"/v1/hosts", HostsHandler, {"balancer": balancer}),
        (r"/v1/pool", PoolHandler, {"balancer": balancer}),
        *extra_routes,
    ]
    # No access log: a morning storm is thousands of requests a minute, and
    # the answers carry nothing worth keeping (the counters do).
    return tornado.web.Application(routes, log_function=log_function or (lambda handler: None))


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server with ALLOW and MAX_CLIENTS applied to each new connection."""

    def initialize(self, *args, allow=None, max_clients=1024, **kwargs):
        super().initialize(*args, **kwargs)
        self.allow = allow
        self.max_clients = max_clients
        self.open_connections = 0

    def handle_stream(self, stream, address):
        host = address[0] if isinstance(address, tuple) else ""
        if self.allow is not None and not self.allow.allows(host):
            log.debug("refused %s: not in ALLOW", host)
            stream.close()
            return
        if self.open_connections >= self.max_clients:
            log.warning("refused %s: MAX_CLIENTS (%d) connections are open", host, self.max_clients)
            stream.close()
            return
        self.open_connections += 1
        super().handle_stream(stream, address)

    def on_close(self, server_conn):
        self.open_connections -= 1
        super().on_close(server_conn)


def make_server(application, config, allow):
    return GuardedHTTPServer(
        application,
        allow=allow,
        max_clients=config.max_clients,
        idle_connection_timeout=config.client_timeout_seconds,
        body_timeout=config.client_timeout_seconds,
        max_header_size=MAX_HEADER_BYTES,
        max_body_size=config.max_request_bytes,
        xheaders=False,
    )
