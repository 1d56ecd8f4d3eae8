"""Asking ltsp-loadbalancer: one HTTP request to every listed balancer at once, the first good answer wins.

Rules (docs/get_hosts.md and SPEC.md say the same):

- Every balancer of LB_BALANCER is asked at the same time through the probe
  engine (``probe.ask_first``: one poll loop for the project), under one
  deadline (LB_BALANCER_TIMEOUT): names are resolved at once, each in its own
  thread, so a lookup that hangs costs the other balancers nothing. The first
  good answer is taken and the others are dropped. A balancer that does not
  resolve, refuses, resets, times out, answers 503 or sends anything else is
  no answer; when none answers, get_hosts probes the pool itself, so a login
  never waits longer than LB_BALANCER_TIMEOUT + LB_TIMEOUT.
- The request is HTTP/1.0 with ``Connection: close``: the answer ends when
  the balancer closes. The pool goes in the query (``servers=``), or in a
  form-encoded POST body when the query would be long. The engine sends it
  and reads the answer up to a cap; everything here is bytes in, values out
  (``HttpAnswer``: status line, headers, body), with no I/O. This is the
  client side only: the balancer's HTTP is served by Tornado.
- The /v1/hosts request carries this client's settings that its config
  sets (SENT_SETTINGS: LB_ALGORITHM, LB_MAX_LOAD, LB_MAX_RESPONSE_MS,
  LB_SKIP_SWAPPING) and the identity it already knows (MAC, IP, hostname:
  mac-hash's, or the one lts.conf's sections were picked by), so that the
  balancer applies them to its own figures: a setting means the same
  whichever path answers. Nothing is looked up for the request alone.
- A good /v1/hosts answer is ``200`` with one line of names. Names that are
  not in this client's pool are dropped (a balancer never makes get_hosts
  print a host it was not configured with); nothing left is no answer. Its
  ``X-LTSP-Applied`` header says what the balancer applied (--explain).
- A good /v1/pool answer (``--status``, ``--json``) is ``200`` with a JSON
  document checked as strictly as the wire format checks a server's
  document: at most MAX_POOL_ANSWER_BYTES, nested at most MAX_POOL_DEPTH
  deep, no NaN or Infinity, no number longer than MAX_NUMBER_CHARS, every
  known field of its type (DOCUMENT_FIELDS, ROW_FIELDS; fields it does not
  know are ignored) and every row's stats through ``wire.stats_from_json``.
  Anything else refuses the whole document: one warning naming the balancer
  and the bad value, and the pool is probed directly.
"""

from collections import namedtuple

from get_hosts.choose import with_pending
from get_hosts.probe import Conversation, ProbeResult, ask_first
from ltsp_lbcore import wire
from ltsp_lbcore.hostport import format_host_port

MAX_HOSTS_ANSWER_BYTES = 256 * 1024
MAX_POOL_ANSWER_BYTES = 8 * 1024 * 1024  # /v1/pool of a 1,000-server site is about 700 KB
MAX_QUERY_BYTES = 2000  # longer pools go in a POST body: some proxies cut URLs
MAX_POOL_DEPTH = 8  # the document's own: document, servers, row, stats (4); the rest is room to grow
MAX_NUMBER_CHARS = 40  # int('9' * 10**6) takes seconds on a thin client
MAX_TEXT_CHARS = 1000
MAX_VALUE_CHARS = 60  # of a bad value quoted in a warning

Balancer = namedtuple("Balancer", "host port")  # what the probe engine asks: .host, .port


# --- HTTP, bytes in and values out ----------------------------------------------------


