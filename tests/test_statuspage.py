"""The status page (GET /) and its history, read as an admin reads them: from a real balancer.

The balancer runs as a real process polling real daemons (tests/sites.py's
RealPool: one ready, one drained, one with WEIGHT = 200, one address where
nothing listens). The pure parts (rendering a crafted pool, the history
ring) are tested without a network.
"""

from __future__ import annotations

import base64
import hashlib
import html
import html.parser
import json
import re
import tracemalloc
from collections import namedtuple

import pytest
from ltsp_loadbalancer import statuspage
from ltsp_loadbalancer.history import NO_VALUE, POINTS, History, fullness_percent
from sites import HOSTILE, crafted_pool

# --- reading the page as HTML --------------------------------------------------------------------------


class PageParser(html.parser.HTMLParser):
    """The rows of the servers table as dicts (cell class -> text; 'class', 'bar', 'state_class'),
    every tag seen, and the contents of <script> and <style>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.tags, self.scripts, self.styles = [], [], [], []
        self._in_body_rows = False
        self._row = self._cell = self._raw = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tbody" and attrs.get("id") == "servers":
            self._in_body_rows = True
        elif tag == "tr" and self._in_body_rows:
            self._row = {"class": attrs.get("class"), "bar": {}}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = (attrs.get("class") or "").split()[0]
            self._row[self._cell] = ""
        elif tag == "span" and self._row is not None and "state" in (attrs.get("class") or "").split():
            self._row["state_class"] = attrs["class"]
        elif tag == "span" and self._row is not None and (attrs.get("class") or "").split()[:1] in (["used"], ["pend"]):
            # A bar's part: its classes, and its length from the w<percent> class.
            classes = attrs["class"].split()
            width = next(int(c[1:]) for c in classes if re.fullmatch(r"w\d+", c))
            self._row["bar"][classes[0]] = (width, classes)
        elif tag in ("script", "style"):
            self._raw = (tag, [])

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body_rows = False
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag in ("script", "style") and self._raw is not None:
            (self.scripts if tag == "script" else self.styles).append("".join(self._raw[1]))
            self._raw = None

    def handle_data(self, data):
        if self._raw is not None:
            self._raw[1].append(data)
        elif self._row is not None and self._cell is not None and not self._in_svg_title():
            self._row[self._cell] += data

    def _in_svg_title(self):
        return bool(self.tags) and self.tags[-1][0] == "title" and self._cell == "c-hist"


def parse_page(text):
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser


def page_rows(pool):
    answer = pool.get("/")
    assert answer.status == 200
    return {row["c-host"].strip(): row for row in parse_page(answer.body.decode("utf-8")).rows}


READY_STATES = ("Idle", "Busy")  # a ready server on a loaded test machine may have a rating of 0


# --- the page of a real balancer -----------------------------------------------------------------------


def test_one_row_per_server_with_its_state_as_a_word_and_a_colour(shared_pool):
    pool = shared_pool.wait_for_pool(lambda p: p["polls"] >= 1)
    rows = page_rows(shared_pool)
    assert list(rows) == [shared_pool.names[role] for role in ("ready", "drain", "heavy", "down")]
    expected = {"ready": READY_STATES, "drain": ("Drain",), "heavy": READY_STATES, "down": ("Down",)}
    for role, states in expected.items():
        row = rows[shared_pool.names[role]]
        state = row["c-state"].strip()
        assert state in states, (role, row)
        assert row["state_class"] == f"state s-{statuspage.STATE_CLASSES[state]}"
        assert row["class"] == f"st-{statuspage.STATE_CLASSES[state]}"
    assert "drain" in rows[shared_pool.names["drain"]]["c-reason"]
    assert "connect" in rows[shared_pool.names["down"]]["c-reason"].lower()
    assert rows[shared_pool.names["ready"]]["c-reason"] in ("", shared_pool.row(pool, "ready")["reason"])
    # Down: no figures, dashes rather than zeros.
    down = rows[shared_pool.names["down"]]
    assert (down["c-fill"].strip(), down["c-rating"], down["c-age"]) == ("\u2014",) * 3


def test_rows_carry_the_figures_of_v1_pool(shared_pool):
    for _ in range(3):
        assert shared_pool.get("/v1/hosts").status == 200
    pool = shared_pool.wait_for_pool(lambda p: sum(s["pending"] for s in p["servers"]) >= 3)
    rows = page_rows(shared_pool)
    ready, heavy = shared_pool.row(pool, "ready"), shared_pool.row(pool, "heavy")
    # WEIGHT = 200 doubles the capacity the rating is computed from.
    assert heavy["capacity"] == pytest.approx(2 * ready["capacity"], rel=0.01)
    for role in ("ready", "drain", "heavy"):
        server = shared_pool.row(pool, role)
        row = rows[shared_pool.names[role]]
        assert (
            row["c-fill"].strip()
            == f"{statuspage.number(server['sessions'])} / {statuspage.number(server['capacity'])}"
        )
        assert int(row["c-handed"]) == server["handed_out_5min"]
        assert int(row["c-pending"]) == server["pending"]
        used, pending = (row["bar"][part][0] for part in ("used", "pend"))
        assert used == pytest.approx(min(100, 100 * server["sessions"] / server["capacity"]), abs=0.5)
        assert pending == pytest.approx(100 * server["pending"] / server["capacity"], abs=0.5)
    handed = sum(int(rows[shared_pool.names[role]]["c-handed"]) for role in ("ready", "heavy"))
    assert handed >= 3
    assert int(rows[shared_pool.names["drain"]]["c-handed"]) == 0


def test_summary_counts_states_and_pool_load(shared_pool):
    pool = shared_pool.pool()
    page = shared_pool.get("/").body.decode("utf-8")
    assert "4 servers: " in page and "1 Drain" in page and "1 Down" in page
    sessions = sum(s["sessions"] for s in pool["servers"] if s["sessions"] is not None)
    capacity = sum(s["capacity"] for s in pool["servers"] if s["capacity"] is not None)
    assert f"{statuspage.number(sessions)} / {statuspage.number(capacity)} sessions" in page


def test_page_is_self_contained_and_its_policy_admits_only_its_own_code(shared_pool):
    answer = shared_pool.get("/")
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    page = parse_page(answer.body.decode("utf-8"))
    # Nothing is fetched from anywhere: no src, no stylesheet, no link but the empty data: icon.
    for tag, attrs in page.tags:
        assert "src" not in attrs, (tag, attrs)
        if "href" in attrs:
            assert (tag, attrs["href"]) == ("link", "data:,")
    assert len(page.scripts) == 1 and len(page.styles) == 1
    policy = answer.headers["Content-Security-Policy"]
    for directive, block in (("script-src", page.scripts[0]), ("style-src", page.styles[0])):
        digest = base64.b64encode(hashlib.sha256(block.encode("utf-8")).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers.get("Server") is None
    # With scripts off the page still reloads itself.
    assert ("meta", {"http-equiv": "refresh", "content": "5"}) in page.tags


def test_the_update_is_the_same_table_by_the_same_templates(shared_pool):
    """GET /status/rows, which the page's script fetches, renders the page's figures and table, nothing else."""
    shared_pool.wait_for_pool(lambda p: p["polls"] >= 2)
    answer = shared_pool.get("/status/rows")
    assert answer.status == 200 and answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["Content-Security-Policy"] == statuspage.CONTENT_SECURITY_POLICY
    update = parse_page(answer.body.decode("utf-8"))
    page = parse_page(shared_pool.get("/").body.decode("utf-8"))
    assert not update.scripts and not update.styles
    assert [row["c-host"] for row in update.rows] == [row["c-host"] for row in page.rows]
    for drawn, served in zip(update.rows, page.rows):
        for column in ("class", "c-state", "c-fill", "c-reason"):
            if served["c-state"] not in READY_STATES:  # a ready server's rating moves with the machine's load
                assert drawn[column] == served[column], column
    ids = {attrs.get("id") for _tag, attrs in update.tags} - {None}
    assert {"figures", "summary", "pool-now", "updated", "pool", "servers"} <= ids


@pytest.mark.parametrize(
    "text",
    ["plain", "app1:377", "<script>", '"quoted"', "it's", "a & b", "\u00e9t\u00e9 <b>", "\u2014", ""],
)
def test_the_templates_escape_as_tornado_does(text):
    assert statuspage.escape_html(text.encode("utf-8")) == html.escape(text).encode("utf-8")
    assert html.unescape(statuspage.escape_html(text.encode("utf-8")).decode("utf-8")) == text


def test_page_is_read_only(shared_pool):
    page = parse_page(shared_pool.get("/").body.decode("utf-8"))
    assert not {tag for tag, _ in page.tags} & {"form", "button", "input", "select", "textarea", "a"}
    for path in ("/", "/v1/history", "/metrics"):
        assert shared_pool.get(path, data=b"x=1").status == 405


def test_v1_history_has_a_bounded_series_per_server(shared_pool):
    shared_pool.wait_for_pool(lambda p: p["polls"] >= 2)
    answer = shared_pool.get("/v1/history")
    assert answer.headers["Content-Type"] == "application/json"
    history = json.loads(answer.body)
    assert (history["step_seconds"], history["points"]) == (30.0, POINTS)
    series = {f"{row['host']}:{row['port']}": row["fullness"] for row in history["servers"]}
    assert list(series) == [shared_pool.names[role] for role in ("ready", "drain", "heavy", "down")]
    assert all(len(values) == POINTS for values in series.values())
    for role in ("ready", "drain", "heavy"):
        assert series[shared_pool.names[role]][-1] is not None, role
    assert set(series[shared_pool.names["down"]]) == {None}
    assert history["pool"][-1] is not None and len(history["pool"]) == POINTS
    assert 0 <= history["newest_age_seconds"] <= 30


def test_a_drain_by_sighup_shows_on_the_next_page(real_pool):
    before = page_rows(real_pool)[real_pool.names["ready"]]["c-state"]
    assert before in READY_STATES
    real_pool.set_state("ready", "drain")
    real_pool.wait_for_pool(lambda p: real_pool.row(p, "ready")["state"] == "Drain")
    row = page_rows(real_pool)[real_pool.names["ready"]]
    assert (row["c-state"], row["class"]) == ("Drain", "st-drain")
    assert "drain" in row["c-reason"]


# --- rendering, pure: what no config can produce -------------------------------------------------------


def test_a_hostile_host_name_stays_text():
    series = {(HOSTILE, 377): [5] * POINTS}
    text = statuspage.render_page(crafted_pool(), series, generated_at='"><b>')
    page = parse_page(text)
    assert len(page.scripts) == 1 and page.scripts[0] == statuspage.SCRIPT
    assert not {tag for tag, _ in page.tags} & {"img", "b"}
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    (row,) = page.rows
    assert row["c-host"] == HOSTILE
    assert row["c-reason"] == '"><img src=x onerror=alert(1)>'


def test_an_unknown_state_shows_as_down_and_figures_as_words():
    text = statuspage.render_page(crafted_pool(host="app1", state='"><i>', reason=None, port=4000))
    (row,) = parse_page(text).rows
    assert (row["c-host"], row["c-state"], row["class"]) == ("app1:4000", "Down", "st-down")
    server = crafted_pool(sessions=3, capacity=16.303, pending=2, rating=11.24, sample_age_ms=1234, response_ms=3.6)
    (row,) = parse_page(statuspage.render_page(server)).rows
    assert row["c-fill"].strip() == "3 / 16.3"
    assert (row["c-rating"], row["c-age"], row["c-resp"]) == ("11.2", "1.2 s", "4 ms")
    assert row["bar"] == {"used": (18, ["used", "f-low", "w18"]), "pend": (12, ["pend", "w12"])}
    # Nearly full with the pending logins counted: the colour (and the figures beside it) say so.
    server = crafted_pool(sessions=14, capacity=16, pending=1, state="Busy")
    (row,) = parse_page(statuspage.render_page(server)).rows
    assert row["bar"] == {"used": (88, ["used", "f-high", "w88"]), "pend": (6, ["pend", "w6"])}


def test_a_failing_server_shows_its_reason_and_its_ejections_of_the_last_hour():
    reason = "ejected for 52 s more: 2 clients reported their login there failed within 60 s"
    server = crafted_pool(host="app2", state="Failing", reason=reason, ejections_1h=3, sessions=0, capacity=24)
    text = statuspage.render_page(server)
    (row,) = parse_page(text).rows
    assert (row["c-state"], row["class"], row["state_class"]) == ("Failing", "st-failing", "state s-failing")
    assert (row["c-eject"], row["c-reason"]) == ("3", reason)
    assert "1 servers: 1 Failing;" in text
    (row,) = parse_page(statuspage.render_page(crafted_pool(state="Idle", reason="rating 20"))).rows
    assert (row["c-eject"], row["c-reason"]) == ("0", "")  # a row from an older balancer: no ejections field


def test_an_empty_pool_says_so():
    text = statuspage.render_page({"servers": [], "poll_seconds": 2.0, "last_poll_age_ms": None, "polls": 0})
    assert "SERVERS is empty" in text and "No servers" in text


@pytest.mark.parametrize(
    ("age_ms", "stale_after_ms", "stopped"),
    [(None, 750, False), (100, 750, False), (750, 750, False), (751, 750, True), (9000, None, False)],
)
def test_stale_figures_say_polling_has_stopped_above_everything(age_ms, stale_after_ms, stopped):
    pool = {**crafted_pool(), "last_poll_age_ms": age_ms, "stale_after_ms": stale_after_ms}
    text = statuspage.render_page(pool)
    assert ('id="polling-stopped"' in text) is stopped
    assert ("Polling has stopped: the latest poll finished" in text) is stopped
    if stopped:
        assert "Logins are answered 503" in text and text.index("polling-stopped") < text.index('id="summary"')


def test_the_script_sets_text_never_markup():
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "Function("):
        assert sink not in statuspage.SCRIPT, sink


def test_sparkline_paths():
    # One step a point, filled down to the axis; a gap starts a new shape; 0 % still shows a sliver.
    assert statuspage.spark_path([None, 0, 50, None, 100, None]) == "M1 100V92h1V50h1V100ZM4 100V0h1V100Z"
    assert statuspage.spark_path([None, None]) == ""
    assert statuspage.spark_path([30, 30, 31, 2, 5]) == "M0 100V70h2V69h1V92h2V100Z"  # equal heights merged
    assert statuspage.spark_path([250]) == "M0 100V0h1V100Z"  # over 100 % is drawn at the top
    assert statuspage.spark_path(bytes([255, 40])) == statuspage.spark_path([None, 40])  # history.py's bytes
    assert statuspage.spark_title([None, 10, 80, 40]) == "last hour: now 40 %, peak 80 %, low 10 %"
    assert statuspage.spark_title([None]) == "no figures in the last hour"


# --- the history ring, pure ----------------------------------------------------------------------------

Entry = namedtuple("Entry", "host port")
Stats = namedtuple("Stats", "sessions capacity")


class FakeServer:
    def __init__(self, host, port=377, stats=None):
        self.entry, self.stats = Entry(host, port), stats


class FakePool:
    def __init__(self, servers):
        self.servers = servers


def series_of(history, host, port):
    """One server's values oldest first, as /v1/history gives them."""
    return next(row["fullness"] for row in history.view(0)["servers"] if (row["host"], row["port"]) == (host, port))


