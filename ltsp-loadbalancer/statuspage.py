"""The status page (GET /): one self-contained HTML table, one row per server, as HAProxy's stats page.

Rules:

- Pure: ``render_page(pool, series, ...)`` turns the /v1/pool document (a
  dict) and the fullness history (history.py) into the page; web.py serves
  it. Every value that comes from a config or a server's answer goes
  through ``html.escape``; the script sets data with ``textContent`` and
  ``setAttribute`` only, never ``innerHTML``.
- Self-contained: the CSS and the script are strings of this module, inlined
  (a school LAN often has no internet, and the Debian package installs .py
  files only). No font, image or script is fetched from anywhere; the
  Content-Security-Policy allows exactly these two inline blocks, by hash.
- Readable with scripts off: the server renders the whole table, and a
  ``<noscript>`` meta refresh reloads it. With scripts on, the page fetches
  /v1/pool every few seconds (/v1/history every 30 s) and updates the rows
  in place, with the same words, numbers, bars and sparklines the server
  renders (the script's functions mirror this module's, name for name; the
  browser tests compare the two).
- A state is a word and a colour, never a colour alone; bars and
  sparklines carry their figures as text beside them or as a title.
- Read-only: no form, no button.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
from html import escape

from ltsp_lbcore.hostport import format_host_port
from ltsp_lbcore.ports import ADVERTISE_PORT
from ltsp_lbcore.states import BUSY, DOWN, DRAINING, FAILING, IDLE, POOL_STATES, SWAPPED

from .history import MAX_PERCENT, NO_VALUE, POINTS

STATE_CLASSES = {IDLE: "idle", BUSY: "busy", SWAPPED: "swapped", DRAINING: "drain", FAILING: "failing", DOWN: "down"}
DASH = "\u2014"

# The columns, in order (the script finds a row's cells by position): class, title, help.
COLUMNS = (
    ("c-host", "Server", "The server as SERVERS names it (with its port when it is not 377)"),
    ("c-state", "State", "Idle, Busy (full: last resort), Swapped, Drain, Failing (login service broken) or Down"),
    ("c-fill", "Sessions / capacity", "User sessions over the sessions the server can hold; the light part: pending"),
    ("c-rating num", "Rating", "Sessions it can still take, by its own figures"),
    ("c-handed num", "Logins, 5 min", "Logins this balancer handed to it in the last 5 minutes"),
    ("c-pending num", "Pending", "Logins handed out that its figures do not show yet"),
    ("c-age num", "Sample age", "Age of its figures"),
    ("c-resp num", "Response", "How long the latest poll took"),
    ("c-hist", "Fullness, last hour", "Peak fullness per 30 s over the last hour; gaps: no answer"),
    (
        "c-eject num",
        "Ejections, 1 h",
        "Times this balancer took it out in the last hour: its logins never became sessions, or clients reported them",
    ),
    ("c-reason", "Reason", "Why it is skipped, or only used as a last resort"),
)

# Sparklines: one x unit per point, y in percent (100 % at the top), drawn as steps (each point is the
# peak of its 30 s) filled down to the axis. A known 0 % still shows as a sliver: no figure is a gap.
SPARK_FLOOR = 8
_HEIGHTS = tuple(100 - max(SPARK_FLOOR, min(value, 100)) for value in range(NO_VALUE))


# --- figures as words: the script's functions of the same names do the same ---------------------------


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
    port = server.get("port")
    return format_host_port(server["host"], None if port in (None, ADVERTISE_PORT) else port)


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


def pool_load_text(servers):
    sessions, capacity = pool_totals(servers)
    if capacity <= 0:
        return f"no figures ({DASH})"
    return f"{number(sessions)} / {number(capacity)} sessions ({100.0 * sessions / capacity:.0f} %)"


# --- the page -----------------------------------------------------------------------------------------


def _spark(values, css_class="spark"):
    return _spark_of(_as_bytes(values), css_class)


@functools.lru_cache(maxsize=2048)
def _spark_of(data, css_class):
    # Cached by the values themselves: most servers' last hour is the same from one page to the next
    # (it shifts every 30 s), and the paths are most of a row's cost. At most ~2 MiB.
    return (
        f'<svg class="{css_class}" viewBox="0 0 {len(data)} 100" preserveAspectRatio="none" role="img">'
        f'<title>{spark_title(data)}</title><path d="{spark_path(data)}"/></svg>'
    )


def render_row(server, values):
    """One server's <tr>. SERVER: a /v1/pool row; VALUES: its fullness history, oldest first."""
    state = state_of(server)
    css = STATE_CLASSES[state]
    used, pending = bar_widths(server)
    name = escape(server_name(server))
    # Bars are spans sized by class (w0 to w100): the policy allows no style attribute.
    return (
        f'<tr class="st-{css}"><th scope="row" class="c-host">{name}</th>'
        f'<td class="c-state"><span class="state s-{css}">{state}</span></td>'
        f'<td class="c-fill"><span class="bar" aria-hidden="true">'
        f'<span class="used {fill_class(used, pending)} w{used}"></span><span class="pend w{pending}"></span></span> '
        f'<span class="fill-text">{fill_text(server)}</span></td>'
        f'<td class="c-rating num">{number(server.get("rating"))}</td>'
        f'<td class="c-handed num">{int(server.get("handed_out_5min") or 0)}</td>'
        f'<td class="c-pending num">{int(server.get("pending") or 0)}</td>'
        f'<td class="c-age num">{seconds_text(server.get("sample_age_ms"))}</td>'
        f'<td class="c-resp num">{ms_text(server.get("response_ms"))}</td>'
        f'<td class="c-hist">{_spark(values)}</td>'
        f'<td class="c-eject num">{int(server.get("ejections_1h") or 0)}</td>'
        f'<td class="c-reason">{escape(reason_text(server))}</td></tr>'
    )


