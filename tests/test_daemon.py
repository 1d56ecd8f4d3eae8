"""The real daemon, as a real process, over real sockets on loopback.

Each test starts ltsp-server-advertise with --listen 127.0.0.1:0 (or [::1]:0)
and learns its port from the "listening on" log line. Nothing is patched:
signals, rlimits, privileges and socket activation are the kernel's own.
Config files live in a world-readable temporary directory, because when the
tests run as root the daemon drops to nobody and must still read its file on
SIGHUP.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemon_io import fetch, read_to_eof, valid, write_conf
from ltsp_server_advertise import config as daemon_config
from ltsp_server_advertise import server as server_module
from machine import ipv6_loopback_works

from ltsp_lbcore import wire

# --- what it serves -------------------------------------------------------------------


def test_serves_a_valid_document_on_ipv4(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, "WEIGHT = 42\n"))
    stats = valid(fetch(daemon.address))
    assert (stats.state, stats.weight) == ("ready", 42)
    assert stats.hostname == os.uname().nodename
    assert stats.cpu_count == os.cpu_count()
    assert stats.mem_total_bytes > 0 and stats.uptime_seconds > 0
    assert stats.sample_age_ms < 4000
    assert daemon.stop() == 0


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 on loopback here")
def test_serves_on_ipv6_and_ipv4_at_once(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, ""), listen=("[::1]:0", "127.0.0.1:0"), sockets=2)
    families = {}
    for host, port in daemon.addresses:
        families[":" in host] = valid(fetch((host, port))).state
    assert families == {True: "ready", False: "ready"}


def test_once_prints_the_document_and_exits(conf_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ltsp_server_advertise.cli",
            "--once",
            "--config",
            str(write_conf(conf_dir, "STATE = maint\n")),
        ],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    stats = valid(result.stdout)
    assert (stats.state, stats.rating) == ("maint", 0)


def test_document_carries_no_user_or_process_names(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, ""))
    document = fetch(daemon.address).decode("utf-8")
    names = {entry.pw_name for entry in pwd.getpwall() if len(entry.pw_name) > 3} - {os.uname().nodename}
    tags = set(re.findall(r"</?([a-z0-9-]+)", document))
    assert tags <= {name.replace("_", "-") for name in wire.FIELD_NAMES} | {"ltsp-server", "sample-age-ms"}
    assert not [name for name in names if f">{name}<" in document]


# --- signals ---------------------------------------------------------------------------


def test_sighup_drains_at_once(conf_dir, daemons):
    conf = write_conf(conf_dir, "STATE = ready\nWEIGHT = 100\n")
    daemon = daemons(conf)
    assert valid(fetch(daemon.address)).state == "ready"
    write_conf(conf_dir, "STATE = drain\nWEIGHT = 50\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(r"reloaded .*STATE=drain WEIGHT=50")
    stats = valid(fetch(daemon.address))
    assert (stats.state, stats.weight, stats.rating) == ("drain", 50, 0)
    assert daemon.stop() == 0


def test_bad_file_on_sighup_keeps_the_running_config(conf_dir, daemons):
    conf = write_conf(conf_dir, "WEIGHT = 70\n")
    daemon = daemons(conf)
    write_conf(conf_dir, "STATE = drain\nWEIGHT = abc\n")
    daemon.proc.send_signal(signal.SIGHUP)
    (line,) = daemon.wait_for(r"reload refused")
    assert f"{conf}:2: invalid value for WEIGHT: 'abc' (expected a whole number >= 0)" in line
    stats = valid(fetch(daemon.address))
    assert (stats.state, stats.weight) == ("ready", 70)
    assert daemon.proc.poll() is None


def test_listen_change_on_reload_needs_a_restart(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, "LISTEN = 127.0.0.1:0\n"), listen=())  # from the file
    write_conf(conf_dir, "LISTEN = 127.0.0.1:0 [::1]:0\nWEIGHT = 10\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(r"LISTEN changed in .*: it takes effect at the next restart")
    daemon.wait_for(r"reloaded .*WEIGHT=10")
    assert valid(fetch(daemon.address)).weight == 10  # same socket, new settings


def test_sigterm_exits_0(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, ""))
    fetch(daemon.address)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0
    daemon.wait_for(r"stopped: 1 served")


# --- who may ask -----------------------------------------------------------------------


def test_allow_list_refuses_other_networks(conf_dir, daemons):
    conf = write_conf(conf_dir, "ALLOW = 192.0.2.0/24 2001:db8::/32\n")
    daemon = daemons(conf)
    assert fetch(daemon.address) == b""  # closed, no document
    write_conf(conf_dir, "ALLOW = 192.0.2.0/24 127.0.0.0/8\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(r"reloaded")
    assert valid(fetch(daemon.address)).state == "ready"
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(timeout=10)
    daemon.wait_for(r"stopped: 1 served, 1 refused")


# --- hostile and idle clients ----------------------------------------------------------


def test_holders_and_garbage_senders_do_not_slow_honest_clients(conf_dir, daemons):
    # Four places only: if holding a connection open kept a place, the
    # holders below would shut every honest client out.
    daemon = daemons(write_conf(conf_dir, "MAX_CLIENTS = 4\n"))
    holders = [socket.create_connection(daemon.address) for _ in range(100)]
    garbage = []
    for _ in range(30):
        sock = socket.create_connection(daemon.address)
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # the daemon may have closed already
            sock.send(os.urandom(8192))
        garbage.append(sock)
    latencies = []
    for _ in range(100):
        started = time.monotonic()
        assert valid(fetch(daemon.address, timeout=2)).state == "ready"
        latencies.append(time.monotonic() - started)
        for sock in garbage[:10]:  # keep sending while honest clients ask
            with contextlib.suppress(OSError):
                sock.send(b"\x00GET / HTTP/1.0\r\n" * 100)
    latencies.sort()
    assert latencies[-1] < 0.5, latencies[-5:]
    assert latencies[len(latencies) // 2] < 0.05
    # Every holder got its whole document and the daemon's end is closed.
    for sock in holders:
        valid(read_to_eof(sock, 2))
        sock.close()
    for sock in garbage:
        sock.close()
    assert daemon.proc.poll() is None


def test_write_timeout_and_max_clients_with_a_document_that_does_not_fit(tmp_path):
    """In-process Server with an 8 MiB document: two non-reading clients fill MAX_CLIENTS = 2."""

    class HugeAdvertisement:
        on_sample = None

        def configure(self, config):
            pass

        def document(self, now=None):
            return b"x" * (8 * 2**20)

        def wait_deadline(self):
            return None

        def next_idle_sample_at(self):
            return None

        def idle_sample(self, now):
            pass

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    address = listener.getsockname()
    config = daemon_config.SCHEMA.defaults()._replace(max_clients=2, write_timeout_seconds=0.5)
    server = server_module.Server([listener], config, HugeAdvertisement())
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        stalled = []
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(address)
            stalled.append(sock)
        time.sleep(0.1)
        started = time.monotonic()
        # A third, reading client waits for a place: until the write timeout drops a stalled one.
        third = fetch(address, timeout=5)
        waited = time.monotonic() - started
        assert len(third) == 8 * 2**20
        assert 0.25 < waited < 3, waited
        assert server.timed_out >= 1
        for sock in stalled:  # dropped: what they get ends early, by EOF or reset
            sock.settimeout(3)
            received = 0
            try:
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < 8 * 2**20
            sock.close()
    finally:
        server.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert (server.served, server.timed_out) == (1, 2)


def test_a_storm_costs_one_sample(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, "SAMPLE_SECONDS = 1\n"), extra_args=["--debug"])
    before = len(daemon.wait_for(r"stats sample \d+ taken", count=2))
    time.sleep(1.1)  # the startup sample is now stale: the storm triggers one refresh
    socks = []
    for _ in range(300):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(daemon.address)
        socks.append(sock)
    ages = set()
    deadline = time.monotonic() + 10
    for sock in socks:
        ages.add(wire.decode(read_to_eof(sock, max(0.1, deadline - time.monotonic()))).sample_age_ms)
        sock.close()
    time.sleep(0.2)
    samples = [line for line in daemon.lines if re.search(r"stats sample \d+ taken", line)]
    assert len(samples) - before == 1, samples
    assert max(ages) < 2 * 1000 + 500


def test_idle_daemon_uses_no_cpu(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, ""))
    fetch(daemon.address)
    time.sleep(0.2)
    before = daemon.cpu_seconds()
    time.sleep(1.5)
    assert daemon.cpu_seconds() - before <= 0.02


# --- out of file descriptors ------------------------------------------------------------


def open_files_limit(pid):
    """(soft, hard) RLIMIT_NOFILE of another process, from /proc."""
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if "open files" in line)
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def set_open_files_limit(pid, soft, hard):
    """prlimit(2) on the daemon, as the daemon's own user.

    Changing another user's limits needs CAP_SYS_RESOURCE, which root in a
    container may lack; the same user needs nothing. After the daemon dropped
    to nobody, util-linux's prlimit is run as nobody.
    """
    status = Path(f"/proc/{pid}/status").read_text()
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    gid = int(re.search(r"^Gid:\s+(\d+)", status, re.M).group(1))
    if uid == os.geteuid():
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        return
    if not shutil.which("prlimit"):
        pytest.skip("prlimit (util-linux) is needed to change the limits of the daemon's user")
    subprocess.run(
        ["prlimit", f"--pid={pid}", f"--nofile={soft}:{hard}"], user=uid, group=gid, extra_groups=[], check=True
    )
    assert open_files_limit(pid) == (soft, hard)


def test_file_descriptor_famine_then_recovery(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, "SAMPLE_SECONDS = 3600\n"))
    pid = daemon.proc.pid
    valid(fetch(daemon.address))
    soft, hard = open_files_limit(pid)
    open_fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    lowest_free = next(fd for fd in range(len(open_fds) + 1) if fd not in open_fds)
    # The next descriptor the daemon opens would be lowest_free: allow fewer.
    set_open_files_limit(pid, lowest_free, hard)
    waiting = [socket.create_connection(daemon.address) for _ in range(20)]
    daemon.wait_for(r"out of file descriptors")
    cpu_before = daemon.cpu_seconds()
    time.sleep(1.0)
    assert daemon.cpu_seconds() - cpu_before < 0.2  # retries, not a busy loop
    assert daemon.proc.poll() is None
    for sock in waiting:
        assert select.select([sock], [], [], 0)[0] == []  # nothing answered yet: queued, not dropped
    set_open_files_limit(pid, soft, hard)
    started = time.monotonic()
    for sock in waiting:
        valid(read_to_eof(sock, 3))
        sock.close()
    assert time.monotonic() - started < 1.0
    daemon.wait_for(r"file descriptors available again")
    valid(fetch(daemon.address))
    assert daemon.stop() == 0


# --- privileges and systemd ----------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_root_drops_to_user_after_binding(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, "USER = nobody\n"))
    nobody = pwd.getpwnam("nobody")
    status = Path(f"/proc/{daemon.proc.pid}/status").read_text()
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    gids = re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()
    groups = re.search(r"^Groups:[ \t]*(.*)$", status, re.M).group(1).split()
    assert uids == [str(nobody.pw_uid)] * 4
    assert gids == [str(nobody.pw_gid)] * 4
    assert groups == []
    assert valid(fetch(daemon.address)).state == "ready"


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_unknown_user_is_a_config_error(conf_dir):
    conf = write_conf(conf_dir, "USER = no-such-user-here\n")
    result = subprocess.run(
        [sys.executable, "-m", "ltsp_server_advertise.cli", "--config", str(conf), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"ltsp-server-advertise: error: {conf}: USER 'no-such-user-here' does not exist on this system"
    )


# A stand-in for systemd: put the socket at fd 3, name ourselves in LISTEN_PID, exec the daemon.
SOCKET_ACTIVATOR = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="advertise")
os.execv(sys.executable, [sys.executable, "-m", "ltsp_server_advertise.cli", *sys.argv[2:]])
"""


