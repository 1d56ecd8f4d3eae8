"""ltsp-loadbalancer as a real process polling real daemons on loopback, and get_hosts asking it.

Daemons: ltsp-server-advertise on 127.0.9.x (one drained, one WEIGHT 200, one
address where nothing listens). The balancer on 127.0.0.1, port 0. Every
exchange is over real sockets; nothing is patched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from services import Balancer, Daemon
from sites import write_conf as write

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def site(conf_dir, procs):
    """Three live daemons (app1 ready, app2 drained, app3 WEIGHT 200) and app4 where nothing listens."""
    tmp_path = conf_dir
    confs = {
        "127.0.9.1": "STATE = ready\n",
        "127.0.9.2": "STATE = drain\n",
        "127.0.9.3": "WEIGHT = 200\n",
    }
    daemons = {}
    for host, text in confs.items():
        conf = write(tmp_path / f"{host}.conf", text)
        daemons[host] = procs(Daemon(conf, listen=(f"{host}:3377",)).start())
    servers = " ".join(f"127.0.9.{i}:3377" for i in (1, 2, 3, 4))
    conf = write(tmp_path / "balancer.conf", "POLL_SECONDS = 0.3\nPOLL_TIMEOUT_MS = 250\n")
    balancer = procs(Balancer(conf, servers=servers).start())
    balancer.wait_polls(1)
    return balancer, daemons, tmp_path


def test_every_login_gets_one_line_of_usable_servers_only(site):
    balancer, _daemons, _tmp = site
    firsts = Counter()
    for _ in range(30):
        status, body = balancer.request("GET", "/v1/hosts")
        assert status == 200 and body.endswith("\n") and body.count("\n") == 1
        hosts = body.split()
        assert sorted(hosts) == ["127.0.9.1", "127.0.9.3"]  # drained and down never named
        firsts[hosts[0]] += 1
    # The one twice the size gets at least its share (on a loaded test machine
    # app1 may even be full: the real load average counts).
    assert firsts["127.0.9.3"] >= 15, firsts


def test_the_pool_view_shows_states_and_the_logins_handed_out(site):
    import json

    balancer, _daemons, _tmp = site
    balancer.request("GET", "/v1/hosts")
    balancer.wait_polls(1)  # the views are built once per poll: the login shows from the next
    status, body = balancer.request("GET", "/v1/pool")
    assert status == 200
    rows = {row["host"]: row for row in json.loads(body)["servers"]}
    # app3 is Idle, or Busy when this machine's real load fills it: either way usable.
    assert [rows[f"127.0.9.{i}"]["state"] for i in (2, 4)] == ["Drain", "Down"]
    assert rows["127.0.9.3"]["state"] in ("Idle", "Busy") and rows["127.0.9.3"]["usable"]
    assert sum(row["handed_out_5min"] for row in rows.values()) == 1
    assert "Connection refused" in rows["127.0.9.4"]["reason"]
    assert rows["127.0.9.3"]["stats"]["weight"] == 200


def test_a_request_restricted_to_servers_it_does_not_know_contacts_nobody(site):
    balancer, _daemons, _tmp = site
    # A listener the balancer was never told about: it must never see a connection.
    with socket.socket() as trap:
        trap.bind(("127.0.9.9", 0))
        trap.listen(8)
        trap.settimeout(0)
        port = trap.getsockname()[1]
        status, body = balancer.request("GET", f"/v1/hosts?servers=127.0.9.9:{port}+evil.invalid")
        assert status == 503 and "none of the servers named" in body
        status, body = balancer.request(
            "POST",
            "/v1/hosts",
            body=f"servers=127.0.9.9:{port}+127.0.9.1:3377",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (status, body) == (200, "127.0.9.1\n")
        balancer.wait_polls(2)
        with pytest.raises(BlockingIOError):
            trap.accept()


def test_a_drain_by_sighup_stops_logins_there_after_the_next_poll(site):
    balancer, daemons, tmp_path = site
    write(tmp_path / "127.0.9.3.conf", "STATE = drain\nWEIGHT = 200\n")
    daemons["127.0.9.3"].proc.send_signal(signal.SIGHUP)
    daemons["127.0.9.3"].wait_for(r"reloaded .*STATE=drain")
    time.sleep(1.1)  # the daemon's sample is reused for SAMPLE_SECONDS
    balancer.wait_polls(2)
    for _ in range(10):
        assert balancer.request("GET", "/v1/hosts") == (200, "127.0.9.1\n")


def test_a_server_dying_between_polls_is_dropped_at_the_next_poll(site):
    balancer, daemons, _tmp = site
    daemons["127.0.9.3"].stop()
    balancer.wait_polls(2)
    for _ in range(10):
        assert balancer.request("GET", "/v1/hosts") == (200, "127.0.9.1\n")


def test_sighup_changes_servers_and_a_bad_file_keeps_the_running_config(conf_dir, procs):
    tmp_path = conf_dir
    daemon = procs(Daemon(write(tmp_path / "d.conf", ""), listen=("127.0.9.5:3377", "127.0.9.6:3377")).start(2))
    conf = write(tmp_path / "b.conf", "SERVERS = 127.0.9.5:3377\nPOLL_SECONDS = 0.3\n")
    balancer = procs(Balancer(conf).start())
    balancer.wait_polls(1)
    assert balancer.request("GET", "/v1/hosts") == (200, "127.0.9.5\n")
    write(conf, "SERVERS = 127.0.9.6:3377\nPOLL_SECONDS = 0.3\n")
    balancer.proc.send_signal(signal.SIGHUP)
    balancer.wait_for(r"reloaded .*1 servers")
    balancer.wait_polls(1)
    assert balancer.request("GET", "/v1/hosts") == (200, "127.0.9.6\n")
    write(conf, "SERVERS = 127.0.9.5:3377\nPOLL_SECONDS = often\n")
    balancer.proc.send_signal(signal.SIGHUP)
    (line,) = balancer.wait_for(r"reload refused")
    assert "b.conf:2: invalid value for POLL_SECONDS: 'often'" in line
    assert balancer.request("GET", "/v1/hosts") == (200, "127.0.9.6\n")
    assert daemon.proc.poll() is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "SERVERS = app1 app1:377\n",
            "b.conf:1: invalid value for SERVERS: 'app1 app1:377' ('app1:377' is the same server as 'app1')",
        ),
        ("SERVERS = ::1%1,127.0.0.2\n", "b.conf:1: invalid value for SERVERS"),
        ("POLL_SECONDS = 0\n", "b.conf:1: invalid value for POLL_SECONDS: '0'"),
        ("[section]\n", "b.conf:1: sections are not used in this file"),
        ("SERVER = x\n", "b.conf:1: unknown key SERVER = 'x'"),
    ],
)
def test_a_bad_config_at_start_is_one_line_and_exit_2(tmp_path, text, message):
    conf = write(tmp_path / "b.conf", text)
    out = subprocess.run(
        [sys.executable, "-m", "ltsp_loadbalancer", "--config", str(conf), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert out.returncode == 2 and len(errors) == 1, out.stderr
    assert errors[0].startswith("ltsp-loadbalancer: error: ") and message in errors[0]


def test_allow_closes_other_clients_before_reading_anything(tmp_path, procs):
    conf = write(tmp_path / "b.conf", "ALLOW = 10.0.0.0/8\nSERVERS = 127.0.9.1\n")
    balancer = procs(Balancer(conf).start())
    with pytest.raises((ConnectionError, OSError)):
        balancer.request("GET", "/v1/hosts")


def test_slow_and_oversized_clients_are_cut_off(tmp_path, procs):
    conf = write(tmp_path / "b.conf", "SERVERS = 127.0.9.1\nCLIENT_TIMEOUT_SECONDS = 0.5\nMAX_REQUEST_BYTES = 2048\n")
    balancer = procs(Balancer(conf).start())
    with socket.create_connection(balancer.address, timeout=5) as silent:
        started = time.monotonic()
        silent.sendall(b"GET /v1/ho")  # and then nothing
        assert silent.recv(100) == b""
        assert time.monotonic() - started < 3
    status, _body = balancer.request(
        "POST", "/v1/hosts", body="servers=" + "a" * 5000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status in (400, 413)
    assert balancer.proc.poll() is None


def test_max_clients_bounds_open_connections(tmp_path, procs):
    conf = write(tmp_path / "b.conf", "SERVERS = 127.0.9.1\nMAX_CLIENTS = 3\nCLIENT_TIMEOUT_SECONDS = 30\n")
    balancer = procs(Balancer(conf).start())
    held = [socket.create_connection(balancer.address, timeout=5) for _ in range(3)]
    try:
        time.sleep(0.2)
        with socket.create_connection(balancer.address, timeout=5) as extra:
            assert extra.recv(100) == b""  # closed at once
        balancer.wait_for(r"MAX_CLIENTS \(3\) connections are open")
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert balancer.request("GET", "/v1/hosts")[0] == 503  # served again once they left


# --- failed=: reports from clients, told apart by their addresses ------------------------------


def hosts_from(balancer, source, query, connection=None):
    """(status, body) of GET /v1/hosts?QUERY sent from the address SOURCE (127.0.0.x: loopback is all ours)."""
    import http.client

    host, port = balancer.address
    own = connection is None
    connection = connection or http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
    try:
        connection.request("GET", f"/v1/hosts?{query}", headers={"X-LTSP-Client": "get_hosts"})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        if own:
            connection.close()


def pool_rows(balancer):
    import json

    return {row["host"]: row for row in json.loads(balancer.request("GET", "/v1/pool")[1])["servers"]}


def test_reports_from_distinct_clients_eject_a_server_and_the_pool_says_why(site):
    balancer, _daemons, _tmp = site
    status, body = hosts_from(balancer, "127.0.0.2", "failed=127.0.9.3")
    assert status == 200 and body.split() == ["127.0.9.1", "127.0.9.3"]  # the failed host goes last
    assert pool_rows(balancer)["127.0.9.3"]["state"] in ("Idle", "Busy")
    status, body = hosts_from(balancer, "127.0.0.3", "failed=127.0.9.3:3377")
    assert (status, body) == (200, "127.0.9.1\n")
    (line,) = balancer.wait_for(r"ejected 127\.0\.9\.3")
    # Logged under its SERVERS entry's label (port 3377 is not the default).
    assert "ejected 127.0.9.3:3377 for 30 s (1st ejection in the last hour): 2 clients reported" in line
    assert "127.0.0.2" not in line and "127.0.0.3" not in line  # no client address is logged
    row = pool_rows(balancer)["127.0.9.3"]
    assert (row["state"], row["usable"], row["ejection"], row["ejections_1h"]) == ("Failing", False, "ejected", 1)
    assert row["reason"].startswith("ejected for ") and "2 clients reported their login there failed" in row["reason"]
    assert 25_000 <= row["ejected_remaining_ms"] <= 30_000
    balancer.wait_polls(1)  # a poll does not bring it back
    for _ in range(5):
        assert balancer.request("GET", "/v1/hosts") == (200, "127.0.9.1\n")
    # Never more than half the usable pool: reports against the last usable server do not take it out.
    for source in ("127.0.0.4", "127.0.0.5", "127.0.0.6"):
        assert hosts_from(balancer, source, "failed=127.0.9.1") == (200, "127.0.9.1\n")
    assert pool_rows(balancer)["127.0.9.1"]["state"] in ("Idle", "Busy")
    balancer.wait_for(r"127\.0\.9\.1:3377 not ejected: 1 of 2 usable servers are out already")
    status, text = balancer.request("GET", "/metrics")
    assert 'ltsp_server_ejections_total{server="127.0.9.3:3377"} 1.0' in text
    assert 'ltsp_server_state{server="127.0.9.3:3377",state="Failing"} 1.0' in text


def test_one_client_reporting_a_thousand_times_ejects_nothing(site):
    import http.client

    balancer, _daemons, _tmp = site
    host, port = balancer.address
    connection = http.client.HTTPConnection(host, port, timeout=5, source_address=("127.0.0.7", 0))
    try:
        for _ in range(1000):  # one keep-alive connection: one client, as fast as it can
            assert hosts_from(balancer, None, "failed=127.0.9.3", connection) == (200, "127.0.9.1 127.0.9.3\n")
    finally:
        connection.close()
    # ...and from outside SERVERS, nothing at all: the hosts are ignored, the answer as usual.
    for source in ("127.0.0.8", "127.0.0.9"):
        status, body = hosts_from(balancer, source, "failed=127.0.9.9+evil.invalid")
        assert status == 200 and sorted(body.split()) == ["127.0.9.1", "127.0.9.3"]
    rows = pool_rows(balancer)
    assert rows["127.0.9.3"]["state"] in ("Idle", "Busy") and rows["127.0.9.3"]["ejections_1h"] == 0
    assert not [line for line in balancer.lines if "eject" in line]


# --- get_hosts as the balancer's client -------------------------------------------------------


def get_hosts(env, *args, timeout=15):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LTS_CONF": "/dev/null", "LB_RETRY_SECONDS": "0", **env}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "get_hosts", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return out, (time.monotonic() - started) * 1000


def test_get_hosts_takes_the_balancers_answer_and_says_so(site):
    balancer, _daemons, _tmp = site
    host, port = balancer.address
    pool = " ".join(f"127.0.9.{i}:3377" for i in (1, 2, 3, 4))
    out, _ms = get_hosts({"LB_SERVERS": pool, "LB_BALANCER": f"127.0.0.1:1 {host}:{port}"}, "--explain")
    assert out.returncode == 0 and sorted(out.stdout.split()) == ["127.0.9.1", "127.0.9.3"]
    assert f"balancer {host}:{port} answered in" in out.stderr
    assert "probed" not in out.stderr
    status, _ms = get_hosts({"LB_SERVERS": pool, "LB_BALANCER": f"{host}:{port}"}, "--status")
    lines = status.stdout.splitlines()
    assert lines[0].split()[:2] == ["HOST", "STATE"] and len(lines) == 5
    assert {line.split()[0]: line.split()[1] for line in lines[1:]}["127.0.9.2:3377"] == "Drain"


def test_get_hosts_probes_itself_when_the_balancer_is_gone(site):
    balancer, _daemons, _tmp = site
    host, port = balancer.address
    balancer.proc.kill()
    balancer.proc.wait()
    pool = " ".join(f"127.0.9.{i}:3377" for i in (1, 2, 3, 4))
    env = {"LB_SERVERS": pool, "LB_BALANCER": f"{host}:{port}", "LB_BALANCER_TIMEOUT": "300", "LB_TIMEOUT": "1000"}
    out, elapsed_ms = get_hosts(env, "--explain")
    assert out.returncode == 0 and sorted(out.stdout.split()) == ["127.0.9.1", "127.0.9.3"]
    assert "no balancer answered: probing the pool itself" in out.stderr
    assert elapsed_ms < 300 + 1000 + 1500  # the two deadlines plus interpreter start-up


def test_a_balancer_that_never_answers_costs_at_most_its_timeout(site):
    _balancer, _daemons, _tmp = site
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)  # accepts (in the kernel) and never answers
        pool = "127.0.9.1:3377"
        env = {"LB_SERVERS": pool, "LB_BALANCER": f"127.0.0.1:{mute.getsockname()[1]}", "LB_BALANCER_TIMEOUT": "200"}
        out, _ms = get_hosts(env, "--explain")
    assert out.stdout == "127.0.9.1\n"
    assert "timed out after 200 ms while reading" in out.stderr


def test_hosts_takes_get_and_post_only(conf_dir, procs):
    conf = write(conf_dir / "b.conf", "SERVERS = 127.0.9.1\n")
    balancer = procs(Balancer(conf).start())
    assert balancer.request("PUT", "/v1/hosts", body="servers=127.0.9.1") == (405, "only GET and POST\n")
    assert balancer.request("GET", "/v1/nowhere")[0] == 404  # everything else goes to Tornado's application


# --- one meaning for every setting, whichever path answers (SPEC.md) --------------------------------


@pytest.fixture
def figures(conf_dir, procs, serve):
    """Two fake daemons with known figures (127.0.9.21: 0.5 load per CPU, .22: 2.0), a balancer polling them."""
    from fakeservers import document, send

    # Room for every login of a test (rating 200): a full server would be a last resort, and mac-hash moves off it.
    light = serve(send(document(cpu_count=8, load_1min=4.0, rating=200.0, capacity=200.0)), host="127.0.9.21")
    heavy = serve(send(document(cpu_count=8, load_1min=16.0, rating=200.0, capacity=200.0)), host="127.0.9.22")
    pool = f"{light.pool_word} {heavy.pool_word}"
    conf = write(conf_dir / "balancer.conf", "POLL_SECONDS = 0.3\nPOLL_TIMEOUT_MS = 250\n")
    balancer = procs(Balancer(conf, servers=pool).start())
    balancer.wait_polls(1)
    host, port = balancer.address
    return balancer, {"LB_SERVERS": pool, "LB_BALANCER": f"{host}:{port}"}


def test_mac_hash_stays_sticky_through_the_balancer_on_the_server_get_hosts_would_pick(figures):
    balancer, env = figures
    firsts = Counter(get_hosts({**env, "LB_ALGORITHM": "mac-hash"})[0].stdout.split()[0] for _ in range(8))
    own = get_hosts({"LB_SERVERS": env["LB_SERVERS"], "LB_ALGORITHM": "mac-hash"})[0].stdout.split()[0]
    assert firsts == {own: 8}  # 8 logins, one server, the one the client picks itself (was 4/4)
    out, _ms = get_hosts({**env, "LB_ALGORITHM": "mac-hash"}, "--explain")
    assert "applied mac-hash (keyed on the hostname), with its own limits" in out.stderr
    assert "probing the pool itself" not in out.stderr
    # A MAC sent by the client is the key: 8 logins from one MAC land on one server, another MAC's may differ.
    for mac in ("00:1a:2b:3c:4d:01", "00:1a:2b:3c:4d:02"):
        lines = {balancer.request("GET", f"/v1/hosts?algorithm=mac-hash&mac={mac}")[1] for _ in range(8)}
        assert len(lines) == 1, lines
    assert not [line for line in balancer.lines if "00:1a:2b" in line or "mac" in line.lower()]  # never logged


def test_lb_max_load_filters_through_the_balancer_and_explain_says_who_applied_it(figures):
    balancer, env = figures
    out, _ms = get_hosts({**env, "LB_MAX_LOAD": "1"}, "--explain")
    assert out.returncode == 0 and out.stdout == "127.0.9.21\n"  # the balancer's answer (was both)
    assert "applied its own least-full order, LB_MAX_LOAD 1 (its own config for the rest)" in out.stderr
    out, _ms = get_hosts({**env, "LB_MAX_LOAD": "0.0001"}, "--explain")
    assert "answered 503: no usable server (2 Busy)" in out.stderr
    assert "get_hosts applied two-choice, LB_MAX_LOAD 0.0001, LB_SKIP_SWAPPING true itself" in out.stderr
    assert "warning: no usable server (2 Busy); using the whole pool in configured order" in out.stderr
    status, body = balancer.request("GET", "/v1/hosts?max_load=0.0001")
    assert (status, body) == (503, "no usable server (2 Busy)\n")


def test_fixed_never_asks_a_balancer(serve):
    from fakeservers import answer, http

    fake = serve(answer(http(200, b"127.0.9.1\n")))
    env = {"LB_SERVERS": "127.0.9.1 127.0.9.2", "LB_BALANCER": fake.pool_word}
    out, _ms = get_hosts({**env, "LB_ALGORITHM": "fixed"}, "--explain")
    assert out.stdout == "127.0.9.1 127.0.9.2\n" and "(no balancer is asked)" in out.stderr
    assert fake.connections == 0
    assert get_hosts({**env, "LB_ALGORITHM": "random"})[0].stdout == "127.0.9.1\n"
    assert fake.connections == 1  # the fake does answer, when asked


def test_a_peek_is_not_a_login(site):

    balancer, _daemons, _tmp = site

    def handed_out():
        rows = balancer.pool_after_poll()["servers"]
        return sum(row["handed_out_5min"] + row["pending"] for row in rows)

    looks = {balancer.request("GET", "/v1/hosts?peek=1&failed=127.0.9.1") for _ in range(20)}
    assert len(looks) == 1 and looks.pop()[0] == 200
    assert handed_out() == 0
    assert balancer.request("GET", "/v1/hosts")[0] == 200
    assert handed_out() == 2  # one hand-out, pending until the figures show it


def test_settings_that_cannot_work_together_warn_at_start_and_on_reload(conf_dir, procs):
    conf = write(conf_dir / "b.conf", "POLL_SECONDS = 1\nPOLL_TIMEOUT_MS = 3000\n")
    balancer = procs(Balancer(conf).start())
    (line,) = balancer.wait_for(r"POLL_TIMEOUT_MS 3000 is above POLL_SECONDS 1")
    assert "WARNING" in line and "keep POLL_TIMEOUT_MS below" in line
    balancer.wait_for(r"SERVERS is empty: nothing to balance")
    assert balancer.request("GET", "/v1/hosts") == (
        503,
        f"SERVERS is empty: nothing to balance (set SERVERS in {conf}, or --servers)\n",
    )
    write(conf, "SERVERS = 127.0.9.1:3377\nPOLL_SECONDS = 2\nLOGIN_WINDOW_SECONDS = 1\n")
    balancer.proc.send_signal(signal.SIGHUP)
    balancer.wait_for(r"LOGIN_WINDOW_SECONDS 1 is below POLL_SECONDS 2")
    assert len([line for line in balancer.lines if "POLL_TIMEOUT_MS 3000" in line]) == 1  # fixed: not said again
