"""The status page (GET /): one self-contained HTML table, one row per server, as HAProxy's stats page.

Rules:

- One renderer: the markup is Tornado templates (``templates/``,
  autoescaped: a host name or a reason can never become markup), the style
  and the script are files beside them (``static/``), all shipped as
  package data. The page (``page.html``) and each update (``rows.html``,
  GET /status/rows) render the same two parts, ``live.html`` (the figures
  above the table) and ``table.html`` (the table: a column is its header
  and its cell there, and a formatting function here when it needs one).
- Pure: ``render(template, pool, ...)`` turns the /v1/pool document (a dict)
  and the fullness history (history.py) into bytes; web.py serves them.
- Self-contained: the style and the script are inlined (a school LAN often
  has no internet). No font, image or script is fetched from anywhere; the
  Content-Security-Policy allows exactly these two inline blocks, by the
  SHA-256 of the files, computed when this module is loaded.
- Readable with scripts off: the server renders the whole page, and a
  ``<noscript>`` meta refresh reloads it. With scripts on, the script
  fetches status/rows every few seconds and copies what changed into the
  page (text and attributes of the elements the server rendered; it draws
  nothing itself).
- A state is a word and a colour, never a colour alone; bars and
  sparklines carry their figures as text beside them or as a title.
- Read-only: no form, no button.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import itertools
import re
from pathlib import Path

import tornado.template

from ltsp_lbcore.hostport import format_host_port
from ltsp_lbcore.ports import ADVERTISE_PORT
from ltsp_lbcore.states import BUSY, DOWN, DRAINING, FAILING, IDLE, POOL_STATES, SWAPPED

from .history import MAX_PERCENT, NO_VALUE, POINTS

HERE = Path(__file__).resolve().parent
STATE_CLASSES = {IDLE: "idle", BUSY: "busy", SWAPPED: "swapped", DRAINING: "drain", FAILING: "failing", DOWN: "down"}
DASH = "\u2014"

# Sparklines: one x unit per point, y in percent (100 % at the top), drawn as steps (each point is the
# peak of its 30 s) filled down to the axis. A known 0 % still shows as a sliver: no figure is a gap.
SPARK_FLOOR = 8
_HEIGHTS = tuple(100 - max(SPARK_FLOOR, min(value, 100)) for value in range(NO_VALUE))


# --- figures as words: the templates call these ---------------------------------------------------------


def number(value):
    """A figure with at most one decimal (16.303 -> "16.3", 3.0 -> "3"); a dash when unknown."""
    if value is None:
        return DASH
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def seconds_text(ms):
    return DASH if ms is None else f"{number(ms / 1000.0)} s"


def ms_text(ms):
    return DASH if ms is None else f"{ms:.0f} ms"


def server_name(server):
    """The server as SERVERS names it: the host, with its port when that is not 377."""
    return format_host_port(server["host"], server.get("port"), default_port=ADVERTISE_PORT)


def fill_text(server):
    if server.get("capacity") is None:
        return DASH
    return f"{number(server.get('sessions'))} / {number(server['capacity'])}"


def bar_widths(server):
    """(used, pending) lengths of the fullness bar, in whole percent (together at most 100).

    Rounded half up, as the script rounds: both draw the same bar.
    """
    capacity = server.get("capacity")
    if not capacity or capacity <= 0:
        return 0, 0
    used = min(100, int(100.0 * (server.get("sessions") or 0) / capacity + 0.5))
    pending = min(100 - used, int(100.0 * (server.get("pending") or 0) / capacity + 0.5))
    return used, pending


def fill_class(used, pending):
    """The used part's colour class, by fullness with pending logins counted: low, mid (>= 70 %), high (>= 90 %)."""
    total = used + pending
    return "f-high" if total >= 90 else "f-mid" if total >= 70 else "f-low"


def reason_text(server):
    """The reason, shown for every server that is not plainly Idle."""
    if server.get("state") == IDLE:
        return ""
    return server.get("reason") or ""


def state_of(server):
    state = server.get("state")
    return state if state in STATE_CLASSES else DOWN


def _as_bytes(values):
    """Percents (a list with None for no value, or history.py's bytes) -> bytes, NO_VALUE for no value."""
    if isinstance(values, (bytes, bytearray)):
        return bytes(values)
    return bytes(NO_VALUE if value is None else max(0, min(int(value), MAX_PERCENT)) for value in values)


def spark_path(values):
    """The SVG path of a sparkline: a filled step for every known point (equal ones merged), nothing for a gap."""
    parts = []
    x = 0
    for run in _as_bytes(values).split(bytes([NO_VALUE])):
        if run:
            parts.append(f"M{x} 100")
            for y, same in itertools.groupby(map(_HEIGHTS.__getitem__, run)):
                parts.append(f"V{y}h{sum(1 for _ in same)}")
            parts.append("V100Z")
        x += len(run) + 1
    return "".join(parts)


def spark_title(values):
    known = _as_bytes(values).replace(bytes([NO_VALUE]), b"")
    if not known:
        return "no figures in the last hour"
    return f"last hour: now {known[-1]} %, peak {max(known)} %, low {min(known)} %"


def pool_totals(servers):
    """(sessions, capacity) of every server that answered with both."""
    sessions = capacity = 0.0
    for server in servers:
        if server.get("capacity") is not None and server.get("sessions") is not None:
            sessions += server["sessions"]
            capacity += server["capacity"]
    return sessions, capacity


