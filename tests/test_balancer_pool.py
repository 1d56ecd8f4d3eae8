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
from ltsp_loadbalancer import query
from ltsp_loadbalancer.balancer import Balancer
from ltsp_loadbalancer.pool import DEFAULT_LIMITS, NO_ASK, ORDERED_BY_REQUEST, Ask, Limits, Pool

from get_hosts import choose
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


# --- outlier ejection (ejection.py) on a fake clock ----------------------------------------------------


class Site:
    """A pool on a fake clock, with people behind the logins.

    A login handed to a working server becomes a session DELAY s later (ssh, then the desktop); one handed
    to a BROKEN server never does. Polls every POLL s, each sample fresh. ``uses`` (rng -> bool) says
    whether a login handed out is used at all (a greeter nobody sits at). Other balancers: OTHERS logins
    of theirs (other people) for each of ours, on working servers at random (a broken one is out there:
    their own clients reported it); ELSEWHERE, the chance that our client takes another replica's answer
    (get_hosts asks them all), a host of our answer at random: that replica saw other figures.
    """

    def __init__(
        self,
        hosts="a b c d",
        broken=(),
        delay=4.0,
        poll=2.0,
        capacity=100.0,
        sessions=0,
        seed=1,
        others=0,
        elsewhere=0.0,
    ):
        self.pool = Pool(entries(*hosts.split()), random.Random(seed), login_window_seconds=30)
        self.others, self.elsewhere = others, elsewhere
        self.names = hosts.split()
        self.broken = {self.names.index(host) for host in broken}
        self.delay, self.poll_seconds, self.capacity = delay, poll, capacity
        self.sessions = dict.fromkeys(range(len(self.names)), sessions)
        self.arriving = []  # (time, server index)
        self.leaving = []  # (time, server index)
        self.rng = random.Random(seed)
        self.now = 0.0
        self.next_poll = 0.0
        self.poll()

    def poll(self):
        for queue, step in ((self.arriving, 1), (self.leaving, -1)):
            for item in [item for item in queue if item[0] <= self.now]:
                queue.remove(item)
                self.sessions[item[1]] += step
        results = [
            up(server.entry, sessions=self.sessions[i], capacity=self.capacity)
            for i, server in enumerate(self.pool.servers)
        ]
        self.pool.update(results, self.now)
        self.next_poll = self.now + self.poll_seconds

    def login(self, peer=None, uses=True, among=None):
        order = self.pool.choose(self.now, among=among, peer=peer)
        if order and uses:
            lands = order[0]
            if self.elsewhere and self.rng.random() < self.elsewhere:
                lands = self.rng.choice(order)
            if lands not in self.broken:
                self.arriving.append((self.now + self.delay, lands))
        working = [index for index in range(len(self.names)) if index not in self.broken]
        for _ in range(self.others):
            self.arriving.append((self.now + self.delay, self.rng.choice(working)))
        return order

    def run(self, seconds, per_second=0.0, uses=lambda rng: True):
        """SECONDS of logins at PER_SECOND, polls on time. Returns the first host of each answer."""
        firsts = []
        end = self.now + seconds
        gap = 1.0 / per_second if per_second else None
        next_login = self.now if gap else float("inf")
        while self.now < end:
            self.now = min(self.next_poll, next_login, end)
            if self.now >= self.next_poll:
                self.poll()
            if self.now >= next_login:
                firsts.append(self.names[self.login(uses=uses(self.rng))[0]])
                next_login += gap
        return firsts

    def state(self, host):
        return self.pool.servers[self.names.index(host)].verdict.label

    def health(self, host):
        return self.pool.outliers.health[self.names.index(host)]


def ejection_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name.endswith("ejection") and r.levelno >= 30]


def test_a_server_whose_logins_never_become_sessions_is_ejected_while_the_others_confirm(caplog):
    site = Site(broken=["b"])
    firsts = site.run(45, per_second=2)
    assert site.state("b") == "Failing" and site.health("b").mode == "ejected"
    assert [site.state(h) for h in "acd"] == ["Idle"] * 3
    (line,) = ejection_lines(caplog)
    assert line.startswith("ejected b for 30 s (1st ejection in the last hour): 4 logins in a row never became")
    assert line.endswith("within 30 s while 51 of 51 logins elsewhere did")
    reason = site.pool.servers[1].verdict.reason
    assert reason.startswith("ejected for ") and "never became sessions" in reason
    # Ejected at the first expiries (30 s after the storm began), then no login goes there.
    ejected_at = site.health("b").ejections[0]
    assert 30 <= ejected_at <= 40
    assert firsts[int(ejected_at * 2) + 1 :].count("b") == 0


