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


# How the clients reach the replicas: one balancer; 3 each asked by a third of the clients; 3 all asked by every
# client (LB_BALANCER naming them all: each counts a login for every request, the client uses one answer).
REPLICAS = {
    "x1": login_storm.BalancerPolicy("x1", login_storm.POLL_SECONDS, 1, login_storm.Pool),
    "x3, each client asks one": login_storm.BalancerPolicy("x3 one", login_storm.POLL_SECONDS, 3, login_storm.Pool),
    "x3, every client asks all": login_storm.BalancerPolicy(
        "x3 all", login_storm.POLL_SECONDS, 3, login_storm.Pool, ask_all=True
    ),
}


@pytest.mark.parametrize("replicas", sorted(REPLICAS))
def test_no_healthy_server_is_ejected_in_any_healthy_storm(replicas):
    # Outlier ejection's evidence must be a broken server's: each ejection is a warning in the log.
    for scenario in login_storm.SCENARIOS:
        for seed in SEEDS:
            outcome = login_storm.simulate(scenario, REPLICAS[replicas], seed)
            assert outcome.healthy_ejected == 0, (scenario.name, seed)


class BlindToOthersPool(login_storm.Pool):
    """The Pool with no count of the sessions none of its logins explains (test only)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outliers.unexplained = lambda sessions, now: None


def test_replicas_every_client_asks_eject_healthy_servers_when_blind_to_the_others_sessions():
    # What the count is for: the share estimate says 1 there (every replica hands out every login).
    policy = login_storm.BalancerPolicy("x3 all, blind", login_storm.POLL_SECONDS, 3, BlindToOthersPool, ask_all=True)
    assert login_storm.simulate(SCENARIOS["burst 10 s"], policy, SEEDS[0]).healthy_ejected > 5


@pytest.mark.parametrize("replicas", [1, 3])
def test_balancer_sends_no_login_to_a_dead_server_after_its_next_poll(replicas):
    outcome = run_balancer("server dies at 30 s", replicas, "pool.py", SEEDS[0])
    assert outcome.after_event == 0
    assert outcome.over_capacity == 0


# --- a broken server (issue 15; docs/placement.md, "A broken server") ------------------------

# Targets: nobody fails twice, in every case; sshd dead: at most 2 failed attempts in the burst, with and
# without a balancer; every login failing: at most 5 through the balancer, at most twice the broken
# server's even share without. The class is the (4 servers, the WEIGHT 200 one broken, 83 people
# in 10 s); the school's 10 s burst is 1,400 logins on 30 servers. Each person retries once through
# get_hosts.retry; through the balancer the retry reports failed=HOST to the real Pool.
BROKEN_SCENARIOS = {scenario.name: scenario for scenario in login_storm.BROKEN_SCENARIOS}
TARGET_SCENARIOS = [name for name, s in BROKEN_SCENARIOS.items() if login_storm.broken_limit(s, False, 1) is not None]
THROUGH = {
    "probing": login_storm.POLICIES[f"{DEFAULT_ALGORITHM} (default)"],
    "balancer": login_storm.BalancerPolicy("pool.py x1", login_storm.POLL_SECONDS, 1, login_storm.Pool),
}


def run_broken(scenario_name, through, seed):
    return login_storm.simulate(BROKEN_SCENARIOS[scenario_name], THROUGH[through], seed)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("through", sorted(THROUGH))
@pytest.mark.parametrize("scenario", TARGET_SCENARIOS)
def test_a_broken_server_costs_a_few_failed_logins_and_nobody_fails_twice(scenario, through, seed):
    outcome = run_broken(scenario, through, seed)
    limit = login_storm.broken_limit(BROKEN_SCENARIOS[scenario], through == "balancer", outcome.even_share)
    assert outcome.failed_twice == 0
    assert outcome.failed_logins <= limit
    assert outcome.over_capacity == 0
    assert outcome.healthy_ejected in (None, 0)  # None: no balancer


@pytest.mark.parametrize("through", sorted(THROUGH))
@pytest.mark.parametrize("scenario", ["class of 83, sshd dies at 0 s", "burst 10 s, sshd dies at 0 s"])
def test_nobody_fails_twice_while_the_daemon_has_not_yet_seen_sshd_die(scenario, through):
    # The check's own delay (MISSES_TO_FAIL checks SSH_CHECK_SECONDS apart, then a sample): logins fail
    # meanwhile, but the retry goes elsewhere.
    outcome = run_broken(scenario, through, SEEDS[0])
    assert outcome.failed_logins > 0  # the model does break the server before the daemon says so
    assert outcome.failed_twice == 0


def test_without_its_time_wait_count_every_failing_login_would_pour_into_the_broken_server():
    # What the daemon's TIME_WAIT count is for: a server that closes every login looks idle without it.
    daemon = login_storm.DAEMON._replace(counts_closed_logins=False)  # the daemon before issue 15
    scenario = BROKEN_SCENARIOS["class of 83, every login fails"]
    blind = login_storm.simulate(scenario, THROUGH["probing"], SEEDS[0], daemon)
    counted = run_broken("class of 83, every login fails", "probing", SEEDS[0])
    assert blind.failed_logins > 2 * blind.even_share > counted.failed_logins


@pytest.mark.parametrize("replicas", sorted(set(REPLICAS) - {"x1"}))
@pytest.mark.parametrize("scenario", sorted(BROKEN_SCENARIOS))
def test_through_replicas_nobody_fails_twice_and_only_the_broken_server_is_ejected(scenario, replicas):
    # Replicas have no failed-attempts target (the issue measured one balancer); their figures are
    # benchmarks/login_storm.py --broken's.
    outcome = login_storm.simulate(BROKEN_SCENARIOS[scenario], REPLICAS[replicas], SEEDS[0])
    assert outcome.failed_twice == 0
    assert outcome.healthy_ejected == 0
