"""The probe engine's state, apart from its I/O: the straggler rule and ProbeRound, by tables with a fake clock.

Plus the one I/O rule that needs its own process: a pool larger than the
open-file limit is probed in waves, and no live server is marked Down for it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fakeservers import document, send

from get_hosts import probe
from get_hosts.probe import (
    CONNECTING,
    GRACE_MAX_MS,
    READING,
    ProbeRound,
    grace_ms,
    straggler_cutoff,
)
from get_hosts.settings import PoolEntry

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 10.0  # the fake clock's deadline, seconds


@pytest.mark.parametrize(
    ("last_answer", "slowest_ms", "quorum_time", "expected"),
    [
        # no answer yet: only the deadline
        (None, None, None, DEADLINE),
        (None, None, 1.0, DEADLINE),
        # answers, but fewer than half settled: the longest grace after the latest answer
        (1.0, 5.0, None, 1.0 + GRACE_MAX_MS / 1000),
        (9.9, 5.0, None, DEADLINE),
        # half settled: 4 x slowest, clamped to 250..300 ms, from the later of answer and quorum
        (1.0, 5.0, 1.0, 1.25),
        (1.0, 50.0, 1.0, 1.25),  # 200 ms would cut a busy server's first answer: the floor
        (1.0, 70.0, 1.0, 1.28),
        (1.0, 1000.0, 1.0, 1.3),
        (1.0, 5.0, 2.0, 2.25),
        (3.0, 5.0, 2.0, 3.25),
        # never past the deadline, the floor included
        (9.9, 5.0, 9.9, DEADLINE),
        (9.99, 50.0, 9.99, DEADLINE),
    ],
)
def test_straggler_cutoff(last_answer, slowest_ms, quorum_time, expected):
    assert straggler_cutoff(last_answer, slowest_ms, quorum_time, DEADLINE) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("slowest", "grace"), [(0, 250), (1, 250), (50, 250), (62.5, 250), (70, 280), (75, 300), (1e9, 300)]
)
def test_grace_is_four_times_the_slowest_clamped(slowest, grace):
    assert grace_ms(slowest) == grace


def pool(n):
    return [PoolEntry(f"h{i}", f"h{i}", 377) for i in range(n)]


def test_a_round_follows_its_events_on_a_fake_clock():
    round_ = ProbeRound(pool(4), start=100.0, timeout_ms=1000)
    assert (round_.pending, round_.cutoff) == (4, 101.0)
    for index in range(3):
        round_.connected(index)
    round_.failed(3, "connect failed: Connection refused", now=100.001)
    assert round_.cutoff == 101.0  # a refusal is no answer: still the deadline
    round_.answered(0, "stats0", now=100.010)
    # 2 of 4 settled: quorum at 100.010, grace 4 x 10 ms = 40 -> 250 ms
    assert round_.quorum_time == 100.010
    assert round_.cutoff == pytest.approx(100.260)
    round_.answered(1, "stats1", now=100.070)
    assert round_.cutoff == pytest.approx(100.070 + 0.280)  # 4 x 70 ms
    assert round_.grace_in_force(2) == pytest.approx(280)
    round_.give_up(2, READING, 12, now=100.350, grace=round_.grace_in_force(2))
    results = round_.results
    assert [r.stats for r in results] == ["stats0", "stats1", None, None]
    assert results[0].response_ms == pytest.approx(10) and results[1].response_ms == pytest.approx(70)
    assert results[2].error == (
        "no answer within the straggler grace: gave up at 350 ms, 280 ms after the last answer, "
        "while reading (12 bytes so far)"
    )
    assert round_.pending == 0


def test_without_the_straggler_rule_a_slow_server_gets_the_whole_deadline():
    round_ = ProbeRound(pool(3), start=0.0, timeout_ms=2000, straggler=False)
    round_.answered(0, "a", now=0.001)
    round_.answered(1, "b", now=0.002)
    assert round_.cutoff == 2.0 and round_.grace_in_force(2) is None
    round_.give_up(2, CONNECTING, 0, now=2.0, grace=round_.grace_in_force(2))
    assert round_.results[2].error == "timed out after 2000 ms while connecting"


def test_a_busy_server_answering_after_its_idle_peers_is_waited_for():
    # Three idle servers answer at once; the fourth, busy and cold, takes
    # 200 ms more (a daemon that samples before its first answer, on a
    # loaded machine: see GRACE_MIN_MS). 4 x 5 ms would have given it 75 ms.
    round_ = ProbeRound(pool(4), start=0.0, timeout_ms=1000)
    for index in range(4):
        round_.connected(index)
    for index in range(3):
        round_.answered(index, f"idle{index}", now=0.005)
    assert round_.cutoff == pytest.approx(0.255)
    round_.answered(3, "busy", now=0.205)
    assert [r.error for r in round_.results] == [None] * 4


def test_a_minority_answering_gets_the_longest_grace():
    round_ = ProbeRound(pool(5), start=0.0, timeout_ms=5000)
    round_.answered(0, "a", now=0.002)
    assert round_.quorum_time is None
    assert round_.cutoff == pytest.approx(0.002 + GRACE_MAX_MS / 1000)


def test_a_pool_larger_than_the_open_file_limit_is_probed_in_waves(serve):
    servers = [serve(send(document(hostname=f"s{i}")), host=f"127.0.5.{i + 1}") for i in range(60)]
    pool_words = ", ".join(f"PoolEntry('{s.host}', '{s.host}', {s.port})" for s in servers)
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))\n"
        "from get_hosts.probe import probe_pool\n"
        "from get_hosts.settings import PoolEntry\n"
        f"results = probe_pool([{pool_words}], 3000)\n"
        "down = [r.error for r in results if r.stats is None]\n"
        "print(len(results) - len(down), down[:3])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "60 []"


def test_a_server_that_never_took_the_connection_gets_the_short_floor():
    # Powered off: no SYN-ACK. A live host accepts in well under a millisecond on a LAN,
    # so 75 ms after the peers answered it is not there; one that took the connection
    # (alive, maybe busy) keeps the 250 ms floor.
    round_ = ProbeRound(pool(4), start=0.0, timeout_ms=1000)
    for index in (0, 1, 2):
        round_.connected(index)
    round_.answered(0, "a", now=0.005)
    round_.answered(1, "b", now=0.005)
    assert round_.cutoff_for(3) == pytest.approx(0.080)  # unreached: 75 ms
    assert round_.cutoff_for(2) == pytest.approx(0.255)  # reached, silent so far: 250 ms
    assert round_.cutoff == pytest.approx(0.080)
    assert (round_.grace_in_force(3), round_.grace_in_force(2)) == (75, 250)
    round_.give_up(3, CONNECTING, 0, now=0.080, grace=round_.grace_in_force(3))
    assert round_.cutoff == pytest.approx(0.255)  # only the reached one is left
    assert round_.results[3].error.startswith("no answer within the straggler grace: gave up at 80 ms, 75 ms after")
    round_.answered(2, "c", now=0.200)
    assert round_.pending == 0 and round_.pending_reached == 0


@pytest.mark.parametrize(
    ("floor_ms", "expected"),
    [(probe.GRACE_MIN_MS, 0.255), (probe.GRACE_UNREACHED_MIN_MS, 0.080)],
)
def test_straggler_cutoff_floor(floor_ms, expected):
    assert straggler_cutoff(0.005, 5.0, 0.005, DEADLINE, floor_ms) == pytest.approx(expected)