@pytest.mark.parametrize(
    ("case", "broken", "uses"),
    [
        # The whole site slow (or nobody logs in): every login expires, none anywhere confirms.
        ("nobody confirms", "a b c d", lambda rng: True),
        # Greeters nobody sits at: one login in ten is used, anywhere; long streaks are normal then.
        ("mostly idle greeters", "", lambda rng: rng.random() < 0.1),
    ],
)
def test_no_ejection_when_unconfirmed_logins_are_not_one_servers_trait(caplog, case, broken, uses):
    site = Site(broken=broken.split())
    site.run(600, per_second=1, uses=uses)
    assert not site.pool.outliers.out, case
    assert not ejection_lines(caplog), case


def test_people_logging_out_hide_logins_so_those_expiries_are_no_evidence(caplog):
    # A class leaves b (2 a second) while the next one logs in: b's sessions never grow, so no login there
    # is confirmed, yet every one of them became a session.
    site = Site(hosts="a b", sessions=40)
    site.sessions[1] = 80
    site.leaving.extend((second / 2, 1) for second in range(80))
    firsts = site.run(75, per_second=2)
    assert firsts.count("b") > 40
    assert not site.pool.outliers.out and not ejection_lines(caplog)


# The same healthy pool for both: 10 servers, 10 logins a second for 30 s, each seen 1 s after the hand-out,
# every client asking 3 replicas and taking another one's answer 2 times in 3.
ASK_ALL = dict(hosts=" ".join(f"s{i}" for i in range(10)), delay=1.0, elsewhere=2 / 3)


@pytest.mark.parametrize(
    ("case", "site", "ejected"),
    [
        # Alone: b's unconfirmed logins eject it, as ever.
        ("alone, b broken", dict(broken=["b"]), "b"),
        # Two other balancers' clients, twice ours: the share estimate says about 3, b's expiries prove nothing.
        ("three balancers, b broken", dict(broken=["b"], others=2), ""),
        # Every client asks 3 replicas: the pool grows by our hand-outs (share 1), but a third of them only
        # are used; the sessions that came from no login of ours cancel the expiries.
        ("every client asks 3 replicas, healthy", ASK_ALL, ""),
    ],
)
def test_unconfirmed_logins_eject_only_a_balancer_alone_and_reports_eject_beside_others(caplog, case, site, ejected):
    site = Site(**site)
    many = len(site.names) > 4
    site.run(30 if many else 120, per_second=10 if many else 2)
    alone = not site.pool.outliers.others_share
    assert alone == (site.pool.share_scale == 1.0) and alone == ("three" not in case), case
    site.run(40)  # the last logins expire
    assert sorted(site.names[i] for i in site.pool.outliers.out) == ejected.split(), case
    assert {line.split()[1] for line in ejection_lines(caplog)} == set(ejected.split()), case
    if ejected:
        return
    # Beside other balancers the clients' reports still eject: two of them, as alone.
    site.pool.report([1], "10.0.0.1", site.now)
    site.pool.report([1], "10.0.0.2", site.now)
    assert site.pool.outliers.health[1].mode == "ejected", case
    (line,) = ejection_lines(caplog)
    assert line.endswith("2 clients reported their login there failed within 60 s"), case


def test_without_counting_others_sessions_a_replica_asked_by_every_client_ejects_healthy_servers(caplog):
    # What the unexplained sessions are for: the healthy pool above, the balancer blind to them.
    site = Site(**ASK_ALL)
    site.pool.outliers.unexplained = lambda sessions, now: None
    site.run(30, per_second=10)
    site.run(40)
    assert site.pool.outliers.out
    assert "never became sessions" in ejection_lines(caplog)[0]


