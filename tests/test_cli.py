"""The real get_hosts command (python -m get_hosts) against fake servers on loopback.

Each test runs the command as a subprocess with its own environment and a
real lts.conf in tmp_path, the way LDM's screen script does, and reads its
stdout, stderr and exit status. Servers on 127.0.0.1, .2, .3 ... so that
pool names differ.
"""

from __future__ import annotations

import json
import os

import pytest
from fakeservers import Elapsed, document, refused_port, send, stall
from get_hosts_run import pool, run
from hypothesis import given
from hypothesis import strategies as st

from get_hosts import report
from ltsp_lbcore import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def lts_conf(tmp_path):
    path = tmp_path / "lts.conf"
    path.write_text("[Default]\nSCREEN_07 = ldm\n")
    return path


def three_servers(serve):
    """Three good servers on three loopback addresses, ratings 5, 50, 20."""
    return [
        serve(send(document(hostname=f"app{i}", rating=r)), host=f"127.0.0.{i}") for i, r in ((1, 5), (2, 50), (3, 20))
    ]


def printable_ascii(data):
    return all(32 <= b < 127 or b == 10 for b in data)


# --- the LDM and XDMCP usages --------------------------------------------------


def test_ldm_usage_splits_on_single_spaces(serve, lts_conf):
    servers = three_servers(serve)
    # LDM's screen script: LDM_SERVER=$(get_hosts); LDM then g_strsplit(" ").
    out = run(
        env={"LB_SERVERS": pool(*servers)},
        lts_conf=lts_conf,
        shell='LDM_SERVER=$("$@"); printf "%s" "$LDM_SERVER"',
    )
    assert out.returncode == 0, out.stderr
    hosts = out.stdout.decode().split(" ")
    assert sorted(hosts) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert "\t" not in out.stdout.decode() and "\n" not in out.stdout.decode()
    assert out.stderr == b""


def test_output_is_one_line_best_first(serve, lts_conf):
    servers = three_servers(serve)
    out = run(env={"LB_SERVERS": pool(*servers), "LB_ALGORITHM": "best-rated"}, lts_conf=lts_conf)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.2 127.0.0.3 127.0.0.1\n"


def test_first_for_xdmcp(serve, lts_conf):
    servers = three_servers(serve)
    out = run(
        "--first",
        env={"LB_SERVERS": pool(*servers), "LB_ALGORITHM": "best-rated"},
        lts_conf=lts_conf,
        shell='X_QUERY="$("$@")"; printf "%s" "$X_QUERY"',
    )
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.2"


def test_settings_come_from_a_real_lts_conf(serve, tmp_path):
    servers = three_servers(serve)
    conf = tmp_path / "client.conf"
    conf.write_text(f'[Default]\n  LB_SERVERS = "{pool(*servers)}"  # the pool\n  lb_algorithm = best-rated\n')
    by_flag = run("--first", "--lts-conf", str(conf))
    by_env = run("--first", lts_conf=conf)
    assert by_flag.stdout == by_env.stdout == b"127.0.0.2\n", by_flag.stderr


def test_environment_wins_over_lts_conf(serve, tmp_path):
    servers = three_servers(serve)
    conf = tmp_path / "lts.conf"
    conf.write_text(f"[Default]\nLB_SERVERS = {pool(*servers)}\nLB_ALGORITHM = best-rated\n")
    out = run(env={"LB_SERVERS": pool(servers[0])}, lts_conf=conf)
    assert out.stdout == b"127.0.0.1\n"


