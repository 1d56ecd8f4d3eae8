"""choose.py: filters by table, algorithms by property (hypothesis) and by statistics with seeded randomness."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from fakeservers import stats
from hypothesis import given, settings
from hypothesis import strategies as st

from get_hosts import choose
from get_hosts.errors import GetHostsError
from get_hosts.probe import ProbeResult
from get_hosts.settings import PoolEntry

NO_LIMITS = choose.Limits(max_load=None, max_response_ms=None, skip_swapping=True)


def result(name="app", response_ms=5.0, error=None, port=377, down=False, **overrides):
    entry = PoolEntry(name, name, port)
    if down:
        return ProbeResult(entry, None, None, error or "connect failed: Connection refused")
    return ProbeResult(entry, stats(**overrides), response_ms, None)


# --- filters ---------------------------------------------------------------

# (why, result kwargs, limits, label, tier, words in the reason)
FILTER_TABLE = [
    ("answers, rating > 0", {}, NO_LIMITS, "Idle", choose.PREFERRED, "rating 20"),
    ("down keeps the probe's reason", {"down": True}, NO_LIMITS, "Down", None, "refused"),
    ("drain", {"state": "drain"}, NO_LIMITS, "Drain", None, "state drain"),
    ("maint is drained too", {"state": "maint"}, NO_LIMITS, "Drain", None, "state maint"),
    ("swapping, skipped", {"swapping": True}, NO_LIMITS, "Swapped", None, "swapping"),
    (
        "swapping, LB_SKIP_SWAPPING false",
        {"swapping": True},
        choose.Limits(skip_swapping=False),
        "Idle",
        choose.PREFERRED,
        "rating",
    ),
    (
        "load above LB_MAX_LOAD",
        {"load_1min": 16.8, "cpu_count": 8},
        choose.Limits(max_load=1.5),
        "Busy",
        None,
        "load 2.10/cpu above LB_MAX_LOAD 1.5",
    ),
    (
        "load equal to LB_MAX_LOAD is kept",
        {"load_1min": 12.0, "cpu_count": 8},
        choose.Limits(max_load=1.5),
        "Idle",
        choose.PREFERRED,
        "rating",
    ),
    (
        "unknown load is not skipped",
        {"load_1min": None},
        choose.Limits(max_load=0.1),
        "Idle",
        choose.PREFERRED,
        "rating",
    ),
    (
        "slower than LB_MAX_RESPONSE_MS",
        {"response_ms": 250.0},
        choose.Limits(max_response_ms=200),
        "Busy",
        None,
        "answered in 250 ms, above LB_MAX_RESPONSE_MS 200",
    ),
    (
        "as fast as LB_MAX_RESPONSE_MS",
        {"response_ms": 200.0},
        choose.Limits(max_response_ms=200),
        "Idle",
        choose.PREFERRED,
        "rating",
    ),
    ("rating 0 is a last resort", {"rating": 0.0}, NO_LIMITS, "Busy", choose.LAST_RESORT, "rating 0"),
    ("WEIGHT 0 takes no new sessions", {"weight": 0, "rating": 0.0}, NO_LIMITS, "Drain", None, "WEIGHT 0: takes"),
    ("WEIGHT 0 is skipped whatever its rating", {"weight": 0, "rating": 7.0}, NO_LIMITS, "Drain", None, "WEIGHT 0"),
    ("WEIGHT 1 is kept", {"weight": 1, "rating": 0.2}, NO_LIMITS, "Idle", choose.PREFERRED, "rating 0.2"),
    ("drain's reason wins over WEIGHT 0", {"state": "drain", "weight": 0}, NO_LIMITS, "Drain", None, "state drain"),
    ("a failing check wins over WEIGHT 0", {"failing": "sshd down", "weight": 0}, NO_LIMITS, "Failing", None, "sshd"),
    ("drain wins over swapping", {"state": "drain", "swapping": True}, NO_LIMITS, "Drain", None, "drain"),
    (
        "swapping wins over load",
        {"swapping": True, "load_1min": 80.0},
        choose.Limits(max_load=1.0),
        "Swapped",
        None,
        "swapping",
    ),
]


@pytest.mark.parametrize(
    ("why", "kwargs", "limits", "label", "tier", "words"), FILTER_TABLE, ids=[r[0] for r in FILTER_TABLE]
)
def test_filter_table(why, kwargs, limits, label, tier, words):
    verdict = choose.assess(result(**kwargs), limits)
    assert (verdict.label, verdict.tier) == (label, tier)
    assert words in verdict.reason


def test_settings_namedtuple_serves_as_limits():
    from get_hosts.settings import load_settings

    limits = load_settings({"LB_SERVERS": "a", "LB_MAX_LOAD": "1", "LTS_CONF": "/dev/null"})
    verdict = choose.assess(result(load_1min=16.0, cpu_count=8), limits)
    assert verdict.label == "Busy"


# --- choose(): tiers and fallback --------------------------------------------


def test_idle_servers_come_before_full_ones():
    results = [
        result("full", rating=0.0),
        result("idle1", rating=5.0),
        result("down", down=True),
        result("idle2", rating=50.0),
    ]
    choice = choose.choose(results, NO_LIMITS, choose.order_best_rated, random.Random(1))
    assert [r.entry.name for r in choice.order] == ["idle2", "idle1", "full"]
    assert choice.fallback is None
    assert [v.label for v in choice.verdicts] == ["Busy", "Idle", "Down", "Idle"]


def test_weight_zero_is_never_a_last_resort():
    # Before: a WEIGHT 0 server (rating 0) came after the Idle ones as "Busy",
    # and took every login once the others were full or gone.
    results = [result("zero", weight=0, rating=0.0), result("full", rating=0.0), result("idle", rating=3.0)]
    choice = choose.choose(results, NO_LIMITS, choose.order_best_rated, random.Random(1))
    assert [r.entry.name for r in choice.order] == ["idle", "full"]
    assert [v.label for v in choice.verdicts] == ["Drain", "Busy", "Idle"]
    alone = choose.choose([result("zero", weight=0, rating=0.0)], NO_LIMITS, choose.order_best_rated, random.Random(1))
    assert "1 Drain" in alone.fallback, "only the whole-pool fallback may still print it"


def test_no_usable_server_falls_back_to_the_whole_pool_in_order():
    results = [result("a", down=True), result("b", state="drain"), result("c", swapping=True), result("d", down=True)]
    choice = choose.choose(results, NO_LIMITS, choose.order_random, random.Random(1))
    assert [r.entry.name for r in choice.order] == ["a", "b", "c", "d"]
    assert "no usable server" in choice.fallback
    assert "2 Down" in choice.fallback and "1 Drain" in choice.fallback and "1 Swapped" in choice.fallback


def test_unknown_algorithm_lists_the_valid_ones():
    with pytest.raises(GetHostsError) as raised:
        choose.get_algorithm("least-loaded")
    message = str(raised.value)
    assert "least-loaded" in message
    for name in ("two-choice", "random", "best-rated", "weighted", "mac-hash", "fixed"):
        assert name in message


def test_registry_names_match_the_spec():
    assert set(choose.ALGORITHMS) == {
        "two-choice",
        "random",
        "best-rated",
        "weighted",
        "mac-hash",
        "fixed",
        "loadbalancer",
    }
    assert set(choose.NO_PROBE) == {"fixed"}


# --- properties of every algorithm ---------------------------------------------

server_st = st.fixed_dictionaries(
    {
        "rating": st.floats(min_value=0, max_value=500, allow_nan=False),
        "weight": st.integers(min_value=0, max_value=1000),
        "state": st.sampled_from(["ready", "ready", "ready", "drain", "maint"]),
        "swapping": st.booleans(),
        "down": st.booleans(),
        "load_1min": st.floats(min_value=0, max_value=64, allow_nan=False),
    }
)


@settings(max_examples=150, deadline=None)
@given(
    servers=st.lists(server_st, min_size=1, max_size=12),
    name=st.sampled_from(sorted(choose.ALGORITHMS)),
    seed=st.integers(0, 2**32),
    mac=st.binary(min_size=6, max_size=6),
    max_load=st.one_of(st.none(), st.floats(min_value=0.1, max_value=8)),
)
def test_output_is_a_permutation_of_the_usable_pool_hosts(servers, name, seed, mac, max_load):
    results = [result(f"s{i}", **kwargs) for i, kwargs in enumerate(servers)]
    limits = choose.Limits(max_load=max_load)
    key = ":".join(f"{b:02x}" for b in mac)
    choice = choose.choose(results, limits, choose.ALGORITHMS[name], random.Random(seed), key)
    usable = [v for v in choice.verdicts if v.tier is not choose.SKIPPED]
    names = [r.entry.name for r in choice.order]
    assert len(names) == len(set(names))
    if usable:
        assert sorted(names) == sorted(v.result.entry.name for v in usable)
        tiers = [choose.assess(r, limits).tier for r in choice.order]
        assert tiers == sorted(tiers), "every Idle server before every last-resort one"
    else:
        assert names == [r.entry.name for r in results]
        assert choice.fallback


@settings(max_examples=100, deadline=None)
@given(ratings=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1, max_size=10))
def test_best_rated_is_sorted_by_rating(ratings):
    results = [result(f"s{i}", rating=r) for i, r in enumerate(ratings)]
    ordered = choose.order_best_rated(results, random.Random(0))
    assert [r.stats.rating for r in ordered] == sorted(ratings, reverse=True)


def test_best_rated_breaks_ties_at_random():
    results = [result("a", rating=10.0), result("b", rating=10.0), result("c", rating=1.0)]
    firsts = Counter(choose.order_best_rated(results, random.Random(seed))[0].entry.name for seed in range(400))
    assert set(firsts) == {"a", "b"}
    assert 140 < firsts["a"] < 260


def test_random_is_uniform_with_a_seeded_rng():
    rng = random.Random(42)
    results = [result(n) for n in "abcd"]
    firsts = Counter(choose.order_random(results, rng)[0].entry.name for _ in range(8000))
    for name in "abcd":
        assert abs(firsts[name] / 8000 - 0.25) < 0.025


def test_random_is_reproducible_with_the_same_seed():
    results = [result(n) for n in "abcdefg"]
    once = choose.order_random(results, random.Random(7))
    again = choose.order_random(results, random.Random(7))
    assert once == again


def test_weighted_first_pick_follows_the_ratings():
    rng = random.Random(3)
    results = [result("a", rating=10.0), result("b", rating=30.0), result("c", rating=60.0)]
    n = 20000
    firsts = Counter(choose.order_weighted(results, rng)[0].entry.name for _ in range(n))
    assert abs(firsts["a"] / n - 0.1) < 0.015
    assert abs(firsts["b"] / n - 0.3) < 0.015
    assert abs(firsts["c"] / n - 0.6) < 0.015


def test_weighted_second_pick_is_sampling_without_replacement():
    # P(second = a | first = c) = 10 / (10 + 30) = 0.25
    rng = random.Random(5)
    results = [result("a", rating=10.0), result("b", rating=30.0), result("c", rating=60.0)]
    seconds = Counter()
    for _ in range(20000):
        order = [r.entry.name for r in choose.order_weighted(results, rng)]
        if order[0] == "c":
            seconds[order[1]] += 1
    assert abs(seconds["a"] / sum(seconds.values()) - 0.25) < 0.02


def test_weighted_puts_zero_ratings_last():
    rng = random.Random(9)
    results = [result("zero", rating=0.0), result("tiny", rating=0.001), result("big", rating=100.0)]
    for _ in range(200):
        assert choose.order_weighted(results, rng)[-1].entry.name == "zero"


def test_fixed_keeps_the_configured_order():
    results = [result(n, rating=float(i)) for i, n in enumerate("zyx")]
    assert choose.order_fixed(results, random.Random(0)) == results


# --- mac-hash: rendezvous hashing ----------------------------------------------


def random_macs(n, seed=11):
    rng = random.Random(seed)
    return [":".join(f"{rng.randrange(256):02x}" for _ in range(6)) for _ in range(n)]


def mac_first(servers, mac):
    return choose.order_mac_hash(servers, None, mac)[0].entry.name


@settings(max_examples=100, deadline=None)
@given(mac=st.binary(min_size=6, max_size=6), seed=st.integers(0, 2**32), n=st.integers(1, 10))
def test_mac_hash_is_stable_whatever_the_input_order_rng_and_ratings(mac, seed, n):
    key = ":".join(f"{b:02x}" for b in mac)
    servers = [result(f"s{i}", rating=float(i)) for i in range(n)]
    shuffled = list(servers)
    random.Random(seed).shuffle(shuffled)
    rerated = [r._replace(stats=r.stats._replace(rating=float(seed % 97))) for r in servers]
    expected = [r.entry.name for r in choose.order_mac_hash(servers, random.Random(0), key)]
    assert [r.entry.name for r in choose.order_mac_hash(shuffled, random.Random(seed), key)] == expected
    assert [r.entry.name for r in choose.order_mac_hash(rerated, random.Random(seed), key)] == expected


def test_mac_hash_spreads_clients_evenly():
    servers = [result(f"app{i}") for i in range(4)]
    counts = Counter(mac_first(servers, mac) for mac in random_macs(4000))
    for name in counts:
        assert abs(counts[name] / 4000 - 0.25) < 0.03


def test_mac_hash_follows_the_advertised_weight():
    servers = [result("small", weight=100), result("large", weight=300)]
    counts = Counter(mac_first(servers, mac) for mac in random_macs(4000))
    assert abs(counts["large"] / 4000 - 0.75) < 0.03


def test_mac_hash_one_server_leaving_moves_only_its_clients():
    servers = [result(f"app{i}") for i in range(4)]
    remaining = servers[:2] + servers[3:]
    macs = random_macs(4000)
    moved = 0
    for mac in macs:
        before, after = mac_first(servers, mac), mac_first(remaining, mac)
        if before != after:
            assert before == "app2", "only the clients of the server that left may move"
            moved += 1
    assert abs(moved / len(macs) - 0.25) < 0.03  # hash-mod-N would move ~75%


def test_mac_hash_one_server_joining_takes_about_one_share():
    servers = [result(f"app{i}") for i in range(8)]
    joined = [*servers, result("app8")]
    macs = random_macs(4000)
    moved = 0
    for mac in macs:
        before, after = mac_first(servers, mac), mac_first(joined, mac)
        if before != after:
            assert after == "app8", "a client only ever moves to the new server"
            moved += 1
    assert abs(moved / len(macs) - 1 / 9) < 0.025  # hash-mod-N would move ~89%


def test_mac_hash_separates_two_ports_of_one_host():
    servers = [result("host", port=p) for p in (3770, 3771, 3772)]
    counts = Counter(choose.order_mac_hash(servers, None, mac)[0].entry.port for mac in random_macs(3000))
    assert len(counts) == 3
    assert min(counts.values()) > 800


def test_unit_hash_is_in_the_open_unit_interval_and_spread():
    values = [choose.unit_hash(f"aa:bb:cc:dd:ee:{i:02x}\napp\n377") for i in range(256)]
    assert all(0.0 < v < 1.0 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.06
    # Neighbouring MACs land in every tenth of the interval.
    assert len({int(v * 10) for v in values}) == 10
    assert choose.unit_hash("x") == choose.unit_hash("x")


# --- two-choice ------------------------------------------------------------------


def sized(name, capacity, used):
    """A result for a server of CAPACITY sessions with USED of them taken."""
    return result(name, rating=float(capacity - used), capacity=float(capacity), sessions=used)


def test_two_choice_puts_the_less_full_of_two_first():
    # 90% vs 10% full: whichever is drawn first, the emptier one wins.
    results = [sized("full", 100, 90), sized("empty", 100, 10)]
    firsts = Counter(choose.order_two_choice(results, random.Random(seed))[0].entry.name for seed in range(200))
    assert firsts == {"empty": 200}


def test_two_choice_compares_fullness_not_spare_sessions():
    # The big server has more spare sessions (40 > 9) but is fuller (80% > 10%).
    results = [sized("big", 200, 160), sized("small", 10, 1)]
    assert choose.order_two_choice(results, random.Random(1))[0].entry.name == "small"


def test_two_choice_spreads_equal_servers_evenly():
    results = [sized(f"s{i}", 50, 10) for i in range(4)]
    firsts = Counter(choose.order_two_choice(results, random.Random(seed))[0].entry.name for seed in range(4000))
    assert set(firsts) == {"s0", "s1", "s2", "s3"}
    assert all(850 < n < 1150 for n in firsts.values()), firsts


def test_two_choice_draws_by_capacity():
    # Equally full; "big" holds 3x, so one more login fills it least and it
    # wins every pair it is drawn in. "small" goes first only when the pair
    # is {small, other} (p = 0.2*0.25 + 0.2*0.25 = 0.1) and it wins the tie:
    # about 5% of clients, still some.
    results = [sized("big", 300, 150), sized("small", 100, 50), sized("other", 100, 50)]
    firsts = Counter(choose.order_two_choice(results, random.Random(seed))[0].entry.name for seed in range(3000))
    assert 2600 < firsts["big"] < 2800
    assert 100 < firsts["small"] < 200


def test_two_choice_orders_the_rest_least_full_first():
    results = [sized("a", 100, 70), sized("b", 100, 20), sized("c", 100, 50), sized("d", 100, 90)]
    for seed in range(50):
        order = [r.entry.name for r in choose.order_two_choice(results, random.Random(seed))]
        rest = order[1:]
        fullness = {"a": 70, "b": 20, "c": 50, "d": 90}
        assert [fullness[n] for n in rest] == sorted(fullness[n] for n in rest)


def test_two_choice_without_capacity_uses_rating_plus_sessions():
    # An older daemon that sends no <capacity>: 10 of 20 vs 1 of 20.
    results = [result("old1", rating=10.0, sessions=10), result("old2", rating=19.0, sessions=1)]
    firsts = {choose.order_two_choice(results, random.Random(seed))[0].entry.name for seed in range(50)}
    assert firsts == {"old2"}


def test_mac_hash_gives_a_server_clients_in_proportion_to_its_capacity():
    results = [sized("big", 300, 0), sized("small", 100, 0)]
    macs = [f"02:00:00:00:{n >> 8:02x}:{n & 255:02x}" for n in range(4000)]
    firsts = Counter(choose.order_mac_hash(results, None, mac)[0].entry.name for mac in macs)
    assert 0.70 < firsts["big"] / len(macs) < 0.80  # 3:1
    # and each client keeps its server when the load changes (capacity does not)
    busier = [sized("big", 300, 250), sized("small", 100, 10)]
    assert all(
        choose.order_mac_hash(results, None, mac)[0].entry.name
        == choose.order_mac_hash(busier, None, mac)[0].entry.name
        for mac in macs[:500]
    )