def test_each_session_from_no_login_of_ours_cancels_one_expiry_and_others_share_cancels_them_all(caplog):
    from ltsp_loadbalancer.ejection import Outliers

    def run(unexplained, others_share=False):
        outliers = Outliers(["a", "b", "c"])
        for index in range(3):
            outliers.set_usable(index, True)
        outliers.others_share = others_share
        outliers.confirmed(0, 200, now=1.0)
        outliers.unexplained(unexplained, now=1.0)
        return [outliers.expired(1, [t], now=31.0 + t) for t in (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)]

    # Alone, the 3rd expiry in a row ejects (200 of 200 confirmed elsewhere); 2.9 sessions cancel 2.
    assert run(0.0) == [False, False, True, False, False, False]
    assert run(2.9) == [False, False, False, False, True, False]
    assert run(6.0) == [False] * 6
    assert run(0.0, others_share=True) == [False] * 6
    lines = ejection_lines(caplog)
    assert len(lines) == 2
    assert lines[0].endswith(
        "3 logins in a row never became sessions within 30 s while 200 of 200 logins elsewhere did"
    )
    assert lines[1].endswith(
        "5 logins in a row never became sessions within 30 s while 200 of 200 logins elsewhere did, "
        "less 2 sessions that came from no login of ours"
    )


def report(outliers, index, peers, now):
    return [outliers.reported(index, peer, now) for peer in peers]


def usable_outliers(count):
    from ltsp_loadbalancer.ejection import Outliers

    outliers = Outliers([f"s{i}" for i in range(count)])
    for index in range(count):
        outliers.set_usable(index, True)
    return outliers


def test_one_client_reporting_a_thousand_times_is_one_report_and_two_clients_eject(caplog):
    outliers = usable_outliers(4)
    assert not any(report(outliers, 0, ["10.0.0.7"] * 1000, now=5.0))
    assert outliers.health[0].mode == "serving" and len(outliers.health[0].reporters) == 1
    # A second client, more than a minute after the first: the first one's report is too old.
    assert report(outliers, 0, ["10.0.0.8"], now=66.0) == [False]
    assert report(outliers, 0, ["10.0.0.9"], now=70.0) == [True]
    assert outliers.health[0].mode == "ejected"
    assert ejection_lines(caplog) == [
        "ejected s0 for 30 s (1st ejection in the last hour): 2 clients reported their login there failed within 60 s"
    ]


def test_reporters_are_bounded_per_server_and_one_line_says_the_cap_held_it(caplog):
    outliers = usable_outliers(1)  # half of one server is none: never ejected
    assert not any(report(outliers, 0, [f"10.1.{i // 250}.{i % 250}" for i in range(10_000)], now=1.0))
    assert len(outliers.health[0].reporters) == 32
    (line,) = ejection_lines(caplog)
    assert line.startswith("s0 not ejected: 0 of 1 usable servers are out already (at most half")


@pytest.mark.parametrize(
    ("usable", "accused", "ejected"),
    [(1, 1, 0), (2, 2, 1), (3, 3, 1), (4, 3, 2), (5, 5, 2), (10, 10, 5)],
)
def test_never_more_than_half_of_the_usable_pool_is_out(usable, accused, ejected):
    outliers = usable_outliers(usable + 2)
    for index in (usable, usable + 1):  # Down or drained: not usable, not counted
        outliers.set_usable(index, False)
    for index in range(accused):
        report(outliers, index, ["10.0.0.1", "10.0.0.2"], now=1.0)
    assert len(outliers.out) == ejected


def test_each_ejection_lasts_longer_up_to_five_minutes_then_the_count_decays():
    outliers = usable_outliers(4)
    now, lengths = 0.0, []
    for n in range(12):
        report(outliers, 0, [f"10.0.{n}.1", f"10.0.{n}.2"], now)
        health = outliers.health[0]
        if health.mode == "half-open":  # the client of a trial login says it failed
            outliers.handed_out(0, "trial", now)
            outliers.reported(0, "trial", now)
        assert health.mode == "ejected"
        lengths.append(health.ejected_until - now)
        now = health.ejected_until
        assert outliers.tick(now - 0.001) == [] and outliers.tick(now) == [0]
        assert health.mode == "half-open"
    assert lengths == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]
    # An hour with no ejection: the next one is short again.
    now += 3601
    outliers.handed_out(0, "trial", now)
    outliers.confirmed(0, 1, now)
    report(outliers, 0, ["10.9.0.1", "10.9.0.2"], now)
    assert outliers.health[0].ejected_until - now == 30