def test_skipped_servers_are_not_printed(serve, lts_conf):
    good = serve(send(document(rating=10)), host="127.0.0.1")
    drained = serve(send(document(state="drain")), host="127.0.0.2")
    swapping = serve(send(document(swapping=True)), host="127.0.0.3")
    loaded = serve(send(document(load_1min=40.0, cpu_count=8)), host="127.0.0.4")
    full = serve(send(document(rating=0)), host="127.0.0.5")
    everything = pool(good, drained, swapping, loaded, f"127.0.0.6:{refused_port('127.0.0.6')}", full)
    out = run(env={"LB_SERVERS": everything, "LB_MAX_LOAD": "1.5"}, lts_conf=lts_conf)
    assert out.returncode == 0
    # the full server (rating 0) is a last resort, after every Idle one
    assert out.stdout == b"127.0.0.1 127.0.0.5\n"
    # without LB_MAX_LOAD the loaded server (5 per CPU) is usable
    out = run(env={"LB_SERVERS": everything}, lts_conf=lts_conf)
    hosts = out.stdout.split()
    assert sorted(hosts[:2]) == [b"127.0.0.1", b"127.0.0.4"] and hosts[2:] == [b"127.0.0.5"]


def test_a_stalled_server_costs_the_grace_not_the_deadline(serve, lts_conf):
    servers = three_servers(serve)
    stalled = serve(stall, host="127.0.0.4")
    with Elapsed() as t:
        out = run(env={"LB_SERVERS": pool(*servers, stalled), "LB_TIMEOUT": "5000"}, lts_conf=lts_conf)
    assert out.returncode == 0
    assert sorted(out.stdout.split()) == [b"127.0.0.1", b"127.0.0.2", b"127.0.0.3"]
    assert t.seconds < 2.0  # interpreter start-up + grace; the deadline is 5 s


# --- --status, --json, --explain ----------------------------------------------


def test_status_is_an_aligned_table_of_the_pool(serve, lts_conf):
    servers = three_servers(serve)
    dead = f"127.0.0.9:{refused_port('127.0.0.9')}"
    out = run("--status", env={"LB_SERVERS": pool(*servers, dead), "LB_ALGORITHM": "best-rated"}, lts_conf=lts_conf)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0].split() == ["HOST", "STATE", "RATING", "SESSIONS", "LOAD/CPU", "RESPONSE-MS", "REASON"]
    # Not port 377: each row says its port (the host line never does).
    ports = [servers[1].port, servers[2].port, servers[0].port, int(dead.split(":")[1])]
    expected = [f"127.0.0.{i}:{port}" for i, port in zip((2, 3, 1, 9), ports)]
    assert [line.split()[0] for line in lines[1:]] == expected
    assert [line.split()[1] for line in lines[1:]] == ["Idle", "Idle", "Idle", "Down"]
    assert lines[1].split()[2:5] == ["50.0", "4", "0.25"]
    assert "refused" in lines[4]
    # Aligned: each column starts at the same offset on every line.
    reason_at = lines[0].index("REASON")
    assert all(line[reason_at - 2 : reason_at] == "  " for line in lines[1:])
    assert len({line.index(line.split()[1]) for line in lines}) == 1


def test_status_tells_two_daemons_on_one_host_apart(serve, lts_conf):
    # Before: two rows "127.0.0.1", one Idle and one Drain, and no way to tell which daemon was which.
    ready = serve(send(document(rating=10)), host="127.0.0.1")
    drained = serve(send(document(state="drain")), host="127.0.0.1")
    out = run("--status", env={"LB_SERVERS": pool(ready, drained)}, lts_conf=lts_conf)
    assert out.returncode == 0, out.stderr
    rows = [line.split()[:2] for line in out.stdout.decode().splitlines()[1:]]
    assert rows == [[f"127.0.0.1:{ready.port}", "Idle"], [f"127.0.0.1:{drained.port}", "Drain"]]
    line = run(env={"LB_SERVERS": pool(ready, drained)}, lts_conf=lts_conf)
    assert line.stdout == b"127.0.0.1\n"  # LDM's line: names only, once each


