"""The rating formula of docs/PROTOCOL.md, as tables worked out by hand.

Each expected value was computed on paper from the formula, with the default
budgets (300 MHz and 400 MiB per session): S below is one session's memory.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ltsp_server_advertise.rating import (
    DEFAULT_SESSION_CPU_MHZ,
    DEFAULT_SESSION_MEMORY_BYTES,
    rate,
)

S = 400 * 2**20  # one session's memory budget, bytes

# An idle 16 x 3 GHz server with 200 S of RAM: CPU 160 sessions, memory 195.
IDLE_BIG = dict(
    state="ready",
    weight=100,
    sessions=0,
    cpu_count=16,
    cpu_mhz=3000,
    load_1min=0.0,
    mem_total_bytes=200 * S,
    mem_available_bytes=195 * S,
)


def case(base=IDLE_BIG, **changes):
    return {**base, **changes}


RATINGS = [
    # name, arguments, expected rating
    ("idle big server: CPU bound at 16*3000/300", case(), 160.0),
    (
        "small server: load 0.5*1500/300=2.5 beats 1 session; CPU 10-2.5 < memory 10-2",
        case(sessions=1, cpu_count=2, cpu_mhz=1500, load_1min=0.5, mem_total_bytes=10 * S, mem_available_bytes=8 * S),
        7.5,
    ),
    (
        "loaded: load 6*2400/300=48 beats 20 sessions; 64-48=16",
        case(
            sessions=20, cpu_count=8, cpu_mhz=2400, load_1min=6.0, mem_total_bytes=100 * S, mem_available_bytes=50 * S
        ),
        16.0,
    ),
    (
        "full: 40 sessions on 40 sessions of CPU",
        case(
            sessions=40, cpu_count=4, cpu_mhz=3000, load_1min=2.0, mem_total_bytes=100 * S, mem_available_bytes=90 * S
        ),
        0.0,
    ),
    (
        "over capacity clamps to 0, never negative",
        case(sessions=10, cpu_count=4, cpu_mhz=3000, load_1min=50.0),
        0.0,
    ),
    (
        "memory bound: 20 S total, 18 S used beats 10 sessions",
        case(sessions=10, cpu_count=32, mem_total_bytes=20 * S, mem_available_bytes=2 * S),
        2.0,
    ),
    (
        "memory use floored by sessions: 30 sessions, only 5 S measured",
        case(sessions=30, mem_total_bytes=100 * S, mem_available_bytes=95 * S),
        70.0,
    ),
    ("drain rates 0 however idle", case(state="drain"), 0.0),
    ("maint rates 0 however idle", case(state="maint"), 0.0),
    ("weight 50 halves", case(weight=50), 80.0),
    ("weight 200 doubles", case(weight=200), 320.0),
    ("weight 0 means take nothing", case(weight=0), 0.0),
    ("weight scales capacity, not spare: 160*50/100 - 40 sessions", case(weight=50, sessions=40), 40.0),
    ("weight 200 with 40 sessions: 320 - 40", case(weight=200, sessions=40), 280.0),
    ("weight 50 is full at half the hardware: 80 - 80", case(weight=50, sessions=80), 0.0),
    ("missing cpu_mhz: memory half alone, 200-5", case(cpu_mhz=None), 195.0),
    ("missing cpu_count: memory half alone", case(cpu_count=None), 195.0),
    ("missing mem_total: CPU half alone", case(mem_total_bytes=None), 160.0),
    ("missing mem_total and available: CPU half alone", case(mem_total_bytes=None, mem_available_bytes=None), 160.0),
    ("both halves missing rates 0", case(cpu_mhz=None, mem_total_bytes=None), 0.0),
    (
        "sessions unknown: load and memory still count, 64-48",
        case(sessions=None, cpu_count=8, cpu_mhz=2400, load_1min=6.0),
        16.0,
    ),
    (
        "sessions and load unknown: CPU use unknown, its half drops; memory 10-4",
        case(sessions=None, load_1min=None, mem_total_bytes=10 * S, mem_available_bytes=6 * S),
        6.0,
    ),
    (
        "nothing about use known: both halves drop, 0",
        case(sessions=None, load_1min=None, mem_available_bytes=None),
        0.0,
    ),
    (
        "load unknown, sessions known: sessions alone are CPU use, 160-12",
        case(sessions=12, load_1min=None),
        148.0,
    ),
    (
        "MemAvailable above MemTotal (garbled) invents no capacity",
        case(sessions=None, cpu_mhz=None, mem_total_bytes=10 * S, mem_available_bytes=12 * S),
        10.0,
    ),
    (
        "custom budgets 600 MHz / 800 MiB: CPU 80, memory 100-2.5",
        case(session_cpu_mhz=600, session_memory_bytes=2 * S),
        80.0,
    ),
    ("fractional: 3*1000/300=10 minus 1.5*1000/300=5", case(cpu_count=3, cpu_mhz=1000, load_1min=1.5), 5.0),
]


@pytest.mark.parametrize(("arguments", "expected"), [row[1:] for row in RATINGS], ids=[row[0] for row in RATINGS])
def test_rating_table(arguments, expected):
    assert rate(**arguments).rating == pytest.approx(expected)


@pytest.mark.parametrize(("sessions", "expected"), [(0, 40.0), (1, 39.0), (10, 30.0), (39, 1.0), (40, 0.0), (41, 0.0)])
def test_sessions_lower_rating_at_once_while_load_average_is_still_0(sessions, expected):
    # The load average lags a login storm by seconds; the session count must not.
    arguments = case(
        sessions=sessions,
        cpu_count=4,
        cpu_mhz=3000,
        load_1min=0.0,
        mem_total_bytes=100 * S,
        mem_available_bytes=100 * S,
    )
    assert rate(**arguments).rating == pytest.approx(expected)


def test_defaults_are_the_documented_budgets():
    assert DEFAULT_SESSION_CPU_MHZ == 300
    assert DEFAULT_SESSION_MEMORY_BYTES == 400 * 1024 * 1024


ERRORS = [
    # name, changes, exception, message
    ("negative cpu budget", dict(session_cpu_mhz=-1), ValueError, "session_cpu_mhz is not positive (got -1)"),
    ("zero cpu budget", dict(session_cpu_mhz=0), ValueError, "session_cpu_mhz is not positive (got 0)"),
    ("NaN cpu budget", dict(session_cpu_mhz=math.nan), ValueError, "session_cpu_mhz is not positive (got nan)"),
    ("infinite cpu budget", dict(session_cpu_mhz=math.inf), ValueError, "session_cpu_mhz is not finite (got inf)"),
    ("zero memory budget", dict(session_memory_bytes=0), ValueError, "session_memory_bytes is not positive (got 0)"),
    ("text budget", dict(session_memory_bytes="400M"), TypeError, "session_memory_bytes is not a number (got '400M')"),
    ("bool budget", dict(session_cpu_mhz=True), TypeError, "session_cpu_mhz is not a number (got True)"),
    ("unknown state", dict(state="Ready"), ValueError, "state is not one of ready, drain, maint (got 'Ready')"),
    ("negative weight", dict(weight=-5), ValueError, "weight is not a finite non-negative number (got -5)"),
    ("NaN load", dict(load_1min=math.nan), ValueError, "load_1min is not a finite non-negative number (got nan)"),
    ("negative sessions", dict(sessions=-1), ValueError, "sessions is not a finite non-negative number (got -1)"),
    ("bad budget while draining", dict(state="drain", session_cpu_mhz=-1), ValueError, "(got -1)"),
]


@pytest.mark.parametrize(("changes", "error", "message"), [row[1:] for row in ERRORS], ids=[row[0] for row in ERRORS])
def test_bad_arguments_name_the_value(changes, error, message):
    with pytest.raises(error) as raised:
        rate(**case(**changes))
    assert message in str(raised.value)


metric = st.one_of(st.none(), st.floats(min_value=0, max_value=1e6))


@given(
    sessions=st.one_of(st.none(), st.integers(min_value=0, max_value=10_000)),
    cpu_count=st.one_of(st.none(), st.integers(min_value=0, max_value=1024)),
    cpu_mhz=metric,
    load_1min=metric,
    mem_total_bytes=st.one_of(st.none(), st.integers(min_value=0, max_value=2**50)),
    mem_available_bytes=st.one_of(st.none(), st.integers(min_value=0, max_value=2**50)),
    weight=st.integers(min_value=0, max_value=10_000),
)
def test_rating_is_finite_non_negative_and_one_more_session_never_raises_it(sessions, weight, **metrics):
    arguments = dict(state="ready", weight=weight, sessions=sessions, **metrics)
    rating = rate(**arguments).rating
    assert 0.0 <= rating < math.inf
    if sessions is not None:
        assert rate(**{**arguments, "sessions": sessions + 1}).rating <= rating
    capacity = rate(**arguments).capacity
    assert (capacity is None and rating == 0.0) or rating <= capacity


CAPACITIES = [
    ("idle big server: CPU bound", case(), 160.0),
    ("capacity ignores use: 150 sessions", case(sessions=150, load_1min=40.0), 160.0),
    ("draining still has a capacity", case(state="drain"), 160.0),
    ("weight scales it", case(weight=50), 80.0),
    ("memory bound", case(cpu_count=32, mem_total_bytes=20 * S), 20.0),
    ("same halves as the rating: CPU use unknown, memory alone", case(sessions=None, load_1min=None), 200.0),
    ("nothing known", case(cpu_mhz=None, mem_total_bytes=None), None),
]


@pytest.mark.parametrize(("arguments", "expected"), [row[1:] for row in CAPACITIES], ids=[row[0] for row in CAPACITIES])
def test_capacity(arguments, expected):
    assert rate(**arguments).capacity == expected