def quote(text):
    """Percent-encoding for a query or form value (urllib.parse costs a few ms of import at login)."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:[]"
    return "".join(chr(byte) if byte in safe else "+" if byte == 32 else f"%{byte:02X}" for byte in text.encode())


# (request field, Settings field, variable): sent when the variable is set (Settings.sources).
SENT_SETTINGS = (
    ("algorithm", "algorithm", "LB_ALGORITHM"),
    ("max_load", "max_load", "LB_MAX_LOAD"),
    ("max_response_ms", "max_response_ms", "LB_MAX_RESPONSE_MS"),
    ("skip_swapping", "skip_swapping", "LB_SKIP_SWAPPING"),
)
IDENTITY_FIELDS = ("mac", "ip", "hostname")
APPLIED_HEADER = b"x-ltsp-applied"
MAX_APPLIED_CHARS = 200


def _field_text(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def settings_fields(settings, identity=None):
    """The /v1/hosts fields of SETTINGS' set variables and of IDENTITY's known parts (see the rules), in order."""
    sources = settings.sources or {}
    fields = {}
    for field, attribute, variable in SENT_SETTINGS:
        if variable in sources:
            fields[field] = _field_text(getattr(settings, attribute))
    for field in IDENTITY_FIELDS if identity is not None else ():
        value = getattr(identity, field)
        if value:
            fields[field] = value
    return fields


def request_bytes(method, path, host, form=None):
    """The HTTP/1.0 request: FORM (a dict) as the query of a GET, or the body of a POST."""
    body = "&".join(f"{key}={quote(value)}" for key, value in (form or {}).items())
    # X-LTSP-Client: the balancer counts a login only with it (no web page can send it cross-site).
    head = f"Host: {host}\r\nConnection: close\r\nUser-Agent: get_hosts\r\nX-LTSP-Client: get_hosts\r\n"
    if method == "GET":
        target = f"{path}?{body}" if body else path
        return f"GET {target} HTTP/1.0\r\n{head}\r\n".encode()
    head += f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
    return f"POST {path} HTTP/1.0\r\n{head}\r\n{body}".encode()


def hosts_request(pool_words, host, failed=None, fields=None):
    """The /v1/hosts request; FAILED: the pool name of this client's last login that did not last.

    FIELDS: more form fields (settings_fields: this client's settings and identity).
    """
    form = {"servers": " ".join(pool_words)}
    if failed:
        form["failed"] = failed
    form.update(fields or {})
    method = "GET" if len(form["servers"]) < MAX_QUERY_BYTES else "POST"
    return request_bytes(method, "/v1/hosts", host, form)


def split_response(data):
    """(status, head, body) of a whole HTTP response (head: the header lines, bytes), or ValueError."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("no end of headers")
    status_line, _newline, head = head.partition(b"\r\n")
    status_line = status_line.split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP status line: {data[:40]!r}")
    return int(status_line[1]), head, body


def parse_response(data):
    """(status, body) of a whole HTTP response, or ValueError naming what is wrong."""
    status, _head, body = split_response(data)
    return status, body


def header_value(head, name):
    """The text of header NAME (lower-case bytes) in HEAD, or None."""
    for line in head.split(b"\r\n"):
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


class HttpAnswer:
    """The probe engine's decoder for one HTTP/1.0 answer: CHECK(status, body) makes its value.

    With HEAD true, CHECK(status, body, head) gets the header lines too.
    CHECK raises ValueError for an answer that is no good; so does a
    response that is not HTTP. The engine caps the bytes fed.
    """

    complete = False  # Connection: close: the answer ends when the balancer closes

    def __init__(self, check, head=False):
        self._check = check
        self._head = head
        self._chunks = []  # joined once at close: += would copy 8 MB a few thousand times

    def feed(self, data):
        self._chunks.append(data)

    def close(self):
        try:
            status, head, body = split_response(b"".join(self._chunks))
        except ValueError as error:
            raise ValueError(f"not an HTTP answer: {error}") from None
        return self._check(status, body, head) if self._head else self._check(status, body)


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


def _first_line(body):
    return body.decode("utf-8", "replace").strip().split("\n")[0][:200]


# --- /v1/pool, checked like a document ------------------------------------------------


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= wire.MAX_NUMBER


def _number(value):
    # NaN fails both comparisons; Infinity the second.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= wire.MAX_NUMBER


# kind: (accepts a non-None value, what it should have been). None is accepted unless the field is required.
KINDS = {
    "name": (lambda v: isinstance(v, str) and 0 < len(v) <= 253, "a host name"),
    "port": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535, "a port (1-65535)"),
    "text": (lambda v: isinstance(v, str) and len(v) <= MAX_TEXT_CHARS, f"text of at most {MAX_TEXT_CHARS} chars"),
    "flag": (lambda v: isinstance(v, bool), "true or false"),
    "count": (_count, "a whole number >= 0"),
    "number": (_number, "a number >= 0"),
    "list": (lambda v: isinstance(v, list), "a list"),
    "object": (lambda v: isinstance(v, dict), "an object"),
}