def test_fullness_percent():
    assert fullness_percent(4, 16) == 25
    assert fullness_percent(None, 16) is None and fullness_percent(4, None) is None and fullness_percent(4, 0) is None
    assert fullness_percent(1000, 1) == 254


def test_history_keeps_the_peak_of_each_slot_and_gaps_when_down():
    history = History(step_seconds=30, points=4)
    server = FakeServer("a", stats=Stats(2, 10))
    pool = FakePool([server])
    history.record(pool, 0)
    server.stats = Stats(5, 10)
    history.record(pool, 10)  # same slot: the peak stays
    server.stats = Stats(1, 10)
    history.record(pool, 20)
    server.stats = None  # Down for the whole next slot
    history.record(pool, 35)
    server.stats = Stats(3, 10)
    history.record(pool, 65)
    assert series_of(history, "a", 377) == [None, 50, None, 30]
    assert history.view(70)["pool"] == [None, 50, None, 30]
    # A stall of two slots clears them; four slots or more clear everything.
    history.record(pool, 125)
    assert series_of(history, "a", 377) == [None, 30, None, 30]
    history.record(pool, 1000)
    assert series_of(history, "a", 377) == [None, None, None, 30]
    view = history.view(1005)
    assert view["newest_age_seconds"] == 15 and view["servers"] == [
        {"host": "a", "port": 377, "fullness": [None] * 3 + [30]}
    ]