def test_half_open_gets_a_trickle_and_a_login_that_becomes_a_session_restores_it(caplog):
    site = Site()
    site.pool.report([1], "10.0.0.1", site.now)
    site.pool.report([1], "10.0.0.2", site.now)
    assert site.state("b") == "Failing"
    firsts = site.run(29.9, per_second=2)
    assert "b" not in firsts
    # Half-open after 30 s: b is the emptiest, yet it gets one login per 10 s, and the others the rest.
    site.broken = {1}  # still broken: its trials never become sessions
    firsts = site.run(15, per_second=4)
    assert firsts.count("b") == 2 and site.health("b").mode == "half-open"
    assert site.state("b") == "Failing" and "half-open" in site.pool.servers[1].verdict.reason
    # Repaired: the next trial (at 50 s) becomes a session at the poll after it lands, and b is back.
    site.broken = set()
    site.run(12, per_second=4)
    assert site.health("b").mode == "serving" and site.state("b") == "Idle"
    assert ejection_lines(caplog)[-1].startswith("b is back in service: a login there became a session (out ")


def test_a_half_open_trial_that_never_becomes_a_session_ejects_it_again_for_longer(caplog):
    site = Site(broken=["b"])
    site.run(45, per_second=2)
    assert site.health("b").mode == "ejected"
    site.run(120, per_second=2)
    lines = ejection_lines(caplog)
    assert lines[0].startswith("ejected b for 30 s (1st")
    assert lines[1].startswith("ejected b for 60 s (2nd ejection in the last hour): 1 trial logins never became")
    assert site.state("b") == "Failing"


def test_failed_host_goes_last_and_an_ejected_one_is_named_when_nothing_else_is_left():
    balancer = make_balancer("a b c")
    pool_entries = balancer.entries
    balancer.polled(pool_entries, [up(e) for e in pool_entries], now=0.0)
    for _ in range(20):
        line, _ = balancer.hosts(None, now=0.1, failed=["a"], peer="10.0.0.1")
        assert line.split()[-1] == "a"
    assert balancer.pool.outliers.out == set()  # one client: no ejection
    balancer.hosts(None, now=0.2, failed=["a:377"], peer="10.0.0.2")
    assert balancer.pool.servers[0].verdict.label == "Failing"
    for _ in range(5):
        assert "a" not in balancer.hosts(None, now=0.3)[0].split()
    # A request that names only the ejected server still gets it: a login screen is never left empty.
    assert balancer.hosts(["a"], now=0.4) == ("a", None)
    # Hosts outside SERVERS, or garbage, are ignored: no report, nothing goes last.
    before = dict(balancer.pool.outliers.health[1].reporters)
    for word in ("zzz", "b:999", "not a host!", ""):
        balancer.hosts(None, now=0.5, failed=[word], peer="10.0.0.3")
    assert balancer.pool.outliers.health[1].reporters == before
    view = {row["host"]: row for row in balancer.pool_view(now=1.0)["servers"]}
    assert (view["a"]["state"], view["a"]["usable"], view["a"]["ejection"]) == ("Failing", False, "ejected")
    assert view["a"]["ejections_1h"] == 1 and view["a"]["ejected_remaining_ms"] == 29200
    assert "2 clients reported" in view["a"]["reason"]
    assert (view["b"]["ejection"], view["b"]["ejections_1h"], view["b"]["ejected_remaining_ms"]) == (None, 0, None)
    assert balancer.ejections == {"a": 1}


def test_a_reload_keeps_the_standing_of_the_servers_it_keeps():
    balancer = make_balancer("a b c")
    pool_entries = balancer.entries
    balancer.polled(pool_entries, [up(e) for e in pool_entries], now=0.0)
    balancer.hosts(None, now=0.1, failed=["a"], peer="10.0.0.1")
    balancer.hosts(None, now=0.1, failed=["a"], peer="10.0.0.2")
    balancer.reconfigure(balancer.config._replace(servers=balancer_config.servers("c a d")), now=1.0)
    assert balancer.pool.servers[1].verdict.label == "Failing"
    assert balancer.pool.outliers.out == {1} and balancer.pool.outliers.usable_count == 2
    assert balancer.ejections == {"a": 1}


# --- a request's own settings: one meaning whichever path answers (SPEC.md) --------------------------


