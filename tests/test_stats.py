"""Collecting the metrics, against real files.

psutil reads /proc through psutil.PROCFS_PATH, and so does stats.py, so these
tests build a fake /proc of real-format files in tmp_path and break one file
at a time: that metric must drop out with exactly one warning, the others
must stay. Sessions are counted from a fake logind directory of real-format
session files (and a real FIFO). Nothing is mocked but the clock of the swap
rate, which the collector takes as an argument.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os
import pathlib
import time

import psutil
import pytest
from ltsp_server_advertise import stats
from ltsp_server_advertise.rating import rate
from lxml import etree

from ltsp_lbcore import wire

SCHEMA = etree.RelaxNG(etree.parse(str(pathlib.Path(__file__).resolve().parent.parent / "docs" / "ltsp-server.rng")))
LOGGER = "ltsp_server_advertise.stats"
KIB = 1024
MIB = 2**20

# psutil picks /sys cpufreq over /proc/cpuinfo when the machine has it, and
# /sys cannot be pointed elsewhere: the cpuinfo tests only mean something here
# when it does not.
HAS_SYSFS_CPUFREQ = os.path.exists("/sys/devices/system/cpu/cpufreq/policy0") or os.path.exists(
    "/sys/devices/system/cpu/cpu0/cpufreq"
)
needs_cpuinfo_only = pytest.mark.skipif(HAS_SYSFS_CPUFREQ, reason="psutil reads CPU speed from /sys here")

MEMINFO = """\
MemTotal:       16318852 kB
MemFree:         1204480 kB
MemAvailable:   12058624 kB
Buffers:          345680 kB
Cached:          9543216 kB
SwapCached:        10240 kB
Active:          7216300 kB
Inactive:        6402812 kB
Active(anon):    3612304 kB
Inactive(anon):   512000 kB
Active(file):    3603996 kB
Inactive(file):  5890812 kB
Unevictable:           0 kB
Mlocked:               0 kB
SwapTotal:       2097148 kB
SwapFree:        1048572 kB
Dirty:               188 kB
Writeback:             0 kB
AnonPages:       3729628 kB
Mapped:           934720 kB
Shmem:            402112 kB
KReclaimable:     412576 kB
Slab:             612344 kB
SReclaimable:     412576 kB
SUnreclaim:       199768 kB
"""
MEM_TOTAL_BYTES = 16318852 * KIB
MEM_AVAILABLE_BYTES = 12058624 * KIB
SWAP_USED_BYTES = (2097148 - 1048572) * KIB

LOADAVG = "0.52 0.58 0.59 2/1024 12345\n"

BOOT_TIME = 1_700_000_000
STAT = f"""\
cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 0 0
intr 199292 0 0 0
ctxt 15836012
btime {BOOT_TIME}
processes 26442
procs_running 2
procs_blocked 0
softirq 5123 0 1234 0 456 0 0 789 0 0 2644
"""

CPUINFO_BLOCK = """\
processor\t: {n}
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
stepping\t: 4
cpu MHz\t\t: {mhz}
cache size\t: 28160 KB
flags\t\t: fpu vme de pse tsc msr pae mce cx8

"""
CPUINFO = CPUINFO_BLOCK.format(n=0, mhz="2394.374") + CPUINFO_BLOCK.format(n=1, mhz="2400.000")


def vmstat(pswpin=0, pswpout=0):
    return (
        "nr_free_pages 301120\nnr_zone_inactive_anon 128000\nnr_dirty 47\n"
        f"pgpgin 5123456\npgpgout 9876543\npswpin {pswpin}\npswpout {pswpout}\n"
        "pgalloc_dma 0\npgfault 123456789\n"
    )


SESSION_FILE = """\
# This is private data. Do not parse.
UID=1000
USER=alice
ACTIVE=1
IS_DISPLAY=0
STATE={state}
REMOTE=1
TYPE=unspecified
ORIGINAL_TYPE=unspecified
CLASS={session_class}
SCOPE=session-{id}.scope
FIFO=/run/systemd/sessions/{id}.ref
SERVICE=sshd
REMOTE_HOST=10.0.0.{id}
LEADER=12{id}
AUDIT={id}
REALTIME=1700000000000000
MONOTONIC=123456789
"""


TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
TCP_LINE = (
    "{sl:4d}: {local} {remote} {state} 00000000:00000000 02:000A7E39 00000000"
    "     0        0 3131{sl} 4 0 20 4 31 10 -1\n"
)
SSHD_LISTENING = {"local": "00000000:0016", "remote": "00000000:0000", "state": "0A"}
TCP6_SSHD_LISTENING = {"local": "0" * 32 + ":0016", "remote": "0" * 32 + ":0000", "state": "0A"}


def tcp_table(*rows):
    """/proc/net/tcp text: the header, then one line per row (local, remote, state)."""
    return TCP_HEADER + "".join(TCP_LINE.format(sl=n, **row) for n, row in enumerate(rows))


def ssh_client(n, state="01"):
    """An established connection from a thin client to this server's sshd (192.168.0.1:22)."""
    return {"local": "0100A8C0:0016", "remote": f"{100 + n:02X}00A8C0:{0xC350 + n:04X}", "state": state}