def _empty_row():
    return f'<tr class="empty"><td colspan="{len(COLUMNS)}">No servers: SERVERS is empty.</td></tr>'


def render_page(pool, series=None, pool_series=None, refresh_seconds=2.0, generated_at="", points=POINTS):
    """The whole page as text.

    POOL: /v1/pool's document. SERIES: {(host, port): fullness values oldest first} (a list with None
    for no value, or history.py's bytes); POOL_SERIES: the pool's own. Missing series are empty.
    """
    servers = pool.get("servers") or []
    series = series or {}
    empty = bytes([NO_VALUE]) * points
    refresh = min(10.0, max(1.0, float(refresh_seconds)))
    reload_seconds = round(min(60.0, max(5.0, 2 * float(refresh_seconds))))
    head = "".join(
        f'<th scope="col" class="{css}" title="{escape(help_)}">{escape(title)}</th>' for css, title, help_ in COLUMNS
    )
    rows = "\n".join(render_row(server, series.get((server["host"], server.get("port")), empty)) for server in servers)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>ltsp-loadbalancer: {len(servers)} servers</title>
<link rel="icon" href="data:,">
<noscript><meta http-equiv="refresh" content="{reload_seconds}"></noscript>
<style>{CSS}</style>
</head>
<body data-refresh="{refresh:g}">
<header>
<h1>ltsp-loadbalancer</h1>
<p id="summary">{escape(summary_text(pool))}</p>
<div id="pool-load"><span class="label">Pool load:</span> <span id="pool-now">{escape(pool_load_text(servers))}</span>
{_spark(pool_series if pool_series is not None else empty, "spark pool-spark")}
<span class="muted">peak per 30 s, last hour</span></div>
<p id="updated" class="muted" role="status">Figures as of {escape(generated_at)}.
<noscript>Scripts are off: this page reloads every {reload_seconds} s.</noscript></p>
</header>
<main>
<table id="pool">
<thead><tr>{head}</tr></thead>
<tbody id="servers">
{rows or _empty_row()}
</tbody>
</table>
</main>
<script>{SCRIPT}</script>
</body>
</html>
"""


_WIDTHS = "".join(f".w{n}{{width:{n}%}}" for n in range(101))  # the bars' lengths, whole percent

CSS = (
    """