def test_json_has_the_same_facts(serve, lts_conf):
    servers = three_servers(serve)
    drained = serve(send(document(state="maint")), host="127.0.0.4")
    out = run("--json", env={"LB_SERVERS": pool(*servers, drained), "LB_ALGORITHM": "best-rated"}, lts_conf=lts_conf)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["algorithm"] == "best-rated"
    assert doc["hosts"] == ["127.0.0.2", "127.0.0.3", "127.0.0.1"]
    assert doc["fallback"] is None
    by_host = {s["host"]: s for s in doc["servers"]}
    assert len(doc["servers"]) == 4
    assert by_host["127.0.0.2"]["rank"] == 1 and by_host["127.0.0.2"]["rating"] == 50
    assert by_host["127.0.0.2"]["capacity"] is None  # the fake server advertises none
    assert by_host["127.0.0.4"]["state"] == "Drain" and by_host["127.0.0.4"]["usable"] is False
    assert "maint" in by_host["127.0.0.4"]["reason"]
    assert by_host["127.0.0.1"]["port"] == servers[0].port
    assert by_host["127.0.0.1"]["response_ms"] > 0


def test_json_carries_the_advertised_capacity(serve, lts_conf):
    server = serve(send(document(rating=30.0, capacity=64.0)), host="127.0.0.1")
    out = run("--json", env={"LB_SERVERS": server.pool_word}, lts_conf=lts_conf)
    [entry] = json.loads(out.stdout)["servers"]
    assert (entry["rating"], entry["capacity"]) == (30.0, 64.0)


def test_explain_says_why_on_stderr(serve, lts_conf):
    good = serve(send(document(rating=10)), host="127.0.0.1")
    drained = serve(send(document(state="drain")), host="127.0.0.2")
    out = run("--explain", env={"LB_SERVERS": pool(good, drained)}, lts_conf=lts_conf)
    assert out.stdout == b"127.0.0.1\n"
    err = out.stderr.decode().splitlines()
    assert all(line.startswith("get_hosts: explain: ") for line in err)
    assert any("127.0.0.1" in line and "kept" in line for line in err)
    assert any("127.0.0.2" in line and "skipped" in line and "drain" in line for line in err)


def test_fixed_prints_the_pool_without_probing(serve, lts_conf):
    a = serve(send(document()), host="127.0.0.3")
    b = serve(send(document()), host="127.0.0.1")
    out = run(env={"LB_SERVERS": pool(a, "127.0.0.9:9", b), "LB_ALGORITHM": "fixed"}, lts_conf=lts_conf)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.3 127.0.0.9 127.0.0.1\n"
    assert out.stderr == b""
    assert a.connections == b.connections == 0


def test_mac_hash_is_stable_across_runs(serve, lts_conf):
    servers = three_servers(serve)
    env = {"LB_SERVERS": pool(*servers), "LB_ALGORITHM": "mac-hash"}
    first = run(env=env, lts_conf=lts_conf)
    assert first.returncode == 0
    for _ in range(3):
        assert run(env=env, lts_conf=lts_conf).stdout == first.stdout


# --- all-down fallback and exit status ------------------------------------------


def test_all_down_prints_the_whole_pool_in_configured_order(serve, lts_conf):
    drained = serve(send(document(state="drain")), host="127.0.0.2")
    pool_text = f"127.0.0.3:{refused_port('127.0.0.3')} {drained.pool_word} 127.0.0.1:{refused_port()}"
    out = run(env={"LB_SERVERS": pool_text}, lts_conf=lts_conf)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.3 127.0.0.2 127.0.0.1\n"
    assert b"get_hosts: warning: no usable server (2 Down, 1 Drain)" in out.stderr


def test_server_variable_alone_is_the_pool(serve, lts_conf):
    server = serve(send(document()), host="127.0.0.1")
    out = run(env={"SERVER": "127.0.0.1", "LB_PORT": str(server.port)}, lts_conf=lts_conf)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.1\n"


def error_lines(out):
    return out.stderr.decode().splitlines()


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        ((), {}, "no server pool"),
        (("--bogus",), {"LB_SERVERS": "127.0.0.1"}, "unknown option '--bogus'"),
        (("--lts-conf",), {"LB_SERVERS": "127.0.0.1"}, "--lts-conf needs a FILE"),
        (("--lts-conf", "/nonexistent/lts.conf"), {}, "/nonexistent/lts.conf"),
        (("--first", "--status"), {"LB_SERVERS": "127.0.0.1"}, "exclude"),
    ],
)
def test_exit_2_with_one_error_line(lts_conf, args, env, words):
    out = run(*args, env=env, lts_conf=lts_conf)
    assert out.returncode == 2
    assert out.stdout == b""
    [line] = error_lines(out)
    assert line.startswith("get_hosts: error: ")
    assert words in line