# (field, kind, required): docs/loadbalancer.md names the same fields.
DOCUMENT_FIELDS = (
    ("servers", "list", True),
    ("poll_seconds", "number", False),
    ("last_poll_age_ms", "count", False),
    ("polls", "count", False),
)
ROW_FIELDS = (
    ("host", "name", True),
    ("port", "port", True),
    ("state", "text", False),
    ("usable", "flag", False),
    ("sessions", "count", False),
    ("capacity", "number", False),
    ("rating", "number", False),
    ("pending", "count", False),
    ("handed_out_5min", "count", False),
    ("sample_age_ms", "count", False),
    ("response_ms", "number", False),
    ("reason", "text", False),
    ("stats", "object", False),
)

PoolRow = namedtuple("PoolRow", "host port stats pending response_ms reason")
PoolRow.__doc__ = "One checked /v1/pool row: stats is a wire.ServerStats or None; pending an int; the rest may be None."

_JSON_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*"'
_INNERMOST_PAIR = rb"\[\]|\{\}"
_NOT_A_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _shown(value):
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "..."


def _check_depth(data):
    """ValueError when DATA's JSON nests deeper than MAX_POOL_DEPTH, before json.loads can recurse into it."""
    import re  # json imports it anyway; a login through /v1/hosts needs neither

    brackets = re.sub(_JSON_STRING, b"", data).translate(None, _NOT_A_BRACKET)
    for _level in range(MAX_POOL_DEPTH):
        if not brackets:
            return
        brackets = re.sub(_INNERMOST_PAIR, b"", brackets)  # one level a pass, each a C loop
    if brackets:
        raise ValueError(f"nested deeper than {MAX_POOL_DEPTH} levels (or brackets unbalanced)")


def _bounded_number(convert):
    def parse(text):
        if len(text) > MAX_NUMBER_CHARS:
            raise ValueError(f"a number of {len(text)} digits: {text[:20]}...")
        return convert(text)

    return parse


def _no_constant(name):
    raise ValueError(f"{name} is not a number")


def _check_fields(where, record, fields):
    if not isinstance(record, dict):
        raise ValueError(f"{where or 'the document'} is not an object: {_shown(record)}")
    for field, kind, required in fields:
        value = record.get(field)
        path = f"{where}.{field}" if where else field
        if value is None:
            if required:
                raise ValueError(f"{path} is missing")
            continue
        accepts, expected = KINDS[kind]
        if not accepts(value):
            raise ValueError(f"{path} is not {expected}: {_shown(value)}")


def read_pool_document(body):
    """The rows of a /v1/pool body (bytes), as PoolRows in document order; ValueError naming the first bad value."""
    import json

    _check_depth(body)
    try:
        document = json.loads(
            body,
            parse_int=_bounded_number(int),
            parse_float=_bounded_number(float),
            parse_constant=_no_constant,
        )
    except ValueError as error:  # UnicodeDecodeError and json's own errors are ValueErrors
        raise ValueError(f"not JSON: {error}") from None
    _check_fields("", document, DOCUMENT_FIELDS)
    rows = []
    for number, row in enumerate(document["servers"]):
        where = f"servers[{number}]"
        _check_fields(where, row, ROW_FIELDS)
        try:
            stats = None if row.get("stats") is None else wire.stats_from_json(row["stats"])
        except wire.ProtocolError as error:
            raise ValueError(f"{where}.stats: {error}") from None
        pending = row.get("pending") or 0
        rows.append(PoolRow(row["host"], row["port"], stats, pending, row.get("response_ms"), row.get("reason")))
    return rows


# --- what get_hosts asks -------------------------------------------------------------


def _ask(settings, make_request, make_check, limit, head=False):
    """Every balancer of SETTINGS at once: (label, value, ms) of the first good answer, or None; explain lines.

    make_request(host) -> bytes. make_check(label) -> check(status, body[, head]), as HttpAnswer takes it.
    """
    entries = [Balancer(host, port) for host, port in settings.balancers]
    conversations = []
    for entry in entries:
        check = make_check(format_host_port(entry.host, entry.port))
        answer = lambda c=check: HttpAnswer(c, head)  # noqa: E731 (one answer per conversation)
        conversations.append(Conversation(make_request(entry.host), answer, limit, ""))
    results = ask_first(entries, conversations, settings.balancer_timeout_ms)
    explain = []
    winner = None
    for entry, result in zip(entries, results):
        if result is None:  # still under way when another answered
            continue
        label = format_host_port(entry.host, entry.port)
        if result.error is None:
            winner = (label, result.stats, result.response_ms)
        else:
            explain.append(f"balancer {label}: {result.error}")
    return winner, explain