def loaded(entry, load_per_cpu, **overrides):
    """A ready server of 8 CPUs whose 1-minute load is LOAD_PER_CPU per CPU."""
    return up(entry, capacity=100.0, cpu_count=8, load_1min=load_per_cpu * 8, **overrides)


def ask(limits=None, algorithm=None, client_key=None, peek=False):
    return Ask(limits, algorithm, client_key, peek)


@pytest.mark.parametrize(
    ("config", "request_limits", "usable"),
    [
        # Nothing asked: the config's limits (none by default but SKIP_SWAPPING).
        (DEFAULT_LIMITS, None, {"a", "b", "c"}),
        # The request's LB_MAX_LOAD: skips what get_hosts would skip on the same figures.
        (DEFAULT_LIMITS, Limits(max_load=1.5, max_response_ms=None, skip_swapping=True), {"a", "b"}),
        (DEFAULT_LIMITS, Limits(max_load=0.0001, max_response_ms=None, skip_swapping=True), set()),
        # A config MAX_LOAD applies to requests that carry none, and a request's own replaces it.
        (Limits(max_load=0.6, max_response_ms=None, skip_swapping=True), None, {"a"}),
        (Limits(max_load=0.6, max_response_ms=None, skip_swapping=True), DEFAULT_LIMITS, {"a", "b", "c"}),
        # LB_MAX_RESPONSE_MS on the balancer's poll time; LB_SKIP_SWAPPING false lets the swapping one in.
        (DEFAULT_LIMITS, Limits(max_load=None, max_response_ms=10, skip_swapping=True), {"a", "c"}),
        (DEFAULT_LIMITS, Limits(max_load=None, max_response_ms=None, skip_swapping=False), {"a", "b", "c", "d"}),
    ],
)
def test_a_requests_limits_filter_the_balancers_own_figures(config, request_limits, usable):
    a, b, c, d = pool_entries = entries("a", "b", "c", "d")
    pool = Pool(pool_entries, random.Random(1), limits=config)
    results = [
        loaded(a, 0.5),
        loaded(b, 1.0)._replace(response_ms=40.0),
        loaded(c, 2.0),
        loaded(d, 0.1, swapping=True),
    ]
    pool.update(results, now=0.0)
    order = pool.choose(now=0.1, ask=ask(request_limits))
    assert {pool.names[i] for i in order} == usable
    # Each limit means what it means to get_hosts: the same servers choose.choose keeps.
    kept = choose.choose(results, request_limits or config, choose.order_best_rated, random.Random(1))
    assert {r.entry.name for r in kept.order} == usable or kept.fallback


def test_no_server_passing_the_requests_limits_is_a_503_naming_them():
    balancer = make_balancer("a b")
    pool_entries = balancer.entries
    balancer.polled(pool_entries, [loaded(e, 1.0) for e in pool_entries], now=0.0)
    strict = Limits(max_load=0.0001, max_response_ms=None, skip_swapping=True)
    assert balancer.hosts(None, now=0.1, ask=ask(strict)) == (None, "no usable server (2 Busy)")
    assert balancer.hosts(None, now=0.1)[1] is None  # the next client, without the limit, gets both
    assert sum(len(s.pending) for s in balancer.pool.servers) == 1


def test_mac_hash_through_the_balancer_keeps_a_client_on_the_server_get_hosts_would_pick():
    pool_entries = entries("app1", "app2", "app3")
    pool = Pool(pool_entries, random.Random(1))
    results = [up(e, capacity=100.0) for e in pool_entries]
    pool.update(results, now=0.0)
    for mac in ("00:1a:2b:3c:4d:01", "00:1a:2b:3c:4d:02", "lab2-ws7"):
        own = choose.order_mac_hash(results, None, mac)[0].entry.name  # get_hosts probing itself
        firsts = {pool.names[pool.choose(now=0.1, ask=ask(algorithm="mac-hash", client_key=mac))[0]] for _ in range(8)}
        assert firsts == {own}, mac
    # The balancer's own least-full order (no algorithm) would spread one client's 8 logins over all three.
    fresh = Pool(pool_entries, random.Random(1))
    fresh.update(results, now=0.0)
    assert {fresh.names[fresh.choose(now=0.1)[0]] for _ in range(8)} == {"app1", "app2", "app3"}