def test_a_broken_line_of_another_section_keeps_the_pool_of_default(tmp_path):
    # The hardening issue: this used to be rc 2 and no host although [Default] names the pool.
    broken = tmp_path / "lts.conf"
    broken.write_text("[Default]\nLB_SERVERS = 127.0.0.1:1\n[lab\n")
    out = run(lts_conf=broken)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.1\n"  # refused, so the whole pool: a login screen never goes empty
    line = error_lines(out)[0]
    assert line == (
        f"get_hosts: warning: {broken}:3: section header without ']': '[lab' "
        "(line skipped, and the lines under it up to the next section)"
    )


def test_an_lts_conf_that_cannot_be_read_and_no_pool_anywhere_names_it(tmp_path):
    out = run(lts_conf="/dev/zero")
    assert out.returncode == 2 and out.stdout == b""
    [line] = error_lines(out)
    assert line == "get_hosts: error: /dev/zero: cannot read: is a character device, not a regular file"


RECOVERABLE = [
    ({"LB_TIMEOUT": "soon"}, "LB_TIMEOUT in the environment: 'soon' is not a whole number of milliseconds"),
    ({"LB_MAX_LOAD": "high"}, "LB_MAX_LOAD in the environment: 'high'"),
    ({"LB_SKIP_SWAPPING": "maybe"}, "LB_SKIP_SWAPPING in the environment: 'maybe' is not a boolean"),
    (
        {"LB_ALGORITHM": "least-loaded"},
        "LB_ALGORITHM in the environment: 'least-loaded' is not an algorithm (valid: best-rated, fixed, "
        "loadbalancer, mac-hash,",
    ),
]


@pytest.mark.parametrize(("env", "words"), RECOVERABLE, ids=[next(iter(row[0])) for row in RECOVERABLE])
def test_a_bad_value_warns_and_still_prints_the_hosts(serve, lts_conf, env, words):
    server = serve(send(document()), host="127.0.0.1")
    out = run(env={"LB_SERVERS": server.pool_word, **env}, lts_conf=lts_conf)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.1\n"
    [line] = error_lines(out)
    assert line.startswith("get_hosts: warning: ")
    assert words in line
    assert "using" in line  # says what it does instead


def test_an_unknown_algorithm_in_lts_conf_names_file_and_line(serve, tmp_path):
    # Before: "unknown LB_ALGORITHM 'least-loaded' (valid: ...); using two-choice", with no file or line.
    server = serve(send(document()), host="127.0.0.1")
    path = tmp_path / "lts.conf"
    path.write_text(f'[Default]\n    LB_SERVERS = "{server.pool_word}"\n    LB_ALGORITHM = Least-Loaded\n')
    out = run(lts_conf=path)
    assert (out.returncode, out.stdout) == (0, b"127.0.0.1\n")
    assert error_lines(out) == [
        f"get_hosts: warning: LB_ALGORITHM in {path}:3: 'least-loaded' is not an algorithm (valid: best-rated, "
        "fixed, loadbalancer, mac-hash, random, two-choice, weighted); using the default, two-choice"
    ]


NO_DEFAULT_CONF = any(
    os.path.lexists(p) for p in ("/etc/lts.conf", "/etc/ltsp/ltsp.conf", "/opt/ltsp", "/var/lib/tftpboot/ltsp")
)