def summary_text(pool):
    servers = pool.get("servers") or []
    if not servers:
        return "SERVERS is empty: every login is answered 503 and the thin clients probe the pool themselves."
    counts = {}
    for server in servers:
        counts[state_of(server)] = counts.get(state_of(server), 0) + 1
    states = ", ".join(f"{counts[state]} {state}" for state in POOL_STATES if state in counts)
    age = pool.get("last_poll_age_ms")
    poll = "no poll has finished yet" if age is None else f"last poll {seconds_text(age)} ago"
    return f"{len(servers)} servers: {states}; {poll}."


def polling_stopped_text(pool):
    """What the page says above everything when the figures are stale (polling stopped), else None."""
    age, limit = pool.get("last_poll_age_ms"), pool.get("stale_after_ms")
    if age is None or limit is None or age <= limit:
        return None
    return (
        f"Polling has stopped: the latest poll finished {seconds_text(age)} ago. Logins are answered 503 "
        "(the thin clients probe the servers themselves) until a poll works again; the balancer's log says why."
    )


def pool_load_text(servers):
    sessions, capacity = pool_totals(servers)
    if capacity <= 0:
        return f"no figures ({DASH})"
    return f"{number(sessions)} / {number(capacity)} sessions ({100.0 * sessions / capacity:.0f} %)"


# --- the page -----------------------------------------------------------------------------------------


def spark_html(values, css="spark"):
    """The sparkline of VALUES (a list with None for no value, or history.py's bytes), rendered by spark.html."""
    return _spark_of(_as_bytes(values), css)


@functools.lru_cache(maxsize=2048)
def _spark_of(data, css):
    # Cached by the values themselves: most servers' last hour is the same from one page to the next
    # (it shifts every 30 s), and the paths are most of a row's cost. At most ~2 MiB.
    return SPARK.generate(css=css, points=len(data), title=spark_title(data), path=spark_path(data), **_HELPERS).strip()


@functools.lru_cache(maxsize=len(STATE_CLASSES))
def state_html(state):
    """The badge of STATE (one of STATE_CLASSES), rendered by state.html."""
    return STATE.generate(state=state, **_HELPERS).strip()


@functools.lru_cache(maxsize=1024)
def bar_html(used, pending):
    """The fullness bar of USED and PENDING percent, rendered by bar.html (at most 101 x 101 of them)."""
    return BAR.generate(used=used, pending=pending, **_HELPERS).strip()


_MARKUP = re.compile(rb"[&<>\"']")


def escape_html(value):
    """The templates' autoescape: Tornado's xhtml_escape (the same five characters escaped) on the UTF-8 bytes
    the template holds, returned at once when none is there (most figures): the page costs half as much."""
    if _MARKUP.search(value) is None:
        return value
    return html.escape(value.decode("utf-8")).encode("utf-8")


def _read(name):
    return (HERE / "static" / name).read_text(encoding="utf-8")


STYLE = _read("status.css")
SCRIPT = _read("status.js")
# Loaded and compiled now: before the privilege drop, and never on a request.
_TEMPLATES = tornado.template.Loader(str(HERE / "templates"), autoescape="escape_html")
PAGE, ROWS = _TEMPLATES.load("page.html"), _TEMPLATES.load("rows.html")
SPARK, BAR, STATE = (_TEMPLATES.load(name) for name in ("spark.html", "bar.html", "state.html"))
_HELPERS = {
    name: globals()[name]
    for name in (
        "STATE_CLASSES",
        "bar_html",
        "bar_widths",
        "escape_html",
        "fill_class",
        "fill_text",
        "ms_text",
        "number",
        "polling_stopped_text",
        "pool_load_text",
        "reason_text",
        "seconds_text",
        "server_name",
        "spark_html",
        "state_html",
        "state_of",
        "summary_text",
    )
}


def render(template, pool, series=None, pool_series=None, refresh_seconds=2.0, generated_at="", points=POINTS):
    """TEMPLATE (PAGE or ROWS) of the pool, as bytes.

    POOL: /v1/pool's document. SERIES: {(host, port): fullness values oldest first} (a list with None
    for no value, or history.py's bytes); POOL_SERIES: the pool's own. Missing series are empty.
    """
    servers = pool.get("servers") or []
    empty = bytes([NO_VALUE]) * points
    return template.generate(
        pool=pool,
        servers=servers,
        series=series or {},
        empty=empty,
        pool_series=empty if pool_series is None else pool_series,
        title=f"ltsp-loadbalancer: {len(servers)} servers",
        refresh=f"{min(10.0, max(1.0, float(refresh_seconds))):g}",
        reload_seconds=round(min(60.0, max(5.0, 2 * float(refresh_seconds)))),
        generated_at=generated_at,
        style=STYLE,
        script=SCRIPT,
        **_HELPERS,
    )


def render_page(pool, series=None, pool_series=None, refresh_seconds=2.0, generated_at="", points=POINTS):
    """The whole page as text (render's arguments)."""
    return render(PAGE, pool, series, pool_series, refresh_seconds, generated_at, points).decode("utf-8")


def _csp_hash(text):
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


# Exactly the two inline blocks of the files above may run or apply; everything else is refused,
# and the script may fetch only this balancer's own status/rows.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src {_csp_hash(SCRIPT)}; "
    f"style-src {_csp_hash(STYLE)}; "
    "connect-src 'self'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
