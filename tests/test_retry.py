"""Retry elsewhere (get_hosts/retry.py): a login that did not last sends the next run to another server."""

import os
import pwd
import time

import pytest
from fakeservers import answer, document, http, send
from get_hosts_run import pool, run

from get_hosts import retry
from get_hosts.retry import demote, failed_hosts, parse_state


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.5 app1\n", (12.5, "app1", ())),
        ("12.5 app2 app1 app3", (12.5, "app2", ("app1", "app3"))),
        ("", None),
        ("12.5", None),
        ("soon app1", None),
        ("nan app1", None),
        ("1 " + "a" * 256, None),
        ("1 app\x1b[31m", None),
        ("1 " + " ".join(["h"] * (retry.MAX_CHAIN + 2)), None),
        ("\x00\xff garbage", None),
    ],
)
def test_parse_state_table(text, expected):
    assert parse_state(text) == expected


@pytest.mark.parametrize(
    ("state", "now", "retry_seconds", "expected"),
    [
        (None, 100, 60, ()),
        ((100, "app1", ()), 130, 60, ("app1",)),
        ((100, "app1", ()), 161, 60, ()),  # the login lasted: forget it
        ((100, "app1", ()), 130, 0, ()),  # LB_RETRY_SECONDS 0: off
        ((100, "app1", ()), 90, 60, ()),  # from the future (another boot's clock): ignored
        ((100, "app2", ("app1",)), 110, 60, ("app1", "app2")),  # a chain: both go last, the newest at the end
        ((100, "app1", ("app1", "app2")), 110, 60, ("app2", "app1")),
        ((100, "h9", tuple(f"h{i}" for i in range(8))), 110, 60, (*(f"h{i}" for i in range(1, 8)), "h9")),
    ],
)
def test_failed_hosts_table(state, now, retry_seconds, expected):
    assert failed_hosts(state, now, retry_seconds) == expected


@pytest.mark.parametrize(
    ("items", "failed", "expected"),
    [
        (["a", "b", "c"], (), ["a", "b", "c"]),
        (["a", "b", "c"], ("a",), ["b", "c", "a"]),
        (["a", "b", "c"], ("b", "a"), ["c", "b", "a"]),
        (["a", "b", "c"], ("x",), ["a", "b", "c"]),  # not in the pool: nothing moves
        (["a"], ("a",), ["a"]),  # never an empty line
    ],
)
def test_demote_table(items, failed, expected):
    assert demote(items, failed, str) == expected


def two_servers(serve):
    # best-rated makes the first choice certain: .1 rates higher than .2.
    return [
        serve(send(document(hostname="one", rating=30.0)), host="127.0.0.1"),
        serve(send(document(hostname="two", rating=10.0)), host="127.0.0.2"),
    ]


def login(servers, state_dir, *args, **env):
    environ = {"LB_SERVERS": pool(*servers), "LB_ALGORITHM": "best-rated", "LB_STATE_DIR": str(state_dir)}
    environ.update(LB_RETRY_SECONDS="60", LTS_CONF="/dev/null")
    environ.update(env)
    return run(*args, env=environ)


def test_a_quick_rerun_puts_the_last_choice_last_and_says_why(serve, tmp_path):
    servers = two_servers(serve)
    first = login(servers, tmp_path / "run-ltsp")
    assert first.stdout == b"127.0.0.1 127.0.0.2\n", first.stderr
    assert (tmp_path / "run-ltsp" / "get_hosts.last").read_text().split()[1] == "127.0.0.1"
    second = login(servers, tmp_path / "run-ltsp", "--explain")
    assert second.stdout == b"127.0.0.2 127.0.0.1\n"
    assert b"127.0.0.1 goes last: this client's login there did not last" in second.stderr
    # Both failed: the older failure comes back first, the newest goes last.
    third = login(servers, tmp_path / "run-ltsp")
    assert third.stdout == b"127.0.0.1 127.0.0.2\n"


def test_first_for_xdmcp_retries_elsewhere_too(serve, tmp_path):
    servers = two_servers(serve)
    assert login(servers, tmp_path, "--first").stdout == b"127.0.0.1\n"
    assert login(servers, tmp_path, "--first").stdout == b"127.0.0.2\n"