@pytest.mark.skipif(NO_DEFAULT_CONF, reason="this machine has an lts.conf, ltsp.conf, /opt/ltsp or TFTP ltsp")
def test_no_pool_says_where_it_looked_and_which_file_to_name():
    # Before: "no server pool: LB_SERVERS and SERVER are both unset" and nothing more, which is what
    # an admin trying --status on the LTSP server meets first (the clients' lts.conf is in the chroot).
    out = run("--status")
    assert (out.returncode, out.stdout) == (2, b"")
    assert error_lines(out) == [
        "get_hosts: error: no server pool: LB_SERVERS and SERVER are both unset in the environment, "
        "/etc/lts.conf (absent) and /etc/ltsp/ltsp.conf (absent); on an LTSP server, read the clients' file: "
        "--lts-conf /var/lib/tftpboot/ltsp/<arch>/lts.conf or --lts-conf /opt/ltsp/<arch>/etc/lts.conf (LTSP 5), "
        "or set LB_SERVERS in [clients] of "
        "/etc/ltsp/ltsp.conf (LTSP 20+, read by default)"
    ]


@pytest.mark.parametrize(
    ("text", "section"),
    [("[Default]\n    SCREEN_07 = ldm\n", "[Default]"), ("[clients]\nTIMEZONE=UTC\n", "[clients]")],
)
def test_no_pool_in_a_named_file_says_where_to_put_it(tmp_path, text, section):
    path = tmp_path / "clients.conf"
    path.write_text(text)
    out = run("--status", "--lts-conf", str(path))
    assert out.returncode == 2
    [line] = error_lines(out)
    assert line.startswith(
        f"get_hosts: error: no server pool: LB_SERVERS and SERVER are both unset in the environment, {path} (LTSP "
    )
    assert line.endswith(f"; set LB_SERVERS in its {section} section")


def test_ltsp_conf_lines_get_hosts_does_not_read_do_not_warn(serve, tmp_path):
    # Before: every run warned about each of lines 3-5, LTSP settings that are none of get_hosts' business.
    server = serve(send(document()), host="127.0.0.1")
    path = tmp_path / "ltsp.conf"
    path.write_text(
        "[clients]\n"
        f'LB_SERVERS="{server.pool_word}"\n'
        "TIMEZONE=$(cat /etc/timezone)\n"
        "POST_INIT_DATE=`date`\n"
        "mkdir -p /srv/x\n"
        "if [ -e /x ]; then LB_MAX_LOAD=2; fi\n"
        'LB_TIMEOUT="$(cat /t)"\n'
        'eval "$EXTRA"\n'
    )
    out = run(lts_conf=path)
    assert (out.returncode, out.stdout) == (0, b"127.0.0.1\n")
    assert error_lines(out) == [
        f"get_hosts: warning: {path}:6: not evaluated: 'if [ -e /x ]; then LB_MAX_LOAD=2; fi' (compound command), "
        "so LB_MAX_LOAD is unknown",
        f"get_hosts: warning: {path}:7: not evaluated: 'LB_TIMEOUT=\"$(cat /t)\"' ($(...) command substitution), "
        "so LB_TIMEOUT is unknown",
        f"get_hosts: warning: {path}:8: not evaluated: 'eval \"$EXTRA\"' (get_hosts evaluates assignments only: "
        "it may set any variable)",
    ]


def test_broken_lts_conf_falls_back_to_the_exported_environment(serve, tmp_path):
    server = serve(send(document()), host="127.0.0.1")
    broken = tmp_path / "lts.conf"
    broken.write_text('[Default]\nLB_SERVERS = "unterminated\n')
    out = run(env={"LB_SERVERS": server.pool_word}, lts_conf=broken)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.1\n"
    line = error_lines(out)[0]
    assert line.startswith(f"get_hosts: warning: {broken}:2: unterminated quoted value")
    assert line.endswith("(line skipped)")


@pytest.mark.parametrize("path", ["/dev/zero", "fifo"])
def test_an_unreadable_lts_conf_falls_back_to_the_exported_environment(serve, tmp_path, path):
    # The attack: --lts-conf /dev/zero was "internal error: MemoryError", a FIFO hung until killed.
    server = serve(send(document()), host="127.0.0.1")
    if path == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    out = run(env={"LB_SERVERS": server.pool_word}, lts_conf=path)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.1\n"
    [line] = error_lines(out)
    assert line.startswith(f"get_hosts: warning: {path}: cannot read: is a")
    assert line.endswith("; using the environment alone")