def test_mac_hash_moves_a_client_only_when_its_server_is_no_longer_usable():
    a, b = pool_entries = entries("app1", "app2")
    pool = Pool(pool_entries, random.Random(1))
    results = [up(a, capacity=5.0), up(b, capacity=100.0)]
    key = next(f"mac{i}" for i in range(1000) if choose.order_mac_hash(results, None, f"mac{i}")[0].entry == a)
    pool.update(results, now=0.0)
    sticky = ask(algorithm="mac-hash", client_key=key)
    # app1's 5 places fill with this client's logins (pending counted); then app1 is full, a last resort.
    firsts = [pool.names[pool.choose(now=0.1, ask=sticky)[0]] for _ in range(7)]
    assert firsts == ["app1"] * 5 + ["app2"] * 2
    pool.update([up(a, state="drain"), up(b, capacity=100.0)], now=40.0)  # drained: the key moves
    assert pool.names[pool.choose(now=40.1, ask=sticky)[0]] == "app2"


@pytest.mark.parametrize(
    ("algorithm", "expected_first"),
    [
        # Figures: a rates 10 (of 10), b 7.5 (of 99.5, 92 used): a is best-rated until 3 pending logins
        # bring it to 7; least full (no algorithm) keeps a, 40 % full then, where b would be 93 %.
        ("best-rated", ["a", "a", "a", "b"]),
        (None, ["a", "a", "a", "a"]),
    ],
)
def test_a_requests_algorithm_orders_the_accounted_figures(algorithm, expected_first):
    a, b = pool_entries = entries("a", "b")
    pool = Pool(pool_entries, random.Random(1))
    pool.update([up(a, sessions=0, capacity=10.0), up(b, sessions=92, capacity=99.5)], now=0.0)
    firsts = [pool.names[pool.choose(now=0.1, ask=ask(algorithm=algorithm))[0]] for _ in range(4)]
    assert firsts == expected_first


def test_every_request_algorithm_answers_a_permutation_of_the_usable_servers():
    pool_entries = entries("a", "b", "c", "d")
    pool = Pool(pool_entries, random.Random(1))
    pool.update([up(pool_entries[0]), down(pool_entries[1]), up(pool_entries[2]), up(pool_entries[3])], now=0.0)
    for name in sorted(ORDERED_BY_REQUEST):
        order = pool.choose(now=0.1, ask=ask(algorithm=name, client_key="k"))
        assert sorted(order) == [0, 2, 3], name


def test_a_peek_answers_the_same_and_counts_nothing():
    balancer = make_balancer("a b c")
    pool_entries = balancer.entries
    balancer.polled(pool_entries, [up(e, capacity=100.0) for e in pool_entries], now=0.0)
    peek = ask(peek=True)
    looks = {balancer.hosts(None, now=0.1, ask=peek)[0] for _ in range(50)}
    line, _ = balancer.hosts(None, now=0.1)
    assert looks == {line}  # the login gets what every peek saw: peeks moved nothing
    # 50 peeks: no pending login, no answer counted, no hand-out; the one login counts once.
    assert sum(len(s.pending) for s in balancer.pool.servers) == 1
    assert balancer.answers == {"ok": 1}
    for peer in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        balancer.hosts(None, now=0.2, failed=["a"], peer=peer, ask=peek)
    assert balancer.pool.outliers.out == set() and not balancer.pool.outliers.health[0].reporters


def test_an_empty_servers_says_so_instead_of_waiting_for_a_poll():
    balancer = make_balancer("")
    assert balancer.hosts(None, now=0.0) == (None, "SERVERS is empty: nothing to balance (set SERVERS, or --servers)")
    assert balancer.hosts(["app1"], now=5.0)[1].startswith("SERVERS is empty: nothing to balance")


