"""Asking ltsp-loadbalancer: one HTTP request to every listed balancer at once, the first good answer wins.

Rules (docs/get_hosts.md and SPEC.md say the same):

- Every balancer of LB_BALANCER is asked at the same time, each over its own
  non-blocking socket in one ``select.poll`` loop, under one deadline
  (LB_BALANCER_TIMEOUT): the first good answer is taken and the others are
  dropped. A balancer that refuses, resets, times out, answers 503 or sends
  anything else is no answer; when none answers, get_hosts probes the pool
  itself, so a login never waits longer than LB_BALANCER_TIMEOUT +
  LB_TIMEOUT.
- The request is HTTP/1.0 with ``Connection: close``: the answer ends when
  the balancer closes. The pool goes in the query (``servers=``), or in a
  form-encoded POST body when the query would be long. What comes back is
  read up to a cap and parsed here: status line, headers, body. This is the
  client side only: the balancer's HTTP is served by Tornado.
- A good /v1/hosts answer is ``200`` with one line of names. Names that are
  not in this client's pool are dropped (a balancer never makes get_hosts
  print a host it was not configured with); nothing left is no answer.
- python3 alone, no threads unless a balancer is named by a host name that
  needs DNS (then one daemon thread per name, bounded by the same deadline).
"""

import os
import select
import socket
from collections import namedtuple
from errno import EINPROGRESS
from time import monotonic

Answer = namedtuple("Answer", "balancer status body elapsed_ms")
Answer.__doc__ = "balancer: 'host:port' asked. status: HTTP status (int). body: bytes. elapsed_ms: float."

MAX_HOSTS_ANSWER_BYTES = 256 * 1024
MAX_POOL_ANSWER_BYTES = 8 * 1024 * 1024  # /v1/pool of a 1,000-server site is about 700 KB
MAX_QUERY_BYTES = 2000  # longer pools go in a POST body: some proxies cut URLs