def test_socket_activation(conf_dir, daemons):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    # Were LISTEN used, the daemon would listen on port 1 (or fail to): the address check below would fail.
    conf = write_conf(conf_dir, "LISTEN = 127.0.0.1:1\n")
    command = [sys.executable, "-c", SOCKET_ACTIVATOR, str(listener.fileno()), "--config", str(conf)]
    daemon = daemons(conf, command=command, pass_fds=(listener.fileno(),))
    listener.close()  # only the daemon holds it now
    daemon.wait_for(r"socket activation: 1 listening socket")
    assert daemon.address == ("127.0.0.1", port)
    assert valid(fetch(daemon.address)).state == "ready"
    assert daemon.stop() == 0


def test_socket_activation_refuses_a_socket_that_is_not_listening(conf_dir):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as not_listening:
        command = [
            sys.executable,
            "-c",
            SOCKET_ACTIVATOR,
            str(not_listening.fileno()),
            "--config",
            str(write_conf(conf_dir, "")),
        ]
        result = subprocess.run(command, pass_fds=(not_listening.fileno(),), capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "ltsp-server-advertise: error: socket activation: fd 3 is not a listening TCP socket (use ListenStream=)"
    )


def test_tells_systemd_ready_and_stopping(conf_dir, daemons):
    notify_path = conf_dir / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify_socket:
        notify_socket.bind(str(notify_path))
        notify_path.chmod(0o777)  # the daemon may have become nobody
        notify_socket.settimeout(10)
        os.environ["NOTIFY_SOCKET"] = str(notify_path)
        try:
            daemon = daemons(write_conf(conf_dir, ""))
        finally:
            del os.environ["NOTIFY_SOCKET"]
        assert notify_socket.recv(256) == b"READY=1"
        assert daemon.stop() == 0
        assert notify_socket.recv(256) == b"STOPPING=1"


