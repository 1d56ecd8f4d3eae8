"""The daemon's login-service checks (health.py): the kernel's socket table, the admin's command."""

import os
import socket
import time

import pytest
from ltsp_server_advertise import health
from ltsp_server_advertise.health import MISSES_TO_FAIL, STUCK_SECONDS, SshdWatch, listening_queues, run_check

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def row(local, state, tx, rx):
    return f"   0: {local} 00000000:0000 {state} {tx:08X}:{rx:08X} 00:00000000 00000000     0        0 1\n"


@pytest.mark.parametrize(
    ("rows", "port", "expected"),
    [
        ([], 22, []),
        ([row("00000000:0016", "0A", 0, 0)], 22, [0]),
        ([row("00000000:0016", "0A", 0, 5)], 22, [5]),
        # established connections to 22 are not listeners
        ([row("0100007F:0016", "01", 0, 0)], 22, []),
        # another port; a port whose hex ends like ours (0x1016 vs 0x0016)
        ([row("00000000:0017", "0A", 128, 0), row("00000000:1016", "0A", 128, 0)], 22, []),
        # tcp6 format and several listeners
        (
            [row("00000000000000000000000000000000:0016", "0A", 64, 1), row("0100007F:0016", "0A", 8, 0)],
            22,
            [1, 0],
        ),
        # a line that does not parse is skipped
        (["garbage\n", "   1: 00000000:0016 00000000:0000 0A zz:yy\n"], 22, []),
    ],
)
def test_listening_queues_table(rows, port, expected):
    assert listening_queues(HEADER + "".join(rows), port) == expected


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # (seconds, queues) in order -> the verdict after the last one
        ([(0, [0])], None),
        ([(0, [])], None),  # one miss: maybe sshd restarting
        ([(0, []), (2, [])], "sshd: nothing listens on port 22"),
        ([(0, []), (2, [0]), (4, [])], None),  # a miss, a hit, a miss: not two running
        ([(0, [3]), (2, [1]), (4, [2])], None),  # waiting, but not for STUCK_SECONDS
        (
            [(0, [3]), (2, [1]), (4, [2]), (STUCK_SECONDS, [2])],
            f"sshd: connections wait unaccepted on port 22 for {STUCK_SECONDS:.0f} s (2 now): it is not accepting",
        ),
        ([(0, [3]), (4, [0]), (STUCK_SECONDS, [2])], None),  # drained in between
    ],
)
def test_sshd_watch_table(readings, expected):
    watch = SshdWatch(22)
    verdict = "unset"
    for now, queues in readings:
        verdict = watch.observe(now, queues)
    assert verdict == expected
    assert MISSES_TO_FAIL == 2


def test_the_real_socket_table_sees_a_listener_and_its_queue():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    assert health.read_listening_queues(port) == []
    listener.listen(16)
    try:
        assert health.read_listening_queues(port) == [0]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        deadline = time.monotonic() + 2
        while health.read_listening_queues(port) != [3] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert health.read_listening_queues(port) == [3]
        for client in clients:
            client.close()
    finally:
        listener.close()


def sh(script):
    return ("/bin/sh", "-c", script)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("exit 0", None),
        ("echo fine; exit 0", None),
        ("exit 3", "sh exited 3"),
        ("echo; echo '  LDAP: no answer from ldap1  '; echo more; exit 1", "sh exited 1: LDAP: no answer from ldap1"),
        ("printf 'bad\\033[31m red\\n' >&2; exit 1", "sh exited 1: bad?[31m red"),
        ("kill -9 $$", "sh killed by signal 9"),
    ],
)
def test_run_check_table(script, expected):
    assert run_check(sh(script), timeout=5) == expected


def test_a_hanging_command_fails_at_its_timeout():
    started = time.monotonic()
    assert run_check(sh("sleep 30"), timeout=0.5) == "sh did not finish within 0.5 s"
    assert time.monotonic() - started < 2


def test_megabytes_of_output_are_read_and_dropped_and_the_reason_is_one_short_line():
    reason = run_check(
        sh("yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 20000000; exit 1"), timeout=20
    )
    assert reason == "sh exited 1: " + "x" * 49


def test_a_long_line_is_cut():
    reason = run_check(sh("printf '%0500d' 0; exit 1"), timeout=5)
    assert reason == "sh exited 1: " + "0" * health.REASON_CHARS


def test_a_command_that_forks_leaves_nothing_behind(tmp_path):
    pid_file = tmp_path / "child.pid"
    # The child keeps the output pipe open and would outlive the check.
    assert run_check(sh(f"sleep 300 & echo $! > {pid_file}; exit 0"), timeout=5) is None
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 2
    while os.path.exists(f"/proc/{child}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{child}") or open_text(f"/proc/{child}/stat").split()[2] == "Z"


def open_text(path):
    with open(path) as file:
        return file.read()


def test_a_command_that_cannot_run(tmp_path):
    not_executable = tmp_path / "check"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    with pytest.raises(health.CannotRun, match="cannot run"):
        run_check(("/nonexistent/check",), timeout=1)
    assert health.command_problem(("/nonexistent/check",)) == "HEALTH_COMMAND '/nonexistent/check': no such file"
    assert "no such command on PATH" in health.command_problem(("no-such-check-here",))
    assert (
        health.command_problem((str(not_executable),))
        == f"HEALTH_COMMAND '{not_executable}': not executable by this user"
    )
    assert health.command_problem(("true",)) is None
    assert health.command_problem(()) is None


def test_the_monitor_never_fails_a_server_for_a_command_that_cannot_run(caplog):
    monitor = health.HealthMonitor()
    monitor.configure(0, ("/nonexistent/check",), 1)
    assert monitor.check_once() is None
    assert "cannot run" not in caplog.text or "never takes this server out" in caplog.text
    assert "HEALTH_COMMAND '/nonexistent/check': no such file" in caplog.text


def test_the_monitor_follows_the_command_and_sshd(tmp_path):
    flag = tmp_path / "broken"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    changes = []
    monitor = health.HealthMonitor(on_change=lambda: changes.append(1))
    monitor.configure(port, sh(f"test ! -e {flag} || {{ echo home not mounted; exit 1; }}"), 1)
    assert monitor.check_once(now=0) is None
    flag.write_text("")
    assert monitor.check_once(now=1) == "sh exited 1: home not mounted"
    flag.unlink()
    assert monitor.check_once(now=2) is None
    listener.close()
    assert monitor.check_once(now=4) is None  # one miss
    assert monitor.check_once(now=6) == f"sshd: nothing listens on port {port}"
    assert len(changes) == 3


def test_netlink_and_the_text_tables_agree_on_real_listeners():
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    port = listener.getsockname()[1]
    try:
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        time.sleep(0.05)
        by_text = []
        for name in ("tcp", "tcp6"):
            with open(f"/proc/net/{name}") as table:
                by_text += health.listening_queues(table.read(), port)
        assert health.listening_queues_by_netlink(port) == by_text == [2]
        for client in clients:
            client.close()
    finally:
        listener.close()
    assert health.listening_queues_by_netlink(port) == []
