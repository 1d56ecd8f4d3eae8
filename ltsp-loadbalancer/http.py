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
  or 503 with a one-line reason. The client's settings (``algorithm``,
  ``max_load``, ``max_response_ms``, ``skip_swapping``) and identity
  (``mac``, ``ip``, ``hostname``: mac-hash's key, never logged) are read
  by query.py and apply to this answer; its ``X-LTSP-Applied`` header says
  what was applied. ``peek=1``: the same answer, counting nothing.
  ``failed=HOST`` (get_hosts' retry) is passed on with the client's address
  (the connection's peer: what tells reporters apart, never logged). This route
  is the hot path (HostsRequest, no RequestHandler); the others go through
  Tornado's application and handlers (Router chooses by path).
- ``GET /v1/pool``: the whole pool as JSON.

Connections: a client outside ALLOW is closed before anything is read (a
warning, one per peer a minute, then the count of the rest:
ltsp_lbcore.refusals); beyond MAX_CLIENTS open connections, new ones are
closed at once.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from time import monotonic

import tornado.httpserver
import tornado.httputil
import tornado.web

from ltsp_lbcore.refusals import RefusalLog

from . import query as query_module

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


class HostsRequest(tornado.httputil.HTTPMessageDelegate):
    """One /v1/hosts request, answered without a RequestHandler: the hot path of a login storm.

    Tornado still reads and parses the request (start line, headers, body
    under its size cap and timeouts); only the RequestHandler machinery,
    about a third of a small request's cost, is left out. GET takes the
    fields from the query, POST from a form-encoded body (as get_hosts sends
    a long pool).
    """

    def __init__(self, balancer, connection, start_line, observe):
        self.balancer = balancer
        self.connection = connection
        self.start_line = start_line
        self.observe = observe
        self.started = monotonic()
        self.body = []

    def headers_received(self, start_line, headers):
        return None

    def data_received(self, chunk):
        self.body.append(chunk)

    def finish(self):
        query = self.start_line.path.partition("?")[2]
        if self.start_line.method not in ("GET", "POST"):
            self._respond(405, "only GET and POST", {"Allow": "GET, POST"})
            return
        fields = urllib.parse.parse_qs(query)
        if self.start_line.method == "POST":
            fields.update(urllib.parse.parse_qs(b"".join(self.body).decode("latin-1")))
        peer = self.connection.context.remote_ip
        asked = query_module.from_fields(fields, peer)
        ask = query_module.with_limits(asked, self.balancer.pool.limits)
        line, reason = self.balancer.hosts(asked.servers, monotonic(), asked.failed, peer, ask)
        applied = {"X-LTSP-Applied": query_module.applied(asked)}
        if line is None:
            self._respond(503, reason, applied)
        else:
            self._respond(200, line, applied)

    def _respond(self, status, text, extra=None):
        body = (text + "\n").encode("utf-8")
        headers = tornado.httputil.HTTPHeaders(
            {
                "Content-Type": "text/plain; charset=utf-8",
                "Content-Length": str(len(body)),
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                **(extra or {}),
            }
        )
        reason = tornado.httputil.responses.get(status, "Unknown")
        self.connection.write_headers(tornado.httputil.ResponseStartLine("HTTP/1.1", status, reason), headers, body)
        self.connection.finish()
        if self.observe is not None:
            self.observe("/v1/hosts", status, monotonic() - self.started)

    def on_connection_close(self):
        self.body = []


class PoolHandler(BaseHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.balancer.pool_view(monotonic()), separators=(",", ":")))


class Router(tornado.httputil.HTTPServerConnectionDelegate):
    """/v1/hosts to HostsRequest; every other path to the Tornado application (its handlers)."""

    def __init__(self, balancer, application, observe=None):
        self.balancer = balancer
        self.application = application
        self.observe = observe

    def start_request(self, server_conn, request_conn):
        return _Dispatch(self, server_conn, request_conn)

    def on_close(self, server_conn):
        self.application.on_close(server_conn)


class _Dispatch(tornado.httputil.HTTPMessageDelegate):
    """Chooses the delegate of one request from its start line, then passes everything on to it."""

    def __init__(self, router, server_conn, request_conn):
        self.router, self.server_conn, self.request_conn = router, server_conn, request_conn
        self.delegate = None

    def headers_received(self, start_line, headers):
        router = self.router
        if start_line.path.partition("?")[0] == "/v1/hosts":
            self.delegate = HostsRequest(router.balancer, self.request_conn, start_line, router.observe)
        else:
            self.delegate = router.application.start_request(self.server_conn, self.request_conn)
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.delegate.data_received(chunk)

    def finish(self):
        self.delegate.finish()

    def on_connection_close(self):
        if self.delegate is not None:
            self.delegate.on_connection_close()


def make_application(balancer, extra_routes=(), observe=None):
    """The HTTP delegate of the balancer: /v1/hosts' fast path, the rest through Tornado's handlers.

    OBSERVE(path, status, seconds), when given, counts and times every request.
    """
    log_function = None
    if observe is not None:

        def log_function(handler):
            observe(handler.request.path, handler.get_status(), handler.request.request_time())

    routes = [(r"/v1/pool", PoolHandler, {"balancer": balancer}), *extra_routes]
    # No access log: a morning storm is thousands of requests a minute, and
    # the answers carry nothing worth keeping (the counters do).
    application = tornado.web.Application(routes, log_function=log_function or (lambda handler: None))
    return Router(balancer, application, observe)


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server with ALLOW and MAX_CLIENTS applied to each new connection."""

    def initialize(self, *args, allow=None, max_clients=1024, **kwargs):
        super().initialize(*args, **kwargs)
        self.allow = allow
        self.max_clients = max_clients
        self.open_connections = 0
        self.refusals = RefusalLog(log)  # one warning per peer a minute, then the count of the rest

    def handle_stream(self, stream, address):
        host = address[0] if isinstance(address, tuple) else ""
        if self.allow is not None and not self.allow.allows(host):
            self.refusals.refused(host, "not in ALLOW", monotonic())
            stream.close()
            return
        if self.open_connections >= self.max_clients:
            self.refusals.refused(host, f"MAX_CLIENTS ({self.max_clients}) connections are open", monotonic())
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