def ask_for_hosts(settings, failed=None, fields=None):
    """(names best first, or None; explain lines): one login through the balancers of SETTINGS.

    FAILED: the pool name of this client's last login, which did not last
    (retry.py); the balancer puts it last and counts the report. FIELDS:
    this client's settings and identity (settings_fields).
    """
    pool_names = [entry.name for entry in settings.servers]
    words = [_pool_word(entry) for entry in settings.servers]

    def make_check(_balancer):
        def check(status, body, head):
            if status != 200:
                raise ValueError(f"answered {status}: {_first_line(body)}")
            names = hosts_from_answer(body, pool_names)
            if not names:
                raise ValueError(f"answered no host of the pool: {_first_line(body)!r}")
            return names, header_value(head, APPLIED_HEADER)

        return check

    winner, explain = _ask(
        settings,
        lambda host: hosts_request(words, host, failed, fields),
        make_check,
        MAX_HOSTS_ANSWER_BYTES,
        head=True,
    )
    if winner is None:
        return None, explain
    label, (names, applied), elapsed_ms = winner
    explain.append(f"balancer {label} answered in {elapsed_ms:.0f} ms: {' '.join(names)}")
    explain.append(applied_line(label, applied, fields or {}))
    return names, explain


_VARIABLE_OF = {field: variable for field, _attribute, variable in SENT_SETTINGS}


def applied_line(label, applied, sent):
    """--explain: what balancer LABEL applied (its X-LTSP-Applied header APPLIED, or None) of the fields SENT."""
    asked = [f"{_VARIABLE_OF[field]} {value}" for field, value in sent.items() if field in _VARIABLE_OF]
    if applied is None:
        return (
            f"balancer {label} did not say what it applied (an older ltsp-loadbalancer?): its own least-full "
            f"order and its own limits" + (f", not {', '.join(asked)}" if asked else "")
        )
    words = {}
    for word in applied[:MAX_APPLIED_CHARS].split():
        key, _equals, value = word.partition("=")
        words[key] = value
    algorithm = words.pop("algorithm", "")
    key = words.pop("key", None)
    if algorithm in ("least-full", ""):
        parts = ["its own least-full order"]
    else:
        parts = [algorithm + (f" (keyed on the {key})" if key else "")]
    parts += [f"{_VARIABLE_OF[field]} {value}" for field, value in words.items() if field in _VARIABLE_OF]
    missed = [
        f"{_VARIABLE_OF[field]} {value}"
        for field, value in sent.items()
        if field in _VARIABLE_OF
        and field not in words
        and not (field == "algorithm" and (value == algorithm or value == "loadbalancer"))
    ]
    line = f"balancer {label} applied {', '.join(parts)}"
    line += " (its own config for the rest)" if len(parts) > 1 else ", with its own limits"
    if missed:
        line += f"; not applied: {', '.join(missed)}"
    from get_hosts.report import escape

    return escape(line, 400)


def ask_for_pool(settings):
    """(ProbeResults in pool order from one balancer's /v1/pool, or None; explain lines; warnings).

    A warning names each balancer whose document was refused, and the bad value.
    """
    warnings = []

    def make_check(label):
        def check(status, body):
            if status != 200:
                raise ValueError(f"answered {status}: {_first_line(body)}")
            try:
                return read_pool_document(body)
            except ValueError as error:
                warnings.append(f"balancer {label} sent a bad /v1/pool: {error}")
                raise ValueError(f"bad /v1/pool: {error}") from None

        return check

    request = lambda host: request_bytes("GET", "/v1/pool", host)  # noqa: E731 (one line, one use)
    winner, explain = _ask(settings, request, make_check, MAX_POOL_ANSWER_BYTES)
    if winner is None:
        return None, explain, warnings
    label, pool_rows, elapsed_ms = winner
    rows = {}
    for row in pool_rows:
        rows.setdefault((row.host.lower(), row.port), row)
    results = [_result_from_row(entry, rows.get((entry.host.lower(), entry.port)), label) for entry in settings.servers]
    explain.append(f"the pool as balancer {label} sees it ({elapsed_ms:.0f} ms)")
    return results, explain, warnings


def _result_from_row(entry, row, label):
    """The ProbeResult a checked /v1/pool row stands for, its pending logins counted in; Down when it is missing."""
    if row is None:
        return ProbeResult(entry, None, None, f"not in the SERVERS of balancer {label}")
    if row.stats is None:
        return ProbeResult(entry, None, None, row.reason or "down")
    return ProbeResult(entry, with_pending(row.stats, row.pending), row.response_ms, None)


def _pool_word(entry):
    return format_host_port(entry.host, entry.port)