@pytest.mark.parametrize(
    ("fields", "algorithm", "key", "overrides", "peek", "applied"),
    [
        ({}, None, None, {}, False, "algorithm=least-full"),
        ({"algorithm": ["loadbalancer"]}, None, None, {}, False, "algorithm=least-full"),
        ({"algorithm": ["fixed"]}, None, None, {}, False, "algorithm=least-full"),  # fixed never asks
        ({"algorithm": ["nonsense"]}, None, None, {}, False, "algorithm=least-full"),
        # mac-hash's key in get_hosts' order: MAC (any case, - or :), else hostname, else IP, else the peer.
        (
            {"algorithm": ["Mac-Hash"], "mac": ["00-1A-2B-3C-4D-01"], "hostname": ["ws7"]},
            "mac-hash",
            "00:1a:2b:3c:4d:01",
            {},
            False,
            "algorithm=mac-hash key=mac",
        ),
        ({"algorithm": ["mac-hash"], "mac": ["garbage"], "hostname": ["ws7"]}, "mac-hash", "ws7", {}, False, None),
        ({"algorithm": ["mac-hash"], "ip": ["10.0.0.7"]}, "mac-hash", "10.0.0.7", {}, False, None),
        ({"algorithm": ["mac-hash"]}, "mac-hash", "192.0.2.9", {}, False, "algorithm=mac-hash key=peer"),
        # Limits through get_hosts' own converters; a bad value is not applied.
        (
            {"max_load": ["0.0001"], "max_response_ms": ["none"], "skip_swapping": ["N"]},
            None,
            None,
            {"max_load": 0.0001, "max_response_ms": None, "skip_swapping": False},
            False,
            "algorithm=least-full max_load=0.0001 max_response_ms=none skip_swapping=false",
        ),
        ({"max_load": ["lots"], "max_response_ms": ["-3"]}, None, None, {}, False, "algorithm=least-full"),
        ({"peek": ["1"]}, None, None, {}, True, "algorithm=least-full"),
        ({"peek": ["0"]}, None, None, {}, False, "algorithm=least-full"),
    ],
)
def test_a_request_is_read_with_get_hosts_meanings(fields, algorithm, key, overrides, peek, applied):
    asked = query.from_fields(fields, peer="192.0.2.9")
    assert (asked.ask.algorithm, asked.ask.client_key, asked.overrides, asked.ask.peek) == (
        algorithm,
        key,
        overrides,
        peek,
    )
    if applied is not None:
        assert query.applied(asked) == applied
    limits = query.with_limits(asked, DEFAULT_LIMITS).limits
    assert limits == (DEFAULT_LIMITS._replace(**overrides) if overrides else None)


def ranking_holds(pool):
    """Every server that is not skipped is ranked exactly once, in its tier, and each tier is sorted."""
    ranked = sorted(key for tier in pool._ranked.values() for key in tier)
    expected = sorted(server.key for server in pool.servers if server.tier is not choose.SKIPPED)
    return ranked == expected and all(tier == sorted(tier) for tier in pool._ranked.values())