# Runs the daemon with its stderr named in JOURNAL_STREAM, as systemd does.
UNDER_JOURNALD = """
import os, sys
stat = os.fstat(2)
os.environ["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
os.execv(sys.executable, [sys.executable, "-m", "ltsp_server_advertise.cli", *sys.argv[1:]])
"""


def test_log_lines_carry_syslog_priorities_under_journald(conf_dir):
    absent = conf_dir / "absent.conf"  # logs "no config file" at info, then fails on --listen
    result = subprocess.run(
        [sys.executable, "-c", UNDER_JOURNALD, "--config", str(absent), "--listen", "127.0.0.1:99999"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    log_lines = result.stderr.splitlines()[:-1]
    assert log_lines == [f"<6>ltsp_server_advertise.config: no config file {absent}: using the defaults"]


# --- the sample cache: stale-while-revalidate ---------------------------------------------


class GatedCollector:
    """The real collector, held at a gate: a collection that takes as long as the test says."""

    def __init__(self):
        from ltsp_server_advertise import stats

        self._collector = stats.StatsCollector()
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def collect(self):
        self.calls += 1
        assert self.gate.wait(10), "the test never opened the gate"
        return self._collector.collect()


def test_a_stale_sample_is_served_at_once_while_a_fresh_one_is_taken():
    from ltsp_server_advertise.advertisement import Advertisement

    clock = [100.0]
    collector = GatedCollector()
    landed = threading.Event()
    config = daemon_config.SCHEMA.defaults()._replace(sample_seconds=1.0)
    advertisement = Advertisement(collector.collect, config, on_sample=landed.set, clock=lambda: clock[0])
    advertisement.refresh_now()
    clock[0] = 160.0  # a minute idle: the sample is stale
    collector.gate.clear()  # and the next collection is slow
    document = advertisement.document()
    assert wire.decode(document).sample_age_ms == 60000  # at once, and honest about its age
    assert collector.calls == 1  # nothing collected on the client's path
    advertisement.idle_sample(clock[0])  # the server's loop, after the clients at hand
    assert advertisement.next_idle_sample_at() is None  # one is running
    clock[0] = 160.5
    assert wire.decode(advertisement.document()).sample_age_ms == 60500  # still served while it collects
    collector.gate.set()
    assert landed.wait(5)
    assert wire.decode(advertisement.document()).sample_age_ms <= 500  # the fresh one, taken at 160.0
    advertisement.idle_sample(clock[0])
    assert collector.calls == 2  # fresh: no further sample


def test_a_sample_that_keeps_failing_is_served_with_its_age_and_one_warning(caplog):
    from ltsp_server_advertise.advertisement import IDLE_SAMPLE_SECONDS, STALE_WARNING_SECONDS, Advertisement

    clock = [0.0]
    collector = GatedCollector()
    landed = threading.Event()
    config = daemon_config.SCHEMA.defaults()._replace(sample_seconds=1.0)
    advertisement = Advertisement(collector.collect, config, on_sample=landed.set, clock=lambda: clock[0])
    advertisement.refresh_now()
    collector._collector = None  # every later collection raises
    for step in range(3):
        clock[0] = STALE_WARNING_SECONDS + 1 + 10 * step
        age_ms = wire.decode(advertisement.document()).sample_age_ms
        assert age_ms == int(clock[0] * 1000)
        landed.clear()
        advertisement.idle_sample(clock[0])
        assert landed.wait(5)  # the attempt ran, failed, and the old sample stays
    # While nobody asks, the next attempt is an idle one: a minute on, not a busy retry.
    assert advertisement.next_idle_sample_at() == clock[0] + IDLE_SAMPLE_SECONDS
    warnings = [r.getMessage() for r in caplog.records if "serving a stats sample" in r.getMessage()]
    expected = f"serving a stats sample {STALE_WARNING_SECONDS + 1:.0f} s old: the collector has not finished one since"
    assert warnings == [expected]


def test_a_daemon_idle_past_its_sample_answers_from_it_then_refreshes(conf_dir, daemons):
    daemon = daemons(write_conf(conf_dir, "SAMPLE_SECONDS = 0.2\n"), extra_args=["--debug"])
    before = len(daemon.wait_for(r"stats sample \d+ taken", count=2))
    time.sleep(1.0)  # five sample lifetimes: the old daemon held this client for a fresh sample
    first = valid(fetch(daemon.address)).sample_age_ms
    assert first >= 1000  # served from the stale sample, not after a fresh one
    daemon.wait_for(r"stats sample \d+ taken", count=before + 1)
    assert valid(fetch(daemon.address)).sample_age_ms < first