def quote(text):
    """Percent-encoding for a query or form value (urllib.parse costs a few ms of import at login)."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:[]"
    return "".join(chr(byte) if byte in safe else "+" if byte == 32 else f"%{byte:02X}" for byte in text.encode())


def request_bytes(method, path, host, form=None):
    """The HTTP/1.0 request: FORM (a dict) as the query of a GET, or the body of a POST."""
    body = "&".join(f"{key}={quote(value)}" for key, value in (form or {}).items())
    head = f"Host: {host}\r\nConnection: close\r\nUser-Agent: get_hosts\r\n"
    if method == "GET":
        target = f"{path}?{body}" if body else path
        return f"GET {target} HTTP/1.0\r\n{head}\r\n".encode()
    head += f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    return f"POST {path} HTTP/1.0\r\n{head}\r\n{body}".encode()


def hosts_request(pool_words, host):
    form = {"servers": " ".join(pool_words)}
    method = "GET" if len(form["servers"]) < MAX_QUERY_BYTES else "POST"
    return request_bytes(method, "/v1/hosts", host, form)


def parse_response(data):
    """(status, body) of a whole HTTP response, or ValueError naming what is wrong."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("no end of headers")
    status_line = head.split(b"\r\n", 1)[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP status line: {head[:40]!r}")
    return int(status_line[1]), body


def hosts_from_answer(body, pool_names):
    """The names of a /v1/hosts body that are in POOL_NAMES (as the pool writes them), in order, once each."""
    by_lower = {name.lower(): name for name in pool_names}
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return []
    lines = text.strip().split("\n")
    chosen = []
    for word in lines[0].split() if len(lines) == 1 else ():
        name = by_lower.get(word.lower())
        if name is not None and name not in chosen:
            chosen.append(name)
    return chosen


class _Exchange:
    """One balancer's request and answer, driven by the poll loop."""

    __slots__ = ("addresses", "data", "error", "label", "limit", "request", "sent", "sock")

    def __init__(self, label, addresses, request, limit):
        self.label = label
        self.addresses = list(addresses)
        self.request = request
        self.limit = limit
        self.sock = None
        self.sent = 0
        self.data = b""
        self.error = None


def _addresses(host, port, deadline):
    """getaddrinfo for HOST, numeric at once; a name in a daemon thread bounded by DEADLINE."""
    try:
        return socket.getaddrinfo(host.encode("ascii"), port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        pass
    import threading

    found = []

    def resolve():
        try:
            found.append(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except (OSError, UnicodeError, ValueError):
            found.append([])

    worker = threading.Thread(target=resolve, daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - monotonic()))
    return found[0] if found else []


def exchange(balancers, make_request, limit, timeout_ms, accept):
    """Send each balancer its request at once; return (Answer or None, [why each other one failed]).

    BALANCERS: (host, port) pairs. make_request(host) -> bytes. ACCEPT(Answer)
    -> True when the answer is good (the first good one ends the exchange).
    """
    start = monotonic()
    deadline = start + timeout_ms / 1000.0
    poller = select.poll()
    by_fd = {}
    exchanges = []
    for host, port in balancers:
        label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        ex = _Exchange(label, _addresses(host, port, deadline), make_request(host), limit)
        exchanges.append(ex)
        _connect(ex, poller, by_fd)
    failures = []
    try:
        while by_fd:
            now = monotonic()
            if now >= deadline:
                break
            for fd, events in poller.poll((deadline - now) * 1000.0 + 1.0):
                ex = by_fd.get(fd)
                if ex is None:
                    continue
                answer = _step(ex, events, poller, by_fd, start)
                if answer is not None:
                    if accept(answer):
                        return answer, failures
                    failures.append(f"{ex.label}: answered {answer.status}: {_first_line(answer.body)}")
        for ex in exchanges:
            if ex.sock is not None:
                failures.append(f"{ex.label}: no answer within {timeout_ms} ms")
            elif ex.error is not None:
                failures.append(f"{ex.label}: {ex.error}")
        return None, failures
    finally:
        for ex in exchanges:
            if ex.sock is not None:
                ex.sock.close()


def _first_line(body):
    return body.decode("utf-8", "replace").strip().split("\n")[0][:200]


def _connect(ex, poller, by_fd):
    while ex.addresses:
        family, socktype, proto, _name, sockaddr = ex.addresses.pop(0)
        try:
            sock = socket.socket(family, socktype, proto)
        except OSError as error:
            ex.error = f"cannot open a socket: {error.strerror}"
            continue
        sock.setblocking(False)
        try:
            code = sock.connect_ex(sockaddr)
        except (OSError, OverflowError, ValueError) as error:
            sock.close()
            ex.error = f"connect failed: {error}"
            continue
        if code not in (0, EINPROGRESS):
            sock.close()
            ex.error = f"connect failed: {os.strerror(code)}"
            continue
        ex.sock = sock
        by_fd[sock.fileno()] = ex
        poller.register(sock.fileno(), select.POLLOUT)
        return
    if ex.error is None:
        ex.error = "no address to connect to"


def _drop(ex, poller, by_fd, error=None):
    poller.unregister(ex.sock.fileno())
    del by_fd[ex.sock.fileno()]
    ex.sock.close()
    ex.sock = None
    ex.error = error


def _step(ex, events, poller, by_fd, start):
    """Advance one exchange on a poll event; an Answer once the balancer closed after a whole response."""
    sock = ex.sock
    if ex.sent < len(ex.request):
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            _drop(ex, poller, by_fd, f"connect failed: {os.strerror(code)}")
            if ex.addresses:
                _connect(ex, poller, by_fd)
            return None
        try:
            ex.sent += sock.send(ex.request[ex.sent :])
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as error:
            _drop(ex, poller, by_fd, f"sending failed: {error.strerror}")
            return None
        if ex.sent == len(ex.request):
            poller.modify(sock.fileno(), select.POLLIN)
        return None
    try:
        chunk = sock.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as error:
        _drop(ex, poller, by_fd, f"reading failed: {error.strerror}")
        return None
    if chunk:
        ex.data += chunk
        if len(ex.data) > ex.limit:
            _drop(ex, poller, by_fd, f"answer larger than {ex.limit} bytes")
        return None
    data = ex.data
    _drop(ex, poller, by_fd)
    try:
        status, body = parse_response(data)
    except ValueError as error:
        ex.error = f"not an HTTP answer: {error}"
        return None
    return Answer(ex.label, status, body, (monotonic() - start) * 1000.0)


# --- what get_hosts asks -------------------------------------------------------------


def _ask(settings, make_request, limit, accept):
    """exchange() with every balancer of SETTINGS: (the first accepted Answer or None, explain lines)."""
    answer, failures = exchange(settings.balancers, make_request, limit, settings.balancer_timeout_ms, accept)
    return answer, [f"balancer {failure}" for failure in failures]


def ask_for_hosts(settings):
    """(names best first, or None; explain lines): one login through the balancers of SETTINGS."""
    pool_names = [entry.name for entry in settings.servers]
    words = [_pool_word(entry) for entry in settings.servers]
    chosen = {}  # Answer -> the pool names it gives, worked out once

    def good(answer):
        chosen[answer] = hosts_from_answer(answer.body, pool_names) if answer.status == 200 else []
        return bool(chosen[answer])

    answer, explain = _ask(settings, lambda host: hosts_request(words, host), MAX_HOSTS_ANSWER_BYTES, good)
    if answer is None:
        return None, explain
    names = chosen[answer]
    explain.append(f"balancer {answer.balancer} answered in {answer.elapsed_ms:.0f} ms: {' '.join(names)}")
    return names, explain


def ask_for_pool(settings):
    """(ProbeResults in pool order from one balancer's /v1/pool, or None; explain lines)."""
    import json

    documents = {}  # Answer -> its servers list, parsed once

    def good(answer):
        try:
            servers = json.loads(answer.body).get("servers") if answer.status == 200 else None
        except (ValueError, AttributeError):
            servers = None
        documents[answer] = servers
        return isinstance(servers, list)

    answer, explain = _ask(settings, lambda host: request_bytes("GET", "/v1/pool", host), MAX_POOL_ANSWER_BYTES, good)
    if answer is None:
        return None, explain
    rows = {}
    for row in documents[answer]:
        if isinstance(row, dict) and isinstance(row.get("host"), str):
            rows.setdefault((row["host"].lower(), row.get("port")), row)
    results = [
        _result_from_row(entry, rows.get((entry.host.lower(), entry.port)), answer) for entry in settings.servers
    ]
    explain.append(f"the pool as balancer {answer.balancer} sees it ({answer.elapsed_ms:.0f} ms)")
    return results, explain


def _result_from_row(entry, row, answer):
    """The ProbeResult a /v1/pool row stands for, its pending logins counted in; Down when it is missing or bad."""
    from get_hosts.probe import ProbeResult
    from ltsp_lbcore import wire

    if row is None:
        return ProbeResult(entry, None, None, f"not in the SERVERS of balancer {answer.balancer}")
    try:
        stats = wire.stats_from_json(row.get("stats"))
    except wire.ProtocolError as error:
        reason = row.get("reason") if row.get("stats") is None else f"bad row from the balancer: {error}"
        return ProbeResult(entry, None, None, str(reason or "down"))
    pending = row.get("pending") if isinstance(row.get("pending"), int) else 0
    if pending > 0:  # the balancer's accounting: logins it handed out that the figures do not show yet
        stats = stats._replace(rating=max(0.0, stats.rating - pending), sessions=(stats.sessions or 0) + pending)
    response_ms = row.get("response_ms") if isinstance(row.get("response_ms"), (int, float)) else None
    return ProbeResult(entry, stats, response_ms, None)


def _pool_word(entry):
    host = f"[{entry.host}]" if ":" in entry.host else entry.host
    return f"{host}:{entry.port}"