@pytest.mark.parametrize("step", [1, 7, 100, 1000])
def test_a_poll_is_taken_in_steps_and_logins_between_them_see_a_whole_ranking(step):
    hosts = [f"s{i}" for i in range(250)]
    pool = Pool(entries(*hosts), random.Random(5), login_window_seconds=3.0)
    pool.update([up(s.entry, sessions=i % 7) for i, s in enumerate(pool.servers)], now=0.0)
    for i in range(40):
        pool.choose(now=0.01 * i)
    # The next poll: some servers Down, others fuller; the logins handed out at 0.0-0.4 s expire (window 3 s).
    results = [down(s.entry) if i % 9 == 0 else up(s.entry, sessions=i % 5 + 1) for i, s in enumerate(pool.servers)]
    steps = 0
    for _ in pool.updating(results, now=4.0, step=step):
        steps += 1
        assert ranking_holds(pool)
        order = pool.choose(now=4.001)  # a login between two steps: after the poll's samples were taken
        assert order and len(set(order)) == len(order) and ranking_holds(pool)
        assert pool.servers[order[0]].stats is not None  # never a server this poll found Down
    assert steps == -(-len(hosts) // step) and pool.polled_at == 4.0 and ranking_holds(pool)
    assert all(server.result is result for server, result in zip(pool.servers, results))
    # The logins of the first poll expired; those handed out between the steps are pending.
    assert sum(len(server.pending) for server in pool.servers) == steps


def test_a_reload_during_a_polls_steps_drops_the_rest_of_that_poll():
    balancer = make_balancer("a b c")
    results = [up(entry) for entry in balancer.entries]
    steps = balancer.polling(balancer.entries, results, 1.0)
    next(steps)
    balancer.reconfigure(balancer_config.SCHEMA.override(balancer.config, "SERVERS", "a b", "test"), 1.0)
    assert list(steps) == [] and balancer.polls == 0 and balancer.pool.polled_at is None


# --- one client, one pending login --------------------------------------------------------------


def polled_balancer(servers, **overrides):
    balancer = make_balancer(servers, **overrides)
    balancer.polled(balancer.entries, [up(entry, capacity=20.0) for entry in balancer.entries], now=0.0)
    return balancer


def pending(balancer):
    return {server.entry.host: len(server.pending) for server in balancer.pool.servers}


@pytest.mark.parametrize(("one_login_seconds", "pending_after"), [(30.0, 1), (0.0, 120)])
def test_a_client_asking_in_a_loop_holds_one_login_and_cannot_steer_the_others(one_login_seconds, pending_after):
    balancer = polled_balancer("a b c d", one_login_seconds=one_login_seconds)
    for i in range(120):  # one program naming three of four servers, as fast as it can
        assert balancer.hosts(["a", "b", "c"], now=1.0 + i * 0.0001, peer="10.0.0.66")[0]
    assert sum(pending(balancer).values()) == pending_after
    firsts = Counter(balancer.hosts(None, now=2.0 + i * 0.001, peer=f"10.0.1.{i}")[0].split()[0] for i in range(40))
    if one_login_seconds:
        assert set(firsts) == {"a", "b", "c", "d"} and max(firsts.values()) <= 11, firsts  # evenly, 10 each
    else:
        assert firsts == {"d": 40}  # 0: every request counts (for clients behind one NAT address)


def test_a_retry_moves_the_clients_count_off_the_server_that_failed_it_and_its_report_counts(caplog):
    balancer = polled_balancer("a b c d", one_login_seconds=30.0)
    for peer in ("10.0.0.1", "10.0.0.2"):
        first = balancer.hosts(["a"], now=1.0, peer=peer)[0]
        assert first == "a"
        retried = balancer.hosts(None, now=1.5, failed=["a"], peer=peer)[0].split()
        assert retried[0] != "a"  # last, or not named at all once two clients have reported it
    counts = pending(balancer)
    assert counts["a"] == 0 and sum(counts.values()) == 2  # one login each, where each retried
    assert balancer.pool.servers[0].verdict.label == "Failing"  # two clients reported: ejected
    assert "ejected a" in caplog.text


def test_a_login_that_became_a_session_stays_and_a_client_past_the_window_is_new():
    balancer = polled_balancer("a", one_login_seconds=5.0)
    assert balancer.hosts(None, now=1.0, peer="10.0.0.1")[0] == "a"
    # The server's figures show it (a sample after the hand-out): it settled, nothing pending to replace.
    balancer.polled(balancer.entries, [up(balancer.entries[0], sessions=1, capacity=20.0)], now=2.0)
    assert pending(balancer) == {"a": 0}
    balancer.hosts(None, now=2.5, peer="10.0.0.1")  # the same client again: its new login counts
    assert pending(balancer) == {"a": 1}
    balancer.hosts(None, now=8.0, peer="10.0.0.1")  # past the window: a login of its own
    assert pending(balancer) == {"a": 2}
    balancer.hosts(None, now=8.1, peer="10.0.0.1", ask=NO_ASK._replace(peek=True))  # a look replaces nothing
    assert pending(balancer) == {"a": 2}


def test_clients_remembered_are_bounded():
    from ltsp_loadbalancer import pool as pool_module

    balancer = polled_balancer("a b", one_login_seconds=30.0)
    for i in range(pool_module.MAX_CLIENTS_REMEMBERED + 500):
        balancer.pool.hand_out(i % 2, 1.0, peer=i)
    assert len(balancer.pool._clients) == pool_module.MAX_CLIENTS_REMEMBERED


def test_a_client_asking_again_after_a_reload_still_replaces_its_login():
    balancer = polled_balancer("a b", one_login_seconds=30.0)
    balancer.hosts(["b"], now=1.0, peer="10.0.0.1")
    balancer.reconfigure(balancer.config._replace(servers=balancer_config.servers("c b")), now=1.5)
    balancer.polled(balancer.entries, [up(entry, capacity=20.0) for entry in balancer.entries], now=2.0)
    balancer.hosts(["b"], now=2.5, peer="10.0.0.1")
    assert pending(balancer) == {"c": 0, "b": 1}  # the login from before the reload no longer counts
