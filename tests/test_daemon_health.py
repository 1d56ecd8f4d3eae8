"""The real daemon's login-service checks: sshd on SSH_PORT and HEALTH_COMMAND, as clients see them.

Each test starts ltsp-server-advertise on loopback with a port of its own for
SSH_PORT: a listening socket of the test's (a stand-in for sshd) or one where
nothing listens.
"""

import signal
import socket
import time

from daemon_io import fetch, valid, write_conf
from services import Daemon


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def document_within(daemon, seconds, accept):
    """The first document ACCEPT(stats) likes, polling for SECONDS; else the last one."""
    deadline = time.monotonic() + seconds
    while True:
        stats = valid(fetch(daemon.address))
        if accept(stats) or time.monotonic() > deadline:
            return stats
        time.sleep(0.1)


def test_sshd_listening_is_healthy_and_gone_is_failing_within_two_checks(daemons, conf_dir):
    sshd = socket.create_server(("127.0.0.1", 0))
    port = sshd.getsockname()[1]
    daemon = daemons(write_conf(conf_dir, ""), ssh_port=port)
    assert valid(fetch(daemon.address)).failing is None
    sshd.close()
    started = time.monotonic()
    stats = document_within(daemon, 8, lambda s: s.failing is not None)
    assert stats.failing == f"sshd: nothing listens on port {port}"
    assert stats.rating == 0
    assert 1.5 < time.monotonic() - started < 6.5  # two checks 2 s apart, not one
    daemon.wait_for(
        rf"WARNING: login service failing, this server takes no new logins: sshd: nothing listens on port {port}"
    )
    # sshd back: healthy at the next check, said in one line.
    sshd = socket.create_server(("127.0.0.1", port))
    try:
        assert document_within(daemon, 5, lambda s: s.failing is None).failing is None
        daemon.wait_for(r"INFO: login service healthy again")
    finally:
        sshd.close()


def test_a_failing_health_command_takes_the_server_out_with_its_first_line(daemons, conf_dir):
    # In conf_dir (0755): the daemon runs it as USER (nobody) when started as root.
    flag = conf_dir / "broken"
    flag.write_text("")
    check = conf_dir / "check-logins"
    check.write_text(f'#!/bin/sh\n[ ! -e {flag} ] || {{ echo "LDAP: ldap1 does not answer"; exit 1; }}\n')
    check.chmod(0o755)
    conf = write_conf(conf_dir, f"HEALTH_COMMAND = {check}\nHEALTH_SECONDS = 1\n")
    daemon = daemons(conf, ssh_port=0)
    stats = document_within(daemon, 5, lambda s: s.failing is not None)
    assert stats.failing == "check-logins exited 1: LDAP: ldap1 does not answer"
    flag.unlink()
    assert document_within(daemon, 5, lambda s: s.failing is None).failing is None


def test_a_command_that_cannot_run_is_said_at_start_and_on_reload_and_takes_nothing_out(daemons, conf_dir):
    conf = write_conf(conf_dir, "HEALTH_COMMAND = /nonexistent/check-logins --ldap\n")
    daemon = daemons(conf, ssh_port=0)
    said = r"HEALTH_COMMAND '/nonexistent/check-logins': no such file; the check is skipped"
    daemon.wait_for(said)
    assert valid(fetch(daemon.address)).failing is None
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(said, count=2)
    time.sleep(1.0)
    assert valid(fetch(daemon.address)).failing is None
    assert sum("HEALTH_COMMAND" in line for line in daemon.lines) == 2  # one line each time, not one per check


def test_a_hanging_health_command_fails_at_its_time_and_the_daemon_keeps_answering(daemons, conf_dir):
    conf = write_conf(conf_dir, "HEALTH_COMMAND = /bin/sleep 600\nHEALTH_SECONDS = 1\n")
    daemon = daemons(conf, ssh_port=0)
    started = time.monotonic()
    answers = 0
    stats = valid(fetch(daemon.address))
    while stats.failing is None and time.monotonic() - started < 5:
        answers += 1
        stats = valid(fetch(daemon.address, timeout=1.0))
    assert stats.failing == "sleep did not finish within 1 s"
    assert answers > 5  # answered all along: the check is not on the connection path


def test_the_ssh_port_option_overrides_the_file(conf_dir):
    closed = free_port()
    conf = write_conf(conf_dir, "SSH_PORT = 0\n")
    daemon = Daemon(conf, ssh_port=closed).start()
    try:
        stats = document_within(daemon, 8, lambda s: s.failing is not None)
        assert stats.failing == f"sshd: nothing listens on port {closed}"
    finally:
        daemon.stop()