:root{--fg:#1b1b1b;--muted:#5f6368;--line:#d5d8dc;--head:#eef0f2;--idle:#1e7b34;--busy:#a85200;
--swapped:#7b1fa2;--drain:#1d4ed8;--failing:#ad1457;--down:#b3261e}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
background:#fff;margin:0 1rem 1rem}
h1{font-size:1.25rem;margin:.75rem 0 .25rem}
header p{margin:.25rem 0}
.muted{color:var(--muted)}
#updated.stale{color:var(--down);font-weight:600}
#pool-load{display:flex;align-items:center;gap:.5rem;flex-wrap:wrap;margin:.25rem 0}
#pool-load .label{font-weight:600}
table{border-collapse:collapse;width:100%;margin-top:.5rem}
th,td{padding:.2rem .5rem;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap;vertical-align:middle}
thead th{position:sticky;top:0;background:var(--head);font-weight:600;cursor:help}
tbody th{font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
.fill-text{font-variant-numeric:tabular-nums}
.state{display:inline-block;min-width:4.5em;text-align:center;border-radius:3px;color:#fff;font-weight:600;
padding:0 .4em}
.s-idle{background:var(--idle)}.s-busy{background:var(--busy)}.s-swapped{background:var(--swapped)}
.s-drain{background:var(--drain)}.s-failing{background:var(--failing)}.s-down{background:var(--down)}
tr.st-busy{background:#fff4e5}tr.st-swapped{background:#f6ecf9}tr.st-drain{background:#eaf0fd}
tr.st-failing{background:#fce4ec}tr.st-down{background:#fdecea}tr.st-down td{color:var(--muted)}
.bar{display:inline-flex;width:8em;height:.8em;vertical-align:middle;background:#e3e6e9}
.bar span{flex:none}
.bar .used{background:var(--idle)}.bar .used.f-mid{background:#c77700}
.bar .used.f-high{background:var(--down)}.bar .pend{background:#8fb3f0}
svg.spark{width:120px;height:20px;vertical-align:middle;background:#eef0f2}
svg.pool-spark{width:240px;height:40px}
.spark path{fill:#5f7fa8}
td.c-reason{white-space:normal;color:var(--muted);min-width:12em}
"""
    + _WIDTHS
    + "\n"
)

SCRIPT = """
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var DASH = "\\u2014";
  var STATES = {Idle: "idle", Busy: "busy", Swapped: "swapped", Drain: "drain", Failing: "failing", Down: "down"};
  var ORDER = ["Idle", "Busy", "Swapped", "Drain", "Failing", "Down"];
  var COLUMNS = ["c-host", "c-state", "c-fill", "c-rating num", "c-handed num", "c-pending num",
                 "c-age num", "c-resp num", "c-hist", "c-eject num", "c-reason"];
  var body = document.body;
  var period = Math.min(10, Math.max(1, Number(body.getAttribute("data-refresh")) || 2)) * 1000;
  var tbody = document.getElementById("servers");
  var updated = document.getElementById("updated");
  var history = null, historyAt = 0, failingSince = null;

  // --- figures as words: statuspage.py's functions of the same names ---
  function number(v) {
    if (v === null || v === undefined) return DASH;
    return v.toFixed(1).replace(/\\.0$/, "");
  }
  function secondsText(ms) { return ms === null || ms === undefined ? DASH : number(ms / 1000) + " s"; }
  function msText(ms) { return ms === null || ms === undefined ? DASH : ms.toFixed(0) + " ms"; }
  function serverName(s) {
    if (s.port === null || s.port === undefined || s.port === 377) return s.host;
    return (s.host.indexOf(":") >= 0 ? "[" + s.host + "]" : s.host) + ":" + s.port;
  }
  function fillText(s) {
    return s.capacity === null || s.capacity === undefined ? DASH : number(s.sessions) + " / " + number(s.capacity);
  }
  function barWidths(s) {
    if (!s.capacity || s.capacity <= 0) return [0, 0];
    var used = Math.min(100, Math.floor(100 * (s.sessions || 0) / s.capacity + 0.5));
    var pending = Math.min(100 - used, Math.floor(100 * (s.pending || 0) / s.capacity + 0.5));
    return [used, pending];
  }
  function fillClass(s) {
    var w = barWidths(s), total = w[0] + w[1];
    return total >= 90 ? "f-high" : total >= 70 ? "f-mid" : "f-low";
  }
  function reasonText(s) { return s.state === "Idle" ? "" : (s.reason || ""); }
  function stateOf(s) { return STATES.hasOwnProperty(s.state) ? s.state : "Down"; }
  function sparkPath(values) {  // statuspage.spark_path; 8: SPARK_FLOOR
    var parts = [], drawing = false, y = null, n = 0;
    for (var x = 0; x <= values.length; x++) {
      var v = x < values.length ? values[x] : null;
      if (v === null || v === undefined) {
        if (drawing) parts.push("V" + y + "h" + n, "V100Z");
        drawing = false;
        continue;
      }
      var h = 100 - Math.max(8, Math.min(v, 100));
      if (!drawing) {
        parts.push("M" + x + " 100");
        drawing = true;
        y = h;
        n = 1;
      } else if (h === y) {
        n++;
      } else {
        parts.push("V" + y + "h" + n);
        y = h;
        n = 1;
      }
    }
    return parts.join("");
  }
  function sparkTitle(values) {
    var known = values.filter(function (v) { return v !== null && v !== undefined; });
    if (!known.length) return "no figures in the last hour";
    return "last hour: now " + known[known.length - 1] + " %, peak " + Math.max.apply(null, known) +
      " %, low " + Math.min.apply(null, known) + " %";
  }
  function poolTotals(servers) {
    var sessions = 0, capacity = 0;
    servers.forEach(function (s) {
      if (s.capacity !== null && s.capacity !== undefined && s.sessions !== null && s.sessions !== undefined) {
        sessions += s.sessions; capacity += s.capacity;
      }
    });
    return [sessions, capacity];
  }
  function summaryText(pool) {
    var servers = pool.servers || [];
    if (!servers.length) {
      return "SERVERS is empty: every login is answered 503 and the thin clients probe the pool themselves.";
    }
    var counts = {};
    servers.forEach(function (s) { var st = stateOf(s); counts[st] = (counts[st] || 0) + 1; });
    var states = ORDER.filter(function (st) { return counts[st]; })
      .map(function (st) { return counts[st] + " " + st; }).join(", ");
    var age = pool.last_poll_age_ms;
    var poll = age === null || age === undefined ? "no poll has finished yet"
      : "last poll " + secondsText(age) + " ago";
    return servers.length + " servers: " + states + "; " + poll + ".";
  }
  function poolLoadText(servers) {
    var t = poolTotals(servers);
    if (t[1] <= 0) return "no figures (" + DASH + ")";
    return number(t[0]) + " / " + number(t[1]) + " sessions (" + (100 * t[0] / t[1]).toFixed(0) + " %)";
  }

  // --- the DOM: text and attributes only ---
  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
  function setAttr(node, name, value) {
    value = String(value);
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }
  function svgNode(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    return node;
  }
  function makeSpark(cls, points) {
    var svg = svgNode("svg", {"class": cls, viewBox: "0 0 " + points + " 100", preserveAspectRatio: "none",
                              role: "img"});
    svg.appendChild(svgNode("title", {}));
    svg.appendChild(svgNode("path", {d: ""}));
    return svg;
  }
  function drawSpark(svg, values) {
    setAttr(svg, "viewBox", "0 0 " + values.length + " 100");
    setAttr(svg.querySelector("path"), "d", sparkPath(values));
    setText(svg.querySelector("title"), sparkTitle(values));
  }
  function makeRow() {
    var tr = document.createElement("tr");
    COLUMNS.forEach(function (cls, i) {
      var cell = document.createElement(i === 0 ? "th" : "td");
      cell.className = cls;
      if (i === 0) cell.setAttribute("scope", "row");
      tr.appendChild(cell);
    });
    var cells = tr.children;
    var badge = document.createElement("span");
    cells[1].appendChild(badge);
    var bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    bar.appendChild(document.createElement("span"));
    bar.appendChild(document.createElement("span"));
    var text = document.createElement("span");
    text.className = "fill-text";
    cells[2].appendChild(bar);
    cells[2].appendChild(document.createTextNode(" "));
    cells[2].appendChild(text);
    cells[8].appendChild(makeSpark("spark", history ? history.points : 120));
    return tr;
  }
  function fillRow(tr, s) {
    var state = stateOf(s), css = STATES[state], cells = tr.children;
    setAttr(tr, "class", "st-" + css);
    setText(cells[0], serverName(s));
    var badge = cells[1].firstChild;
    setAttr(badge, "class", "state s-" + css);
    setText(badge, state);
    var parts = cells[2].firstChild.children, w = barWidths(s);  // sized by class: no style attribute
    setAttr(parts[0], "class", "used " + fillClass(s) + " w" + w[0]);
    setAttr(parts[1], "class", "pend w" + w[1]);
    setText(cells[2].querySelector(".fill-text"), fillText(s));
    setText(cells[3], number(s.rating));
    setText(cells[4], String(s.handed_out_5min || 0));
    setText(cells[5], String(s.pending || 0));
    setText(cells[6], secondsText(s.sample_age_ms));
    setText(cells[7], msText(s.response_ms));
    setText(cells[9], String(s.ejections_1h || 0));
    setText(cells[10], reasonText(s));
  }
  function emptyRow() {
    var tr = document.createElement("tr"), td = document.createElement("td");
    tr.className = "empty";
    td.colSpan = COLUMNS.length;
    td.textContent = "No servers: SERVERS is empty.";
    tr.appendChild(td);
    return tr;
  }
  function sameRows(servers) {
    var rows = tbody.rows;
    if (rows.length !== servers.length) return false;
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].cells[0].textContent !== serverName(servers[i])) return false;
    }
    return servers.length > 0;
  }
  function drawHistory() {
    if (!history) return;
    var byKey = {};
    history.servers.forEach(function (h) { byKey[serverName(h)] = h.fullness; });
    var empty = new Array(history.points).fill(null);
    Array.prototype.forEach.call(tbody.rows, function (tr) {
      var svg = tr.querySelector(".c-hist svg");
      if (svg) drawSpark(svg, byKey[tr.cells[0].textContent] || empty);
    });
    drawSpark(document.querySelector("#pool-load svg"), history.pool);
  }
  function show(pool) {
    var servers = pool.servers || [], rebuilt = false;
    if (!sameRows(servers)) {
      var fresh = document.createDocumentFragment();
      servers.forEach(function () { fresh.appendChild(makeRow()); });
      if (!servers.length) fresh.appendChild(emptyRow());
      tbody.replaceChildren(fresh);
      rebuilt = true;
    }
    servers.forEach(function (s, i) { fillRow(tbody.rows[i], s); });
    setText(document.getElementById("summary"), summaryText(pool));
    setText(document.getElementById("pool-now"), poolLoadText(servers));
    document.title = "ltsp-loadbalancer: " + servers.length + " servers";
    return rebuilt;
  }
  function getJSON(url) {
    return fetch(url, {cache: "no-store", credentials: "same-origin"}).then(function (response) {
      if (!response.ok) throw new Error(url + ": HTTP " + response.status);
      return response.json();
    });
  }
  function tick() {
    var started = performance.now();
    getJSON("v1/pool").then(function (pool) {
      var rebuilt = show(pool);
      body.setAttribute("data-refresh-ms", (performance.now() - started).toFixed(1));
      var step = history ? history.step_seconds * 1000 : 30000;
      failingSince = null;
      updated.className = "muted";
      setText(updated, "Figures as of " + new Date().toLocaleTimeString() + "; updated every " + period / 1000 + " s.");
      body.setAttribute("data-updates", String(Number(body.getAttribute("data-updates") || 0) + 1));
      if (rebuilt || Date.now() - historyAt >= step) {
        return getJSON("v1/history").then(function (h) { history = h; historyAt = Date.now(); drawHistory(); });
      }
    }).catch(function (error) {
      if (failingSince === null) failingSince = new Date();
      updated.className = "stale";
      setText(updated, "The balancer has not answered since " + failingSince.toLocaleTimeString() +
        " (" + error.message + "): the figures below are older.");
    }).then(function () { setTimeout(tick, period); });
  }
  historyAt = Date.now();  // the server drew the sparklines with the page
  // The moment the server's table is on screen (benchmarks/status_page.py reads it).
  requestAnimationFrame(function () {
    setTimeout(function () { body.setAttribute("data-drawn-ms", performance.now().toFixed(0)); }, 0);
  });
  setTimeout(tick, period);
})();
"""


def _csp_hash(text):
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


# Exactly the two inline blocks above may run or apply; everything else is refused,
# and the script may fetch only this balancer's own JSON.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src {_csp_hash(SCRIPT)}; "
    f"style-src {_csp_hash(CSS)}; "
    "connect-src 'self'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