def ssh_client6(n):
    return {
        "local": "0000000000000000FFFF00000100A8C0:0016",
        "remote": f"0000000000000000FFFF0000{n:02X}00A8C0:C351",
        "state": "01",
    }


# This server's own ssh to another host: the local port is not 22.
OUTGOING_SSH = {"local": "0100A8C0:B2C4", "remote": "0200A8C0:0016", "state": "01"}
# Something else entirely, in TIME_WAIT.
UNRELATED = {"local": "0100007F:0277", "remote": "0100007F:E0F2", "state": "06"}


@pytest.fixture
def proc(tmp_path, monkeypatch):
    """A fake /proc with every file stats.py reads; monkeypatch restores PROCFS_PATH."""
    root = tmp_path / "proc"
    root.mkdir()
    (root / "net").mkdir()
    files = {
        "meminfo": MEMINFO,
        "loadavg": LOADAVG,
        "stat": STAT,
        "cpuinfo": CPUINFO,
        "vmstat": vmstat(),
        "net/tcp": tcp_table(SSHD_LISTENING, OUTGOING_SSH, UNRELATED),
        "net/tcp6": tcp_table(TCP6_SSHD_LISTENING),
    }
    for name, text in files.items():
        (root / name).write_text(text)
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(root))
    return root


@pytest.fixture
def sessions_dir(tmp_path):
    path = tmp_path / "sessions"
    path.mkdir()
    return path


def add_session(directory, session_id, session_class="user", state="active"):
    text = SESSION_FILE.format(id=session_id, session_class=session_class, state=state)
    (directory / str(session_id)).write_text(text)
    # logind's reference FIFO beside each session: reading it would block.
    os.mkfifo(directory / f"{session_id}.ref")


def warnings_of(caplog):
    return [record for record in caplog.records if record.name == LOGGER and record.levelno == logging.WARNING]


# --- the whole sample from a fake /proc ---------------------------------------


