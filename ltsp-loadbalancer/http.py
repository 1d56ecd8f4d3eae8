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
- ``GET /v1/pool`` and the admin's views: web.py's routes, passed in.

Connections: a client outside ALLOW is closed before anything is read (a
warning, one per peer a minute, then the count of the rest:
ltsp_lbcore.refusals); beyond MAX_CLIENTS open connections, new ones are
closed at once.
"""

from __future__ import annotations

import errno
import logging
import urllib.parse
from time import monotonic

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.web

from ltsp_lbcore.refusals import RefusalLog

from . import query as query_module

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8192
# What get_hosts sends with every /v1/hosts request (balancer_client.request_bytes): a header no web page can
# add to a cross-site request without a CORS preflight, so a login the balancer counts comes from a program.
CLIENT_HEADER = "X-LTSP-Client"
# A login is one request per connection; a browser keeps a few hundred requests on one. Beyond this the
# connection is closed after its answer: a pipelined burst is bounded by this, not by the client.
MAX_REQUESTS_PER_CONNECTION = 100
ACCEPT_BATCH = 128  # connections accepted per readiness event (Tornado's own backlog heuristic)
ACCEPT_BACKOFF_SECONDS = (0.05, 1.0)  # the first pause after accept() ran out of descriptors, the longest
ACCEPT_PAUSE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
LOG_INTERVAL_SECONDS = 60.0
SWEEP_SECONDS = 0.1  # how often connections past their deadline are closed (CLIENT_TIMEOUT_SECONDS >= 0.1)
# The loggers whose lines a client can cause (malformed requests, errors in a request).
CLIENT_DRIVEN_LOGGERS = ("tornado.general", "tornado.application", "tornado.access")


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


def cross_site_reason(headers):
    """Why a login request may come from a web page rather than get_hosts (a browser can be made to send it
    cross-site: a GET with a side effect), or None. get_hosts sends CLIENT_HEADER, which no page can add
    without a CORS preflight the balancer never grants, and never sends cookies, Origin or Sec-Fetch-Site."""
    if headers is None or not headers.get(CLIENT_HEADER):
        return f"a login request needs the {CLIENT_HEADER} header (get_hosts sends it; peek=1 needs none)"
    if "Cookie" in headers or "Origin" in headers:
        return "a login request with a Cookie or Origin header comes from a browser: refused"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("none", "same-origin"):
        return f"a login request with Sec-Fetch-Site {site[:20]!r} comes from another site: refused"
    return None


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
        self.headers = None

    def headers_received(self, start_line, headers):
        self.headers = headers

    def data_received(self, chunk):
        self.body.append(chunk)

    def finish(self):
        if self.connection.stream.closed():  # the client is gone (reset while its requests queued): no work
            return
        query = self.start_line.path.partition("?")[2]
        method = self.start_line.method
        if method not in ("GET", "POST", "HEAD"):
            self._respond(405, "only GET and POST", {"Allow": "GET, HEAD, POST"})
            return
        fields = urllib.parse.parse_qs(query)
        if method == "HEAD":  # the headers of GET's answer, no body: a look, never a login (HTTP: HEAD is safe)
            fields["peek"] = ["1"]
        if self.start_line.method == "POST":
            fields.update(urllib.parse.parse_qs(b"".join(self.body).decode("latin-1")))
        peer = self.connection.context.remote_ip
        asked = query_module.from_fields(fields, peer)
        if not asked.ask.peek:
            forged = cross_site_reason(self.headers)
            if forged is not None:
                self._respond(403, forged)
                return
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
        if self.start_line.method == "HEAD":
            body = None
        self.connection.write_headers(tornado.httputil.ResponseStartLine("HTTP/1.1", status, reason), headers, body)
        self.connection.finish()
        if self.observe is not None:
            self.observe("/v1/hosts", status, monotonic() - self.started)

    def on_connection_close(self):
        self.body = []


class NotFoundHandler(BaseHandler):
    """Every path without a route: Tornado's own ErrorHandler would say its name and version."""

    def prepare(self):
        raise tornado.web.HTTPError(404)


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

    routes = list(extra_routes)  # web.py's: /v1/pool and the admin's views
    # No access log: a morning storm is thousands of requests a minute, and
    # the answers carry nothing worth keeping (the counters do).
    application = tornado.web.Application(
        routes,
        log_function=log_function or (lambda handler: None),
        default_handler_class=NotFoundHandler,
        default_handler_args={"balancer": balancer},
    )
    return Router(balancer, application, observe)


