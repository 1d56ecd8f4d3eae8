"""The balancer's pool on a fake clock: login accounting, choosing, restricting, and the answers.

Pure: ltsp_loadbalancer.pool.Pool and balancer.Balancer with ProbeResults made
here, times given by the test. The real process is in test_loadbalancer.py.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from fakeservers import stats
from ltsp_loadbalancer import config as balancer_config
from ltsp_loadbalancer.balancer import Balancer
from ltsp_loadbalancer.pool import Pool

from get_hosts.probe import ProbeResult
from get_hosts.settings import PoolEntry


def entries(*hosts):
    return [PoolEntry(host, host, 377) for host in hosts]


def up(entry, sessions=0, capacity=10.0, **overrides):
    """A ready server with SESSIONS of CAPACITY used (rating = capacity - sessions)."""
    fields = dict(sessions=sessions, capacity=capacity, rating=max(0.0, capacity - sessions), sample_age_ms=0)
    fields.update(overrides)
    return ProbeResult(entry, stats(**fields), 2.0, None)


def down(entry, error="connect failed: Connection refused"):
    return ProbeResult(entry, None, None, error)


def test_every_login_counts_at_once_so_a_burst_between_polls_lands_evenly():
    pool = Pool(entries("a", "b", "c"), random.Random(1))
    pool.update([up(s.entry) for s in pool.servers], now=0.0)
    firsts = Counter(pool.servers[pool.choose(now=0.1 + i * 0.001)[0]].entry.host for i in range(30))
    # No new figures for 30 logins: accounting alone spreads them, 10 each.
    assert firsts == {"a": 10, "b": 10, "c": 10}
    assert [len(s.pending) for s in pool.servers] == [10, 10, 10]


def test_a_login_settles_when_the_servers_own_figures_show_it():
    [a] = pool_entries = entries("a")
    pool = Pool(pool_entries, random.Random(1))
    pool.update([up(a, sessions=0)], now=0.0)
    pool.choose(now=0.5)
    pool.choose(now=0.6)
    assert len(pool.servers[0].pending) == 2
    # A sample taken at 1.0 s shows one more session: the older login settles.
    pool.update([up(a, sessions=1, sample_age_ms=1000)], now=2.0)
    assert list(pool.servers[0].pending) == [0.6]
    # A sample taken before the second hand-out cannot show it, however much it grew.
    pool.update([up(a, sessions=3, sample_age_ms=1500)], now=2.0)
    assert list(pool.servers[0].pending) == [0.6]
    pool.update([up(a, sessions=4, sample_age_ms=0)], now=2.1)
    assert list(pool.servers[0].pending) == []


def test_a_login_that_never_came_expires_after_the_window():
    [a] = pool_entries = entries("a")
    pool = Pool(pool_entries, random.Random(1), login_window_seconds=30)
    pool.update([up(a)], now=0.0)
    pool.choose(now=1.0)
    pool.update([up(a)], now=30.0)
    assert len(pool.servers[0].pending) == 1
    pool.update([up(a)], now=31.5)
    assert len(pool.servers[0].pending) == 0


def test_accounting_turns_a_full_server_into_a_last_resort():
    a, b = pool_entries = entries("a", "b")
    pool = Pool(pool_entries, random.Random(1))
    pool.update([up(a, sessions=9, capacity=10), up(b, sessions=99, capacity=100)], now=0.0)
    assert pool.servers[0].verdict.label == "Idle"
    pool.hand_out(0, now=0.1)  # a's last place
    assert pool.servers[0].verdict.label == "Busy"
    assert pool.choose(now=0.2) == [1, 0]  # b has room (rating 1): a only after it
    # Now both are full: the overflow still fills them evenly (a:b = 10:100), not all into one.
    overflow = Counter(pool.choose(now=0.3)[0] for _ in range(110))
    assert 9 <= overflow[0] <= 11 and overflow[0] + overflow[1] == 110, overflow


@pytest.mark.parametrize(
    ("result_of_b", "label"),
    [
        (lambda e: down(e), "Down"),
        (lambda e: up(e, state="drain", rating=0.0), "Drain"),
        (lambda e: up(e, swapping=True), "Swapped"),
    ],
)
def test_skipped_servers_are_never_named(result_of_b, label):
    a, b = pool_entries = entries("a", "b")
    pool = Pool(pool_entries, random.Random(1))
    pool.update([up(a), result_of_b(b)], now=0.0)
    assert all(pool.choose(now=0.1) == [0] for _ in range(20))
    assert pool.servers[1].verdict.label == label


def test_between_polls_logins_fill_servers_by_capacity_least_full_first():
    pool_entries = entries("small", "big", "mid")
    pool = Pool(pool_entries, random.Random(7))
    pool.update(
        [up(pool_entries[0], capacity=10), up(pool_entries[1], capacity=40), up(pool_entries[2], capacity=20)],
        now=0.0,
    )
    firsts = Counter()
    for _ in range(70):
        order = pool.choose(now=0.1)
        assert sorted(order) == [0, 1, 2]
        firsts[order[0]] += 1
    # 70 logins and no new figures: exactly 10:40:20, as full as each other.
    assert firsts == {0: 10, 1: 40, 2: 20}


def test_two_balancers_see_each_others_logins_in_the_growth_and_count_theirs_twice():
    a, b = pool_entries = entries("a", "b")
    pool = Pool(pool_entries, random.Random(1))
    pool.update([up(a, capacity=100), up(b, capacity=100)], now=0.0)
    sessions = {0: 0, 1: 0}
    for second in range(1, 12):
        for i in range(10):  # 10 logins a second from us...
            index = pool.choose(now=second - 1 + i / 10)[0]
            sessions[index] += 2  # ...and as many from another balancer, landing alike
        results = [up(e, sessions=sessions[n], capacity=100, sample_age_ms=0) for n, e in enumerate(pool_entries)]
        pool.update(results, now=float(second) + 1.0)  # the figures show logins a second late
    assert 1.7 <= pool.share_scale <= 2.3
    alone = Pool(pool_entries, random.Random(1))
    alone.update([up(a, capacity=100), up(b, capacity=100)], now=0.0)
    for second in range(1, 12):
        for i in range(10):
            alone.choose(now=second - 1 + i / 10)
        counts = [len(s.handed_out) for s in alone.servers]
        alone.update([up(e, sessions=counts[n], capacity=100) for n, e in enumerate(pool_entries)], now=second + 1.0)
    assert alone.share_scale == 1.0


def test_a_request_restricted_to_some_servers_gets_only_those_and_never_unknown_ones():
    pool = Pool(entries("a", "b", "c"), random.Random(1))
    pool.update([up(s.entry) for s in pool.servers], now=0.0)
    among = pool.known(["c", "B:377", "b:999", "evil.example", "[::1]:377", "not a host!"])
    assert among == [1, 2]
    for _ in range(20):
        assert set(pool.choose(now=0.1, among=among)) == {1, 2}


def make_balancer(servers="a b c", **overrides):
    config = balancer_config.SCHEMA.defaults()._replace(servers=balancer_config.servers(servers), **overrides)
    return Balancer(config, random.Random(3))


def test_balancer_answers_one_line_and_503_with_the_reason():
    balancer = make_balancer()
    assert balancer.hosts(None, now=0.0) == (None, "no poll has finished yet")
    pool_entries = balancer.entries
    balancer.polled(pool_entries, [up(pool_entries[0]), down(pool_entries[1]), up(pool_entries[2])], now=0.0)
    line, reason = balancer.hosts(None, now=0.1)
    assert reason is None and sorted(line.split(" ")) == ["a", "c"]
    assert balancer.hosts(["b"], now=0.2) == (None, "no usable server (1 Down)")
    assert balancer.hosts(["zzz"], now=0.2)[0] is None
    assert balancer.answers == {"ok": 1, "no_usable_server": 2, "unknown_servers": 1}


def test_results_of_a_replaced_pool_are_dropped_and_kept_servers_keep_their_state():
    balancer = make_balancer("a b")
    old = balancer.entries
    balancer.polled(old, [up(old[0]), up(old[1])], now=0.0)
    balancer.hosts(["a"], now=0.1)
    new_config = balancer.config._replace(servers=balancer_config.servers("a c"))
    balancer.reconfigure(new_config, now=0.2)
    assert [e.host for e in balancer.entries] == ["a", "c"]
    assert len(balancer.pool.servers[0].pending) == 1 and balancer.pool.servers[0].stats is not None
    balancer.polled(old, [down(old[0]), down(old[1])], now=0.3)  # a poll of the old pool finishing late
    assert balancer.pool.servers[0].stats is not None
    assert balancer.hosts(None, now=0.4)[0] == "a"  # c is not polled yet


def test_pool_view_names_every_server_with_its_state_and_accounting():
    balancer = make_balancer("a b")
    pool_entries = balancer.entries
    balancer.polled(pool_entries, [up(pool_entries[0], sessions=2), down(pool_entries[1])], now=10.0)
    balancer.hosts(None, now=10.5)
    view = balancer.pool_view(now=11.0)
    a, b = view["servers"]
    assert (a["host"], a["state"], a["sessions"], a["pending"], a["handed_out_5min"]) == ("a", "Idle", 2, 1, 1)
    assert a["sample_age_ms"] == 1000 and a["stats"]["capacity"] == 10.0
    assert (b["state"], b["usable"], b["reason"]) == ("Down", False, "connect failed: Connection refused")
    assert view["last_poll_age_ms"] == 1000 and view["polls"] == 1