def test_pool_warnings_go_to_stderr(serve, lts_conf):
    server = serve(send(document()), host="127.0.0.1")
    out = run(env={"LB_SERVERS": f"bad:host:x {server.pool_word}"}, lts_conf=lts_conf)
    assert out.returncode == 0
    assert out.stdout == b"127.0.0.1\n"
    assert out.stderr.startswith(b"get_hosts: warning: ")


def test_help_and_version():
    out = run("--help")
    assert out.returncode == 0 and b"--first" in out.stdout and b"LB_ALGORITHM" in out.stdout
    out = run("--version")
    assert out.returncode == 0 and out.stdout == f"get_hosts {__version__}\n".encode()


# --- hostile servers through the whole command -------------------------------------

HOSTILE_BYTES = [
    # claims another host and the best rating
    document(hostname="evil.example.com", rating=1e6),
    # a right-to-left override quoted back in the reason
    document().replace(b"<state>ready</state>", b"<state>&#x202e;ydaer</state>"),
    # an escape sequence as a character reference
    document().replace(b"<state>ready</state>", b"<state>&#x1b;[2J</state>"),
    # raw terminal escapes
    b'\x1b]0;owned\x07\x1b[2J<ltsp-server version="1">',
    # an element name that is not ASCII
    '<\u202eevil version="1"/>'.encode(),
    b"\x00" * 100,
]


@pytest.mark.parametrize("mode", [(), ("--status",), ("--json",), ("--explain",), ("--status", "--explain")])
def test_hostile_servers_never_print_foreign_hosts_or_raw_bytes(serve, lts_conf, mode):
    good = serve(send(document(rating=1)), host="127.0.0.1")
    hostile = [serve(send(data), host=f"127.0.0.{i}") for i, data in enumerate(HOSTILE_BYTES, 2)]
    out = run(*mode, env={"LB_SERVERS": pool(good, *hostile), "LB_ALGORITHM": "best-rated"}, lts_conf=lts_conf)
    assert out.returncode == 0, out.stderr
    assert printable_ascii(out.stdout), out.stdout
    assert printable_ascii(out.stderr), out.stderr
    if not mode or mode == ("--explain",):
        # the liar is in the pool: it is printed, as the pool names it
        assert out.stdout == b"127.0.0.2 127.0.0.1\n"
    if mode == ("--json",):
        assert json.loads(out.stdout)["hosts"] == ["127.0.0.2", "127.0.0.1"]
    else:
        assert b"evil.example.com" not in out.stdout
    if "--explain" in mode:
        # the reason quotes the override, escaped
        assert b"unknown state '\\u202eydaer'" in out.stderr


@given(st.text())
def test_escape_makes_any_text_printable(text):
    escaped = report.escape(text, limit=10_000)
    assert escaped.isprintable()
    if text.isprintable():
        assert escaped == text


# (pool words, what --status shows for each)
DISPLAY_NAMES = [
    (["app1", "app2"], ["app1", "app2"]),
    (["app1", "app2:3377"], ["app1", "app2:3377"]),
    (["app1:377", "app1:3377"], ["app1:377", "app1:3377"]),
    (["App1", "app1:3377", "app2"], ["App1:377", "app1:3377", "app2"]),  # one host, two spellings
    (["[fd00::1]:377", "[fd00:0::1]:3377", "fd00::2"], ["[fd00::1]:377", "[fd00:0::1]:3377", "fd00::2"]),
    (["[fd00::5]:3377", "app1"], ["[fd00::5]:3377", "app1"]),
    (["app1:3377", "app2:3377"], ["app1", "app2"]),  # one port for all: LB_PORT, said once in lts.conf
]


@pytest.mark.parametrize(("words", "shown"), DISPLAY_NAMES, ids=[" ".join(row[0]) for row in DISPLAY_NAMES])
def test_status_names_show_the_port_only_where_the_name_alone_is_ambiguous(words, shown):
    from get_hosts.settings import parse_pool

    entries, warnings = parse_pool(" ".join(words))
    assert warnings == []
    names = report.display_names(entries)
    assert [names[entry] for entry in entries] == shown