def test_every_metric_comes_from_the_fake_proc(proc, sessions_dir, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    add_session(sessions_dir, 3)
    collector = stats.StatsCollector(sessions_dir=str(sessions_dir), clock=lambda: 0.0)
    metrics = collector.collect(now=10.0)

    assert sorted(metrics) == sorted(stats.SAMPLE_KEYS)
    assert metrics["hostname"] == os.uname().nodename
    assert metrics["sessions"] == 1
    assert metrics["cpu_count"] == os.cpu_count()
    assert (metrics["load_1min"], metrics["load_5min"], metrics["load_15min"]) == (0.52, 0.58, 0.59)
    assert metrics["mem_total_bytes"] == MEM_TOTAL_BYTES
    assert metrics["mem_available_bytes"] == MEM_AVAILABLE_BYTES
    assert metrics["swap_used_bytes"] == SWAP_USED_BYTES
    assert metrics["swapping"] is False
    assert metrics["uptime_seconds"] == pytest.approx(time.time() - BOOT_TIME, abs=5)
    if not HAS_SYSFS_CPUFREQ:
        assert metrics["cpu_mhz"] == pytest.approx((2394.374 + 2400.0) / 2)  # the mean over CPUs
    assert warnings_of(caplog) == []


# --- one broken file: one metric gone, one warning --------------------------------

BROKEN = [
    # name, file, contents (None: missing), keys that must become None
    ("loadavg missing", "loadavg", None, {"load_1min", "load_5min", "load_15min"}),
    ("loadavg garbled", "loadavg", "high higher highest 1/2 3\n", {"load_1min", "load_5min", "load_15min"}),
    ("loadavg truncated", "loadavg", "0.52\n", {"load_1min", "load_5min", "load_15min"}),
    ("loadavg negative", "loadavg", "-1.0 0.5 0.5 1/2 3\n", {"load_1min", "load_5min", "load_15min"}),
    ("meminfo missing", "meminfo", None, {"mem_total_bytes", "mem_available_bytes", "swap_used_bytes"}),
    (
        "meminfo garbled",
        "meminfo",
        MEMINFO.replace("16318852 kB", "lots kB"),
        {"mem_total_bytes", "mem_available_bytes", "swap_used_bytes"},
    ),
    ("vmstat missing", "vmstat", None, {"swapping"}),
    ("vmstat without swap counters", "vmstat", "nr_free_pages 301120\npgfault 123\n", {"swapping"}),
    ("stat missing", "stat", None, {"uptime_seconds"}),
    ("stat without btime", "stat", STAT.replace("btime", "boottime"), {"uptime_seconds"}),
]
if not HAS_SYSFS_CPUFREQ:
    BROKEN += [
        ("cpuinfo missing", "cpuinfo", None, {"cpu_mhz"}),
        ("cpuinfo garbled", "cpuinfo", CPUINFO.replace("2400.000", "fast"), {"cpu_mhz"}),
        ("cpuinfo without MHz", "cpuinfo", CPUINFO.replace("cpu MHz", "bogomips"), {"cpu_mhz"}),
    ]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # psutil's own, for the vmstat cases
@pytest.mark.parametrize(("filename", "contents", "lost"), [row[1:] for row in BROKEN], ids=[row[0] for row in BROKEN])
def test_a_broken_file_loses_its_metric_with_one_warning(proc, sessions_dir, caplog, filename, contents, lost):
    caplog.set_level(logging.INFO, logger=LOGGER)
    good = (proc / filename).read_text()
    if contents is None:
        (proc / filename).unlink()
    else:
        (proc / filename).write_text(contents)
    collector = stats.StatsCollector(sessions_dir=str(sessions_dir), clock=lambda: 0.0)

    first, second = collector.collect(now=10.0), collector.collect(now=20.0)

    for metrics in (first, second):
        assert {key for key, value in metrics.items() if value is None} == lost
    warnings = warnings_of(caplog)
    assert len(warnings) == len({"swap_used_bytes"} & lost) + 1  # one per reader, not per sample
    assert all(key in "".join(record.getMessage() for record in warnings) for key in lost)

    (proc / filename).write_text(good)
    recovered = collector.collect(now=30.0)
    assert recovered["load_1min"] == 0.52 and recovered["mem_total_bytes"] == MEM_TOTAL_BYTES
    assert recovered["uptime_seconds"] is not None
    assert "can be read again" in caplog.text
    assert len(warnings_of(caplog)) == len(warnings)


def test_a_failing_metric_warns_again_after_it_recovered_and_broke_again(proc, sessions_dir, caplog):
    collector = stats.StatsCollector(sessions_dir=str(sessions_dir))
    (proc / "loadavg").unlink()
    collector.collect()
    (proc / "loadavg").write_text(LOADAVG)
    collector.collect()
    (proc / "loadavg").unlink()
    collector.collect()
    collector.collect()
    assert len(warnings_of(caplog)) == 2


def test_everything_broken_still_answers(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(tmp_path / "nothing"))
    collector = stats.StatsCollector(sessions_dir=str(tmp_path / "no-logind"), use_utmp=False)
    metrics = collector.collect()
    lost = {key for key, value in metrics.items() if value is None}
    # hostname and cpu_count come from uname and sysconf, not /proc.
    assert lost >= set(stats.METRIC_KEYS) - {"hostname", "cpu_count", "cpu_mhz"}
    document = wire.encode(stats.server_stats(metrics, state="ready", weight=100, sample_age_ms=0))
    assert SCHEMA.validate(etree.fromstring(document)), SCHEMA.error_log


@needs_cpuinfo_only
def test_cpu_speed_is_read_once_and_kept(proc, sessions_dir):
    collector = stats.StatsCollector(sessions_dir=str(sessions_dir))
    assert collector.collect()["cpu_mhz"] == pytest.approx(2397.187)
    (proc / "cpuinfo").write_text(CPUINFO.replace("2400.000", "800.000"))
    assert collector.collect()["cpu_mhz"] == pytest.approx(2397.187)
    assert stats.StatsCollector(sessions_dir=str(sessions_dir)).collect()["cpu_mhz"] == pytest.approx(1597.187)


# --- swapping: a rate between two samples, not swap used ----------------------------


def swap_collector(proc, pswpin=0, pswpout=0, **options):
    (proc / "vmstat").write_text(vmstat(pswpin, pswpout))
    return stats.StatsCollector(sessions_dir=None, clock=lambda: 0.0, **options)


def pages_for(rate_bytes_per_s, seconds):
    return int(rate_bytes_per_s * seconds) // mmap.PAGESIZE


def test_swap_in_use_but_no_paging_is_not_swapping(proc):
    collector = swap_collector(proc, 5000, 7000)
    metrics = collector.collect(now=10.0)
    assert metrics["swap_used_bytes"] > 0
    assert metrics["swapping"] is False


@pytest.mark.parametrize(
    ("direction", "factor", "swapping"),
    [("in", 2.0, True), ("out", 2.0, True), ("in", 0.5, False), ("out", 0.9, False)],
)
def test_paging_faster_than_the_threshold_is_swapping(proc, direction, factor, swapping):
    threshold = stats.DEFAULT_SWAP_RATE_THRESHOLD_BYTES_PER_S
    collector = swap_collector(proc, 1000, 1000)
    moved = pages_for(threshold * factor, 10.0)
    counters = (1000 + moved, 1000) if direction == "in" else (1000, 1000 + moved)
    (proc / "vmstat").write_text(vmstat(*counters))
    assert collector.collect(now=10.0)["swapping"] is swapping


def test_swapping_stops_when_paging_stops(proc):
    collector = swap_collector(proc)
    burst = pages_for(10 * MIB, 5.0)
    (proc / "vmstat").write_text(vmstat(burst, 0))
    assert collector.collect(now=5.0)["swapping"] is True
    assert collector.collect(now=10.0)["swapping"] is False  # same counters: nothing moved since


def test_the_first_collect_already_has_a_rate(proc):
    collector = swap_collector(proc)
    (proc / "vmstat").write_text(vmstat(0, pages_for(4 * MIB, 2.0)))
    assert collector.collect(now=2.0)["swapping"] is True


def test_samples_close_together_do_not_turn_one_page_into_a_storm(proc):
    collector = swap_collector(proc)
    (proc / "vmstat").write_text(vmstat(1, 0))  # one page in one millisecond
    assert collector.collect(now=0.001)["swapping"] is None  # too soon to tell
    # A real burst in that millisecond is certainly swapping...
    (proc / "vmstat").write_text(vmstat(pages_for(2 * MIB, 1.0), 0))
    assert collector.collect(now=0.002)["swapping"] is True
    # ...and the window kept its start, so the pages moved since 0 still count.
    assert collector.collect(now=0.5)["swapping"] is True
    assert collector.collect(now=1.0)["swapping"] is True  # the first full window
    # A quick sample after a full window repeats that window's verdict.
    assert collector.collect(now=1.001)["swapping"] is True
    assert collector.collect(now=2.5)["swapping"] is False  # nothing moved since 1.0
    assert collector.collect(now=2.501)["swapping"] is False


def test_counters_going_back_start_a_new_window(proc):
    collector = swap_collector(proc, 10**6, 10**6)
    (proc / "vmstat").write_text(vmstat(5, 5))
    assert collector.collect(now=10.0)["swapping"] is None
    (proc / "vmstat").write_text(vmstat(5 + pages_for(4 * MIB, 10.0), 5))
    assert collector.collect(now=20.0)["swapping"] is True


def test_threshold_is_configurable(proc):
    collector = swap_collector(proc, swap_rate_threshold_bytes_per_s=0)
    (proc / "vmstat").write_text(vmstat(1, 0))
    assert collector.collect(now=10.0)["swapping"] is True


@pytest.mark.parametrize("threshold", [-1, float("nan"), float("inf"), "1M", True])
def test_a_bad_threshold_is_refused_with_its_value(threshold):
    with pytest.raises(ValueError, match=r"swap_rate_threshold_bytes_per_s .*\(got "):
        stats.StatsCollector(swap_rate_threshold_bytes_per_s=threshold)


# --- sessions -------------------------------------------------------------------------

SESSIONS = [
    # name, sessions as (class, state), expected count
    ("none", [], 0),
    ("one ssh login", [("user", "active")], 1),
    ("online but not in front", [("user", "online"), ("user", "active")], 2),
    ("logged out, processes linger", [("user", "closing"), ("user", "active")], 1),
    ("greeter and lock screen are not users", [("greeter", "online"), ("lock-screen", "online")], 0),
    ("cron and the user manager are not users", [("background", "active"), ("manager", "active")], 0),
    ("newer systemd user classes count", [("user-incomplete", "opening"), ("user-light", "active")], 2),
]


@pytest.mark.parametrize(("sessions", "expected"), [row[1:] for row in SESSIONS], ids=[row[0] for row in SESSIONS])
def test_logind_sessions_are_counted(sessions_dir, sessions, expected):
    for session_id, (session_class, state) in enumerate(sessions, start=1):
        add_session(sessions_dir, session_id, session_class, state)
    assert stats.count_logind_sessions(str(sessions_dir)) == expected


def test_a_login_counts_at_once_and_a_logout_at_once(proc, sessions_dir):
    collector = stats.StatsCollector(sessions_dir=str(sessions_dir))
    assert collector.collect()["sessions"] == 0
    add_session(sessions_dir, 7)
    assert collector.collect()["sessions"] == 1
    (sessions_dir / "7").unlink()
    assert collector.collect()["sessions"] == 0


def test_a_session_changing_state_is_seen_through_the_cache(sessions_dir):
    cache = {}
    add_session(sessions_dir, 3)
    add_session(sessions_dir, 4)
    assert stats.count_logind_sessions(str(sessions_dir), cache) == 2
    assert stats.count_logind_sessions(str(sessions_dir), cache) == 2
    # As logind does: write a new file beside it, rename it over the old one.
    temporary = sessions_dir / ".#3k2Jd8"
    temporary.write_text(SESSION_FILE.format(id=3, session_class="user", state="closing"))
    os.replace(temporary, sessions_dir / "3")
    assert stats.count_logind_sessions(str(sessions_dir), cache) == 1
    (sessions_dir / "4").unlink()
    assert stats.count_logind_sessions(str(sessions_dir), cache) == 0
    assert cache.keys() == {"3"}


def test_logind_temporary_files_and_odd_files_are_not_sessions(sessions_dir):
    add_session(sessions_dir, 3)
    # logind writes an update to a hidden temporary file, then renames it.
    (sessions_dir / ".#3Xa1b2c").write_text(SESSION_FILE.format(id=3, session_class="user", state="active"))
    (sessions_dir / "subdir").mkdir()
    (sessions_dir / "4").write_text("# no class written: pam_systemd's default, user\nSTATE=active\n")
    (sessions_dir / "5").write_bytes(b"\xff\xfe not text at all")
    assert stats.count_logind_sessions(str(sessions_dir)) == 3


def test_no_user_name_leaves_the_module(proc, sessions_dir, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    add_session(sessions_dir, 3)
    metrics = stats.StatsCollector(sessions_dir=str(sessions_dir)).collect()
    document = wire.encode(stats.server_stats(metrics, state="ready", weight=100, sample_age_ms=0))
    assert b"alice" not in document
    assert "alice" not in caplog.text


def test_without_logind_sessions_come_from_utmp(proc, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    collector = stats.StatsCollector(sessions_dir=str(tmp_path / "no-logind"))
    assert collector.collect()["sessions"] == stats.count_utmp_sessions(psutil.users())
    assert "counting sessions from utmp" in caplog.text
    assert warnings_of(caplog) == []


def test_without_logind_and_without_utmp_fallback_sessions_are_unknown(proc, tmp_path, caplog):
    collector = stats.StatsCollector(sessions_dir=str(tmp_path / "no-logind"), use_utmp=False)
    assert collector.collect()["sessions"] is None
    assert collector.collect()["sessions"] is None
    assert len(warnings_of(caplog)) == 1
    assert "sessions" in warnings_of(caplog)[0].getMessage()


suser = collections.namedtuple("suser", "name terminal host started pid")  # psutil.users()'s fields


def test_utmp_entries_count_once_per_user_terminal_and_host():
    users = [
        suser("alice", "pts/0", "10.0.0.5", 1.0, 100),
        suser("alice", "pts/0", "10.0.0.5", 2.0, 101),  # same login seen twice
        suser("alice", "pts/1", "10.0.0.5", 3.0, 102),
        suser("bob", "pts/2", "10.0.0.6", 4.0, 103),
        suser("bob", ":0", None, 5.0, 104),
    ]
    assert stats.count_utmp_sessions(users) == 4
    assert stats.count_utmp_sessions([]) == 0


# --- the real machine ------------------------------------------------------------------


def test_the_real_machine_gives_plausible_values(caplog):
    collector = stats.StatsCollector()
    # Right after start the swap window is too short to say "not swapping".
    assert collector.collect()["swapping"] in (None, True)
    metrics = collector.collect(now=time.monotonic() + stats.MIN_SWAP_WINDOW_SECONDS)
    assert sorted(metrics) == sorted(stats.SAMPLE_KEYS)
    assert metrics["hostname"]
    assert metrics["cpu_count"] >= 1
    assert metrics["cpu_mhz"] is None or 100 < metrics["cpu_mhz"] < 10_000
    assert all(0 <= metrics[key] < 10_000 for key in ("load_1min", "load_5min", "load_15min"))
    assert metrics["mem_total_bytes"] >= 64 * MIB
    assert 0 < metrics["mem_available_bytes"] <= metrics["mem_total_bytes"]
    assert metrics["swap_used_bytes"] >= 0
    assert metrics["swapping"] in (True, False)
    assert metrics["sessions"] >= 0
    assert 0 < metrics["uptime_seconds"] < 100 * 365 * 86400
    assert warnings_of(caplog) == []


# --- into the wire record ------------------------------------------------------------


def test_server_stats_encodes_and_validates_against_the_schema():
    metrics = stats.StatsCollector().collect()
    record = stats.server_stats(metrics, state="ready", weight=150, sample_age_ms=42.7)
    document = wire.encode(record)
    assert SCHEMA.validate(etree.fromstring(document)), SCHEMA.error_log
    decoded = wire.decode(document)
    assert decoded.weight == 150 and decoded.sample_age_ms == 42 and decoded.state == "ready"
    assert decoded.sessions == metrics["sessions"] and decoded.mem_total_bytes == metrics["mem_total_bytes"]


def test_server_stats_rates_with_the_rating_function(proc, sessions_dir):
    add_session(sessions_dir, 1)
    metrics = stats.StatsCollector(sessions_dir=str(sessions_dir)).collect()
    budgets = dict(session_cpu_mhz=200, session_memory_bytes=256 * MIB)
    record = stats.server_stats(metrics, state="ready", weight=50, sample_age_ms=0, **budgets)
    expected = rate(
        state="ready",
        weight=50,
        **{key: metrics[key] for key in ("sessions", "cpu_count", "cpu_mhz", "load_1min")},
        mem_total_bytes=MEM_TOTAL_BYTES,
        mem_available_bytes=MEM_AVAILABLE_BYTES,
        **budgets,
    ).rating
    assert record.rating == expected > 0
    assert stats.server_stats(metrics, state="drain", weight=50, sample_age_ms=0).rating == 0


def test_server_stats_of_nothing_is_still_a_valid_document():
    record = stats.server_stats(dict.fromkeys(stats.METRIC_KEYS), state="maint", weight=100, sample_age_ms=0)
    assert record.hostname == stats.FALLBACK_HOSTNAME and record.rating == 0
    document = wire.encode(record)
    assert SCHEMA.validate(etree.fromstring(document)), SCHEMA.error_log
    assert wire.decode(document) == record


def test_own_cpuinfo_fallback_averages_and_refuses_what_has_no_speed(proc):
    # psutil.cpu_freq() fails on some sysfs trees; then stats.py reads cpuinfo itself.
    assert stats.read_cpuinfo_mhz() == pytest.approx((2394.374 + 2400.0) / 2)
    (proc / "cpuinfo").write_text(CPUINFO.replace("cpu MHz", "bogomips"))
    with pytest.raises(ValueError, match="no 'cpu MHz'"):
        stats.read_cpuinfo_mhz()


# --- logins in progress ------------------------------------------------------------


def test_connections_to_sshd_are_counted_v4_and_v6(proc):
    (proc / "net" / "tcp").write_text(
        tcp_table(
            SSHD_LISTENING,
            ssh_client(1),
            ssh_client(2),
            ssh_client(3, state="06"),
            ssh_client(5, state="08"),
            OUTGOING_SSH,
            UNRELATED,
        )
    )
    (proc / "net" / "tcp6").write_text(tcp_table(TCP6_SSHD_LISTENING, ssh_client6(4)))
    # Established ones, and TIME_WAIT ones apart (sshd closed it first: a login ended
    # at once); listening, CLOSE_WAIT, outgoing and other ports do not count.
    assert stats.count_login_connections(22) == (3, 1)
    assert stats.count_login_connections(2222) == (0, 0)


def test_no_tcp6_table_counts_ipv4_alone(proc):
    (proc / "net" / "tcp").write_text(tcp_table(ssh_client(1)))
    (proc / "net" / "tcp6").unlink()
    assert stats.count_login_connections(22) == (1, 0)


def test_a_login_counts_from_its_ssh_connection_before_logind_knows_it(proc, sessions_dir, caplog):
    collector = stats.StatsCollector(sessions_dir=str(sessions_dir))
    add_session(sessions_dir, 1)  # an sshd session: its connection is ssh_client(1)
    (proc / "net" / "tcp").write_text(tcp_table(SSHD_LISTENING, ssh_client(1)))
    assert collector.collect()["sessions"] == 1
    # Two more thin clients connect: their desktops are seconds away.
    (proc / "net" / "tcp").write_text(tcp_table(SSHD_LISTENING, ssh_client(1), ssh_client(2), ssh_client(3)))
    assert collector.collect()["sessions"] == 3
    # One of them gets its logind session: still three, not four.
    add_session(sessions_dir, 2)
    assert collector.collect()["sessions"] == 3
    assert warnings_of(caplog) == []


def test_local_sessions_and_ssh_logins_add_up(proc, sessions_dir):
    add_session(sessions_dir, 1, "user", "active")
    local = (sessions_dir / "1").read_text().replace("SERVICE=sshd", "SERVICE=gdm-password")
    (sessions_dir / "1").write_text(local)
    (proc / "net" / "tcp").write_text(tcp_table(ssh_client(1)))
    assert stats.StatsCollector(sessions_dir=str(sessions_dir)).collect()["sessions"] == 2


def test_unreadable_tcp_table_counts_no_logins_in_progress_with_one_warning(proc, sessions_dir, caplog):
    add_session(sessions_dir, 1)
    (proc / "net" / "tcp").unlink()
    collector = stats.StatsCollector(sessions_dir=str(sessions_dir))
    assert collector.collect()["sessions"] == 1
    assert collector.collect()["sessions"] == 1
    assert len(warnings_of(caplog)) == 1
    assert "logins in progress" in warnings_of(caplog)[0].getMessage()


def test_ssh_port_none_counts_sessions_alone(proc, sessions_dir):
    (proc / "net" / "tcp").write_text(tcp_table(ssh_client(1), ssh_client(2)))
    assert stats.StatsCollector(sessions_dir=str(sessions_dir), ssh_port=None).collect()["sessions"] == 0


def test_logins_sshd_closed_at_once_weigh_in_the_rating_but_are_not_sessions():
    metrics = dict.fromkeys(stats.SAMPLE_KEYS)
    metrics.update(
        hostname="app",
        sessions=2,
        cpu_count=8,
        cpu_mhz=3000.0,
        load_1min=0.0,
        mem_total_bytes=64 << 30,
        mem_available_bytes=60 << 30,
    )
    healthy = stats.server_stats(dict(metrics, closed_logins=0), state="ready", weight=100, sample_age_ms=0)
    closing = stats.server_stats(dict(metrics, closed_logins=10), state="ready", weight=100, sample_age_ms=0)
    assert healthy.sessions == closing.sessions == 2
    assert closing.rating == pytest.approx(healthy.rating - 10)
