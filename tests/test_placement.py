"""Placement quality: the default algorithm and the balancer keep their targets in the login-storm simulation.

benchmarks/login_storm.py drives the real rating (ltsp_server_advertise.rating),
the real filters and algorithms (get_hosts.choose) and the balancer's real
Pool (ltsp_loadbalancer.pool, on the simulation's clock); only time, servers
and clients are simulated, seeded, so these are deterministic regression
checks: a change to the rating, the filters, the default or the balancer's
accounting that makes a morning's logins land unevenly fails here, not in a
school.
"""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "benchmarks"))

import login_storm  # benchmarks/, put on the path above

from get_hosts.settings import DEFAULT_ALGORITHM

SCENARIOS = {scenario.name: scenario for scenario in login_storm.SCENARIOS}
SEEDS = (2026, 2126)


def run(scenario_name, algorithm, seed):
    policy = login_storm.Policy(algorithm, login_storm.our_policy(algorithm), None)
    return login_storm.simulate(SCENARIOS[scenario_name], policy, seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("scenario", "target"), sorted(login_storm.TARGETS.items()))
def test_default_meets_its_target_with_no_session_over_capacity(scenario, target, seed):
    outcome = run(scenario, DEFAULT_ALGORITHM, seed)
    assert outcome.max_over_ideal <= target
    assert outcome.over_capacity == 0


def test_best_rated_herds_in_a_burst_where_the_default_does_not():
    # The anchor the default exists to beat: everyone reads the same figures.
    herd = run("burst 10 s", "best-rated", SEEDS[0])
    ours = run("burst 10 s", DEFAULT_ALGORITHM, SEEDS[0])
    assert herd.max_over_ideal > 1.5 * ours.max_over_ideal
    assert herd.over_capacity > 0


@pytest.mark.parametrize("event", ["server dies at 30 s", "server drained at 30 s"])
def test_no_login_goes_to_a_dead_or_drained_server(event):
    outcome = run(event, DEFAULT_ALGORITHM, SEEDS[0])
    assert outcome.after_event == 0
    assert outcome.over_capacity == 0


def test_mac_hash_moves_only_the_leaving_servers_share():
    import random

    for label, rendezvous, mod_n in login_storm.mac_hash_movement(1500, random.Random(7)):
        assert rendezvous < 0.06, label  # about 1/30
        assert mod_n > 0.8, label  # hash-mod-N reshuffles nearly everyone


# --- the central balancer (docs/placement.md, "The central balancer") --------

BALANCER_TARGETS = login_storm.BALANCER_TARGETS  # max/ideal by replica count
POOL_RULES = {"pool.py": login_storm.Pool, "alone assumed": login_storm.AloneAssumedPool}


def run_balancer(scenario_name, replicas, rule, seed):
    policy = login_storm.BalancerPolicy(rule, login_storm.POLL_SECONDS, replicas, POOL_RULES[rule])
    return login_storm.simulate(SCENARIOS[scenario_name], policy, seed)


@pytest.mark.parametrize(
    ("scenario", "replicas"),
    [("storm 60 s", 1), ("storm 60 s", 3), ("burst 10 s", 1), ("burst 10 s", 3)],
)
def test_balancer_meets_its_target_with_no_session_over_capacity(scenario, replicas):
    # The real Pool, polling every POLL_SECONDS (2 s); 3 replicas share nothing, each client asks one.
    outcomes = [run_balancer(scenario, replicas, "pool.py", seed) for seed in SEEDS]
    assert max(o.max_over_ideal for o in outcomes) <= BALANCER_TARGETS[replicas]
    assert max(o.over_capacity for o in outcomes) == 0


def test_without_the_share_estimate_three_balancers_herd_in_a_burst():
    # What the share estimate is for: each replica blind to the others' logins between polls.
    outcomes = [run_balancer("burst 10 s", 3, "alone assumed", seed) for seed in SEEDS]
    assert max(o.max_over_ideal for o in outcomes) > BALANCER_TARGETS[3]


@pytest.mark.parametrize("replicas", [1, 3])
def test_balancer_sends_no_login_to_a_dead_server_after_its_next_poll(replicas):
    outcome = run_balancer("server dies at 30 s", replicas, "pool.py", SEEDS[0])
    assert outcome.after_event == 0
    assert outcome.over_capacity == 0