def test_fixed_keeps_the_order_but_not_a_host_that_failed(serve, tmp_path):
    servers = two_servers(serve)
    assert login(servers, tmp_path, LB_ALGORITHM="fixed").stdout == b"127.0.0.1 127.0.0.2\n"
    assert login(servers, tmp_path, LB_ALGORITHM="fixed").stdout == b"127.0.0.2 127.0.0.1\n"


def test_retry_seconds_zero_remembers_nothing(serve, tmp_path):
    servers = two_servers(serve)
    for _ in range(2):
        assert login(servers, tmp_path, LB_RETRY_SECONDS="0").stdout == b"127.0.0.1 127.0.0.2\n"
    assert not (tmp_path / "get_hosts.last").exists()


def test_status_neither_reads_nor_writes_the_memory(serve, tmp_path):
    servers = two_servers(serve)
    login(servers, tmp_path, "--status")
    assert not (tmp_path / "get_hosts.last").exists()


def hostile_state(tmp_path, kind):
    state = tmp_path / "get_hosts.last"
    if kind == "link":
        target = tmp_path / "elsewhere"
        target.write_text("1 127.0.0.1\n")
        state.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(state)
    elif kind == "garbage":
        state.write_bytes(b"\x00\xff" * 5000)
    elif kind == "directory":
        state.mkdir()
    elif kind == "devzero":
        state.symlink_to("/dev/zero")
    return state


@pytest.mark.parametrize("kind", ["link", "fifo", "garbage", "directory", "devzero"])
def test_a_hostile_state_file_counts_as_no_memory_and_costs_nothing(serve, tmp_path, kind):
    servers = two_servers(serve)
    hostile_state(tmp_path, kind)
    out = login(servers, tmp_path)
    assert out.returncode == 0 and out.stderr == b""
    assert out.stdout == b"127.0.0.1 127.0.0.2\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to plant a file owned by another user")
def test_someone_elses_state_file_is_not_trusted(serve, tmp_path):
    servers = two_servers(serve)
    state = tmp_path / "get_hosts.last"
    # Planted by another user: "this client just failed on .1", to steer its logins away from .1.
    state.write_text(f"{time.monotonic():.3f} 127.0.0.1\n")
    nobody = pwd.getpwnam("nobody")
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    out = login(servers, tmp_path)
    assert out.stdout == b"127.0.0.1 127.0.0.2\n"


def test_an_unwritable_state_dir_is_silent(serve, tmp_path):
    servers = two_servers(serve)
    blocker = tmp_path / "file"
    blocker.write_text("")
    for state_dir in (blocker / "sub", "/proc/no-such-dir"):
        out = login(servers, state_dir)
        assert (out.returncode, out.stderr, out.stdout) == (0, b"", b"127.0.0.1 127.0.0.2\n")


def test_the_state_file_is_replaced_whole(serve, tmp_path):
    servers = two_servers(serve)
    login(servers, tmp_path)
    login(servers, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["get_hosts.last"]
    text = (tmp_path / "get_hosts.last").read_text()
    assert text.endswith("\n") and text.split()[1:] == ["127.0.0.2", "127.0.0.1"]


def test_a_balancer_is_told_which_login_did_not_last(serve, tmp_path):
    servers = two_servers(serve)
    balancer = serve(answer(http(200, b"127.0.0.1 127.0.0.2\n")), host="127.0.0.1")
    env = {"LB_BALANCER": balancer.pool_word, "LB_BALANCER_TIMEOUT": "3000"}
    first = login(servers, tmp_path, "--explain", **env)
    assert first.stdout == b"127.0.0.1 127.0.0.2\n", first.stderr
    second = login(servers, tmp_path, "--explain", **env)
    # The balancer's order still puts .1 first; this client's own memory puts it last.
    assert second.stdout == b"127.0.0.2 127.0.0.1\n", second.stderr
    first_request, second_request = balancer.requests
    assert b"failed=" not in first_request
    assert b"failed=127.0.0.1" in second_request.split(b"\r\n", 1)[0]