class _Guarded(tornado.httputil.HTTPMessageDelegate):
    """One request on a guarded connection (GuardedHTTPServer's rules): ALLOW again from the second on; the
    last one a connection may send asks Tornado to close after it; read whole, it gets the write deadline."""

    __slots__ = ("count", "delegate", "request_conn", "server", "server_conn")

    def __init__(self, server, server_conn, request_conn, delegate, count):
        self.server, self.server_conn, self.request_conn = server, server_conn, request_conn
        self.delegate, self.count = delegate, count  # COUNT: this request's number on its connection

    def headers_received(self, start_line, headers):
        if self.count > 1 and self.server.allow is not None:  # ALLOW may have changed since the accept
            peer = self.request_conn.context.remote_ip
            if not self.server.allow.allows(peer):
                self.server.refusals.refused(peer, "not in ALLOW (since a reload)", monotonic())
                self.request_conn.stream.close()
                return None
        if self.count >= MAX_REQUESTS_PER_CONNECTION:
            self.request_conn._disconnect_on_finish = True  # Tornado's own flag for "Connection: close"
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.delegate.data_received(chunk)

    def finish(self):
        # Read whole: from now on the answer must be taken within the client timeout (a write timeout).
        self.server.deadline(self.server_conn, self.request_conn.stream)
        if self.request_conn.stream.closed():  # gone before its turn came (pipelined, then reset): no work
            return None  # (Tornado told the delegate at the close)
        return self.delegate.finish()

    def on_connection_close(self):
        self.delegate.on_connection_close()


class LogLimit(logging.Filter):
    """Lines a client can cause (Tornado's malformed-request and error lines): the first of each kind an
    interval, then one line with the count of the rest (ltsp_lbcore.refusals' idea, keyed by message)."""

    def __init__(self, interval=LOG_INTERVAL_SECONDS, clock=monotonic, max_kinds=256):
        super().__init__()
        self.interval, self.clock, self.max_kinds = interval, clock, max_kinds
        self.kinds = {}  # (logger, message template) -> [first time, suppressed count]

    def filter(self, record):
        now = self.clock()
        self.flush(now)
        key = (record.name, str(record.msg))
        seen = self.kinds.get(key)
        if seen is None:
            if len(self.kinds) < self.max_kinds:
                self.kinds[key] = [now, 0]
                return True
            key = ("", "other client-driven lines")
            seen = self.kinds.setdefault(key, [now, 0])
        seen[1] += 1
        return False

    def flush(self, now):
        for key, (since, count) in list(self.kinds.items()):
            if now - since >= self.interval:
                del self.kinds[key]
                if count:
                    log.warning(
                        "%d more lines like %r in %.0f s (one line a %g s)", count, key[1], now - since, self.interval
                    )


def limit_client_logs(filter_=None):
    """Rate-limit the loggers a client drives (Tornado's), once per process."""
    filter_ = filter_ or LogLimit()
    for name in CLIENT_DRIVEN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, LogLimit) for existing in logger.filters):
            logger.addFilter(filter_)
    return filter_


class GuardedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTP server with the balancer's bounds on each connection.

    - ALLOW at accept, and again at each further request of a kept-alive connection (ALLOW may have
      changed at a reload); beyond MAX_CLIENTS open connections, new ones are closed at once.
    - One deadline per connection, CLIENT_TIMEOUT_SECONDS (held within SWEEP_SECONDS): for reading each
      request (from the moment the connection waits for it: connect, or the previous answer written) and
      again for writing its answer (a client that pipelines and never reads is dropped).
    - At most MAX_REQUESTS_PER_CONNECTION requests per connection; the last is answered with
      ``Connection: close``. A request whose client is gone by its turn is not worked on.
    - accept() failing for want of descriptors or memory stops accepting for a while (ACCEPT_BACKOFF),
      one line, instead of spinning.
    """

    def initialize(self, *args, allow=None, max_clients=1024, client_timeout=5.0, **kwargs):
        super().initialize(*args, **kwargs)
        self.allow = allow
        self.max_clients = max_clients
        self.client_timeout = client_timeout
        self.open_connections = 0
        self.refusals = RefusalLog(log)  # one warning per peer a minute, then the count of the rest
        self.accept_errors = RefusalLog(log)
        self._sweeper = None  # the PeriodicCallback of _sweep, from add_sockets on

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

    def deadline(self, server_conn, stream):
        """(Re)set the connection's one deadline: CLIENT_TIMEOUT_SECONDS from now (``_sweep`` closes it then).

        An attribute, not a timer: a timer per request (set, then cancelled) cost ~10 us of a login's ~300."""
        server_conn.lb_deadline = monotonic() + self.client_timeout

    def _sweep(self):
        """Close the connections past their deadline (every SWEEP_SECONDS: a deadline holds within that)."""
        now = monotonic()
        for server_conn in [c for c in self._connections if getattr(c, "lb_deadline", now) < now]:
            server_conn.stream.close()

    def stop(self):
        if self._sweeper is not None:
            self._sweeper.stop()
        super().stop()

    def start_request(self, server_conn, request_conn):
        count = getattr(server_conn, "lb_requests", 0) + 1
        server_conn.lb_requests = count
        stream = request_conn.stream
        self.deadline(server_conn, stream)
        delegate = super().start_request(server_conn, request_conn)
        return _Guarded(self, server_conn, request_conn, delegate, count)

    def on_close(self, server_conn):
        self.open_connections -= 1
        super().on_close(server_conn)

    def add_sockets(self, sockets):
        if self._sweeper is None:
            self._sweeper = tornado.ioloop.PeriodicCallback(self._sweep, SWEEP_SECONDS * 1000)
            self._sweeper.start()
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept_from(sock)

    def _accept_from(self, sock):
        """Tornado's accept handler, but out of descriptors it pauses (doubling, up to a second), never spins."""
        io_loop = tornado.ioloop.IOLoop.current()
        state = {"removed": False, "paused": None, "backoff": ACCEPT_BACKOFF_SECONDS[0]}

        def resume():
            state["paused"] = None
            if not state["removed"]:
                io_loop.add_handler(sock, accept, tornado.ioloop.IOLoop.READ)

        def accept(fd, events):
            for _ in range(ACCEPT_BATCH):
                if state["removed"]:
                    return
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    state["backoff"] = ACCEPT_BACKOFF_SECONDS[0]
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as error:
                    if error.errno not in ACCEPT_PAUSE_ERRNOS:
                        raise
                    io_loop.remove_handler(sock)
                    wait = state["backoff"]
                    state["backoff"] = min(wait * 2, ACCEPT_BACKOFF_SECONDS[1])
                    state["paused"] = io_loop.call_later(wait, resume)
                    self.accept_errors.refused(
                        "new clients", f"cannot accept: {error.strerror}; accepting pauses {wait:g} s", monotonic()
                    )
                    return
                self._handle_connection(connection, address)

        def remove():
            if state["paused"] is not None:
                io_loop.remove_timeout(state["paused"])
            elif not state["removed"]:
                io_loop.remove_handler(sock)
            state["removed"] = True

        io_loop.add_handler(sock, accept, tornado.ioloop.IOLoop.READ)
        return remove


def make_server(application, config, allow):
    limit_client_logs()
    return GuardedHTTPServer(
        application,
        allow=allow,
        max_clients=config.max_clients,
        client_timeout=config.client_timeout_seconds,
        # Tornado's own timeouts stay as a backstop; the connection's deadline (above) comes first.
        idle_connection_timeout=config.client_timeout_seconds,
        body_timeout=config.client_timeout_seconds,
        max_header_size=MAX_HEADER_BYTES,
        max_body_size=config.max_request_bytes,
        xheaders=False,
    )