def test_history_follows_a_reload():
    history = History(step_seconds=30, points=3)
    kept, dropped = FakeServer("kept", stats=Stats(1, 10)), FakeServer("dropped", stats=Stats(9, 10))
    history.record(FakePool([kept, dropped]), 0)
    added = FakeServer("added", 4000, stats=Stats(5, 10))
    history.record(FakePool([kept, added]), 30)
    assert list(history.series) == [("kept", 377), ("added", 4000)]
    assert series_of(history, "kept", 377) == [None, 10, 10]
    assert series_of(history, "added", 4000) == [None, None, 50]
    # The pool's load counts the servers of the moment: (1 + 9) / 20 then (1 + 5) / 20.
    assert history.view(30)["pool"] == [None, 50, 30]


def test_history_of_1000_servers_stays_small():
    servers = [FakeServer(f"10.0.{i // 250}.{i % 250}", stats=Stats(i % 40, 40)) for i in range(1000)]
    pool = FakePool(servers)
    tracemalloc.start()
    try:
        history = History()
        for poll in range(150):  # 150 polls 29 s apart: more than an hour, every slot used, some twice
            history.record(pool, poll * 29.0)
        size, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert all(len(ring) == POINTS and NO_VALUE not in ring for ring in history.series.values())
    assert size < 512 * 1024, f"{size} bytes for 1,000 servers"
