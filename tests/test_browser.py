"""The status page in a real browser: headless Chromium driven by selenium, as an admin looks at it.

A real balancer polls real daemons (tests/sites.py's RealPool:
one ready, one drained, one with WEIGHT = 200, one address where nothing
listens). The tests read what a person sees: the rows, the state words and
their colours, the widths of the bars as drawn, the page following a drain
by SIGHUP without being reloaded, and the same table with scripts off.

Chromium and chromedriver are Debian's (/usr/bin/chromium and
/usr/bin/chromedriver; ``make test`` apt-gets chromium and chromium-driver
when root). These tests skip only when they are missing and we are not
root; as root a missing browser is a failure. Screenshots are saved under
tmp_path; ``SAVE_SCREENSHOT=1`` also writes the README's,
docs/status-page.png, of a school's morning (test_the_readme_screenshot).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import tornado.httpserver
from fakeservers import stats as fake_stats
from ltsp_loadbalancer import config
from ltsp_loadbalancer.balancer import Balancer
from ltsp_loadbalancer.http import make_application
from ltsp_loadbalancer.statuspage import STATE_CLASSES, number, server_name, spark_path
from ltsp_loadbalancer.web import extra_routes
from sites import HOSTILE, crafted_pool

from get_hosts.probe import ProbeResult

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 560)
READY_STATES = ("Idle", "Busy")  # a ready server on a loaded test machine may have a rating of 0


@pytest.fixture
def browser():
    """browser(javascript=True) opens a headless Chromium; every one opened is quit after the test."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        reason = (
            f"{' and '.join(missing)} not installed (Debian packages chromium and chromium-driver; "
            "make test installs them when run as root)"
        )
        if os.geteuid() != 0:
            pytest.skip(f"{reason}, and not root")
        pytest.fail(f"{reason}; we are root, so make test should have installed them")
    from selenium import webdriver

    opened = []

    def open_browser(javascript=True):
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for argument in (
            "--headless=new",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            "--lang=en-US",
        ):
            options.add_argument(argument)
        if os.geteuid() == 0:
            options.add_argument("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(service=service, options=options)
        opened.append(driver)
        driver.set_page_load_timeout(30)
        return driver

    yield open_browser
    for driver in opened:
        driver.quit()


def wait_until(condition, timeout=15.0, what="the page"):
    """CONDITION()'s first true value, retrying through stale elements (a page that reloads itself)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
            if value:
                return value
        except (StaleElementReferenceException, NoSuchElementException):
            value = None
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never got there in {timeout:g} s (last: {value!r})")
        time.sleep(0.1)


# One snapshot of every row, taken in the page in one go: read cell by cell over WebDriver, a refresh
# landing in between could pair one refresh's state word with another's row class.
SNAPSHOT_ROWS = """
return Array.from(document.querySelectorAll("#servers tr")).map(function (tr) {
    var texts = {};
    tr.querySelectorAll("th, td").forEach(function (cell) { texts[cell.className.split(" ")[0]] = cell.innerText; });
    return {tr: tr, rowClass: tr.getAttribute("class"), texts: texts};
});
"""


def rows(driver):
    """{server name: {column: text, 'row_class': str, 'badge': element, 'row': element}} as drawn, at one moment."""
    from selenium.webdriver.common.by import By

    found = {}
    for snapshot in driver.execute_script(SNAPSHOT_ROWS):
        row = {name: text.strip() for name, text in snapshot["texts"].items()}
        row["row_class"] = snapshot["rowClass"]
        row["row"] = snapshot["tr"]
        row["badge"] = row["row"].find_element(By.CSS_SELECTOR, ".c-state .state")
        found[row["c-host"]] = row
    return found


def bar_fractions(row):
    """(used, pending) widths of a row's bar as drawn, in fractions of its whole length."""
    from selenium.webdriver.common.by import By

    track = row["row"].find_element(By.CSS_SELECTOR, ".c-fill .bar").size["width"]
    used = row["row"].find_element(By.CSS_SELECTOR, ".bar .used").size["width"]
    pending = row["row"].find_element(By.CSS_SELECTOR, ".bar .pend").size["width"]
    return used / track, pending / track, track


def console_errors(driver):
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def save_screenshot(driver, tmp_path, name="status-page.png"):
    path = tmp_path / name
    assert driver.save_screenshot(str(path))
    if os.environ.get("SAVE_SCREENSHOT") == "1" and name == "status-page.png":
        shutil.copyfile(path, ROOT / "docs" / "status-page.png")
    return path


# --- what a person sees --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_person_sees_every_server_and_the_page_follows_a_drain(real_pool, browser, tmp_path):
    names = real_pool.names
    driver = browser(javascript=True)
    driver.get(real_pool.url)
    seen = wait_until(lambda: len(rows(driver)) == 4 and rows(driver), what="four rows")
    assert list(seen) == [names[role] for role in ("ready", "drain", "heavy", "down")]
    assert seen[names["ready"]]["c-state"] in READY_STATES and seen[names["heavy"]]["c-state"] in READY_STATES
    assert (seen[names["drain"]]["c-state"], seen[names["down"]]["c-state"]) == ("Drain", "Down")
    assert "drain" in seen[names["drain"]]["c-reason"] and "onnect" in seen[names["down"]]["c-reason"]
    # A word and a colour: each state its own badge colour, white text on it.
    colours = {row["c-state"]: row["badge"].value_of_css_property("background-color") for row in seen.values()}
    assert len(set(colours.values())) == len(colours), colours
    assert {row["badge"].value_of_css_property("color") for row in seen.values()} == {"rgba(255, 255, 255, 1)"}

    # Logins handed out show up without a reload: pending counts and the light part of the bars.
    driver.execute_script("window.stillTheSamePage = 42;")
    words = f"{names['ready']}+{names['heavy']}"
    for _ in range(6):
        assert real_pool.get(f"/v1/hosts?servers={words}").status == 200
    pool = real_pool.wait_for_pool(lambda p: sum(s["pending"] for s in p["servers"]) == 6)
    wait_until(
        lambda: sum(int(rows(driver)[names[role]]["c-pending"]) for role in ("ready", "heavy")) == 6,
        what="six pending logins on the page",
    )
    seen = rows(driver)
    for role in ("ready", "heavy"):
        server = real_pool.row(pool, role)
        used, pending, track = bar_fractions(seen[names[role]])
        assert int(seen[names[role]]["c-pending"]) == server["pending"]
        assert used == pytest.approx(min(1.0, server["sessions"] / server["capacity"]), abs=1.5 / track)
        assert pending == pytest.approx(server["pending"] / server["capacity"], abs=1.5 / track)
        assert seen[names[role]]["c-fill"] == f"{number(server['sessions'])} / {number(server['capacity'])}"
    # Down: an empty bar and a dash.
    used, pending, _track = bar_fractions(seen[names["down"]])
    assert (used, pending, seen[names["down"]]["c-fill"]) == (0, 0, "\u2014")
    save_screenshot(driver, tmp_path, "status-page-live.png")

    # The admin drains the ready server: the row follows, the page is not reloaded.
    real_pool.set_state("ready", "drain")
    wait_until(lambda: rows(driver)[names["ready"]]["c-state"] == "Drain", what="the drained row")
    assert "2 Drain" in driver.find_element("id", "summary").text
    assert driver.execute_script("return window.stillTheSamePage;") == 42
    assert int(driver.find_element("tag name", "body").get_attribute("data-updates")) >= 1
    save_screenshot(driver, tmp_path, "status-page-drained.png")
    assert console_errors(driver) == []  # the policy let the inline script and style run


@pytest.mark.slow
def test_with_scripts_off_the_same_table_is_there_and_reloads_itself(real_pool, browser):
    names = real_pool.names
    with_script, without = browser(javascript=True), browser(javascript=False)
    with_script.get(real_pool.url)
    without.get(real_pool.url)
    wait_until(lambda: with_script.find_element("tag name", "body").get_attribute("data-updates"), what="a refresh")
    assert without.find_element("tag name", "body").get_attribute("data-updates") is None  # no script ran
    # The parser made the <noscript> refresh a real element only where scripts are off.
    refresh = "noscript meta[http-equiv=refresh]"
    assert without.find_elements("css selector", refresh) and not with_script.find_elements("css selector", refresh)
    drawn, served = rows(with_script), rows(without)
    assert list(drawn) == list(served) == [names[role] for role in ("ready", "drain", "heavy", "down")]
    for name in served:
        for column in ("c-host", "c-fill", "c-handed", "c-pending"):
            assert served[name][column] == drawn[name][column], (name, column)
        for page in (served, drawn):
            assert page[name]["row_class"] == f"st-{STATE_CLASSES[page[name]['c-state']]}"
        if served[name]["c-state"] in READY_STATES:
            # A ready server's rating moves with the machine's load: Idle or Busy, "rating 3.2" or "rating 0...".
            assert drawn[name]["c-state"] in READY_STATES
        else:
            for column in ("c-state", "c-reason"):
                assert served[name][column] == drawn[name][column], (name, column)
    # Without scripts the page reloads itself (meta refresh): a drain shows within a few seconds.
    real_pool.set_state("heavy", "drain")
    wait_until(lambda: rows(without)[names["heavy"]]["c-state"] == "Drain", timeout=20, what="the reloaded page")


# --- hostile names, through the script's own drawing ---------------------------------------------------


class FakeBalancer:
    """What web.py and http.py read of a Balancer, serving a crafted pool that no config can produce."""

    def __init__(self, pools):
        self.pools = pools  # the documents /v1/pool answers, in turn (the last one repeats)
        self.on_poll = []
        self.config = SimpleNamespace(poll_seconds=1.0, poll_timeout_ms=1000)
        self.answers, self.handed_out, self.poll_errors, self.polls = Counter(), Counter(), Counter(), 0
        self.ejections, self.generation, self.pool = Counter(), 0, SimpleNamespace(polled_at=None, servers=[])

    def pool_rows(self, now, first, last):
        return []

    def pool_view(self, now, rows=None):
        if len(self.pools) == 1:
            return self.pools[0]
        self.polls += 1  # each document is a poll's: the views (views.py) are built again for the next one
        return self.pools.pop(0)


@pytest.fixture
def served_in_process():
    """serve(balancer) -> URL of web.py's routes and /v1/pool served by Tornado in a thread of this process."""
    stops = []

    def serve(balancer):
        ready = threading.Event()
        holder = {}

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            routes, observe = extra_routes(balancer, None)
            server = tornado.httpserver.HTTPServer(make_application(balancer, routes, observe))
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            sock.setblocking(False)
            server.add_sockets([sock])
            holder.update(loop=loop, port=sock.getsockname()[1])
            ready.set()
            loop.run_forever()
            server.stop()
            loop.run_until_complete(server.close_all_connections())
            loop.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert ready.wait(10)
        stops.append((holder["loop"], thread))
        return f"http://127.0.0.1:{holder['port']}/"

    yield serve
    for loop, thread in stops:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_hostile_names_stay_text_when_the_script_draws_them(browser, served_in_process):
    from selenium.common.exceptions import NoAlertPresentException

    second = '"><img src=x onerror=alert(2)>'
    first = crafted_pool()
    both = crafted_pool()
    ejected = {"state": "Failing", "ejections_1h": 2}  # the script's own words for a balancer's ejection
    both["servers"].append({**both["servers"][0], "host": second, "reason": HOSTILE, **ejected})
    balancer = FakeBalancer([first, both])
    url = served_in_process(balancer)
    # An hour of history with steps, a plateau, a gap and a full server, for the script to draw.
    for slot, sessions in enumerate((0, 3, 3, 7, None, 10, 10, 12, 2, 16, 20)):
        stats = None if sessions is None else SimpleNamespace(sessions=sessions, capacity=16.0)
        servers = [
            SimpleNamespace(entry=SimpleNamespace(host=host, port=377), stats=stats) for host in (HOSTILE, second)
        ]
        for callback in balancer.on_poll:
            callback(SimpleNamespace(pool=SimpleNamespace(servers=servers)), 1000.0 + 30 * slot)
    driver = browser(javascript=True)
    driver.get(url)
    # The second document has another row: the script builds the rows anew, from text.
    seen = wait_until(lambda: len(rows(driver)) == 2 and rows(driver), what="the rows the script built")
    assert list(seen) == [HOSTILE, second]
    assert seen[second]["c-reason"] == HOSTILE
    assert (seen[second]["c-state"], seen[second]["c-eject"], seen[HOSTILE]["c-eject"]) == ("Failing", "2", "0")
    assert driver.find_elements("css selector", "tr.st-failing .state.s-failing")
    assert len(driver.find_elements("tag name", "script")) == 1
    assert driver.find_elements("tag name", "img") == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (reading it is the check)
    # The script draws the history as the server does.
    with urllib.request.urlopen(url + "v1/history", timeout=10) as answer:
        history = json.load(answer)
    assert history["servers"][0]["fullness"][-11:] == [0, 19, 19, 44, None, 62, 62, 75, 12, 100, 125]
    expected = spark_path(history["servers"][0]["fullness"])
    assert expected.count("M") == 2 and "V81h2" in expected and "V0h2" in expected  # plateaus merged, gap split
    wait_until(lambda: set(sparkline_paths(driver).values()) == {expected}, what="the sparklines the script drew")
    assert console_errors(driver) == []


def test_the_page_follows_a_reload_of_servers_and_draws_the_server_s_sparklines(real_pool, browser):
    names = real_pool.names
    driver = browser(javascript=True)
    driver.get(real_pool.url)
    wait_until(lambda: len(rows(driver)) == 4, what="four rows")
    # The server's sparklines from before the reload on: the script fetches the history between two of
    # them, and a 30 s slot may start in between (the same figures, one step to the left).
    served = []

    def server_paths():
        history = json.loads(real_pool.get("/v1/history").body)
        served.append({server_name(row): spark_path(row["fullness"]) for row in history["servers"]})

    server_paths()
    # SERVERS loses the Down server (SIGHUP): the script builds the rows anew, then draws the history itself.
    real_pool.set_servers(("heavy", "ready", "drain"))
    expected = [names[role] for role in ("heavy", "ready", "drain")]
    wait_until(lambda: list(rows(driver)) == expected, what="the rows of the new SERVERS")

    def as_the_server_draws():
        server_paths()
        drawn = sparkline_paths(driver)
        if any(drawn == {name: paths.get(name) for name in drawn} for paths in served):
            return drawn
        return None

    drawn = wait_until(as_the_server_draws, what=f"sparklines drawn as the server draws them ({served[-1]})")
    assert set(drawn) == set(expected) and all(drawn.values())
    assert driver.execute_script("return document.querySelector('#pool-load path').getAttribute('d')") != ""
    assert console_errors(driver) == []


def sparkline_paths(driver):
    """{server name: its sparkline's path} as the page has it now."""
    return driver.execute_script(
        "var found = {};"
        "document.querySelectorAll('#servers tr').forEach(function (tr) {"
        "  found[tr.cells[0].textContent] = tr.querySelector('.c-hist path').getAttribute('d'); });"
        "return found;"
    )


# --- the README's screenshot -------------------------------------------------------------------------

MORNING = (  # name, WEIGHT's capacity, sessions at the end of the hour
    ("app1", 24.0, 17),
    ("app2", 48.0, 30),  # WEIGHT = 200
    ("app3", 24.0, 9),  # drained 20 minutes ago: its sessions leave as people log out
    ("app4", 24.0, 24),  # full: Busy, a last resort
    ("app5", 24.0, 0),  # its login service is broken: logins there never last (Failing)
    ("app6", 24.0, 12),  # switched off 10 minutes ago (Down)
    ("app7:3377", 24.0, 15),
    ("app8", 24.0, 14),
)


def school_morning(balancer, end):
    """Feed BALANCER (a real one) an hour of its servers' documents, as its poller would, ending at END.

    The morning fills the pool; app3 is drained at -20 min, app6 goes down at -10 min, two clients report
    their logins to app5 failed at the end (so this balancer ejects it; each got another host), and four
    more logins are handed out: six pending in all.
    """
    entries = balancer.entries
    for step in range(121):  # a poll every 30 s (one a history slot)
        minute = step / 2
        now = end - (60 - minute) * 60.0
        share = min(1.0, minute / 45.0)  # people arrive over the first 45 minutes
        results = []
        for entry, (name, capacity, sessions) in zip(entries, MORNING):
            if name == "app6" and minute >= 50:
                results.append(ProbeResult(entry, None, None, "connect failed: Connection refused"))
                continue
            count = round(sessions * share)
            state = "ready"
            if name == "app3" and minute >= 40:
                state, count = "drain", max(sessions, round(16 - (minute - 40) * 0.35))
            stats = fake_stats(
                hostname=name.split(":")[0],
                state=state,
                sessions=count,
                capacity=capacity,
                rating=0.0 if state != "ready" else max(0.0, capacity - count),
                sample_age_ms=350 + 40 * len(results),
            )
            results.append(ProbeResult(entry, stats, 2.0 + 0.7 * len(results), None))
        balancer.polled(entries, results, now)
    for peer in ("10.0.0.21", "10.0.0.37"):
        balancer.hosts(None, end, failed=["app5"], peer=peer)
    for _ in range(4):
        balancer.hosts(None, end)


@pytest.mark.slow
def test_the_readme_screenshot(browser, served_in_process, tmp_path):
    """docs/status-page.png: a real Balancer (in this process, served by web.py and http.py) after a morning."""
    settings = config.SCHEMA.override(config.SCHEMA.defaults(), "SERVERS", " ".join(m[0] for m in MORNING), "test")
    balancer = Balancer(settings, rng=random.Random(2026))
    url = served_in_process(balancer)  # its History records the polls from now on
    driver = browser(javascript=True)
    driver.set_window_size(1400, 640)
    driver.get(url)  # the browser's first page is slow to come: the figures' ages would show it
    school_morning(balancer, time.monotonic())
    driver.get(url)
    seen = wait_until(lambda: len(rows(driver)) == len(MORNING) and rows(driver), what="the morning's rows")
    states = {name: row["c-state"] for name, row in seen.items()}
    assert (states["app3"], states["app4"], states["app5"], states["app6"]) == ("Drain", "Busy", "Failing", "Down")
    assert {states[name] for name in ("app1", "app2", "app7:3377", "app8")} == {"Idle"}
    assert seen["app2"]["c-fill"] == "30 / 48" and seen["app5"]["c-eject"] == "1"
    assert sum(int(row["c-pending"]) for row in seen.values()) == 6
    assert all(sparkline_paths(driver)[name] for name in states)  # an hour of history on every row
    path = save_screenshot(driver, tmp_path)
    assert path.stat().st_size > 10_000
    assert console_errors(driver) == []
