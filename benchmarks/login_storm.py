"""Login storm: does a school's 8:00 land evenly on 30 unequal servers?

A discrete-event simulation, seeded and deterministic, that drives the
project's own code: every client's choice goes through get_hosts.choose
(filters and algorithms) on wire.ServerStats whose rating comes from
ltsp_server_advertise.rating. Only time, servers and clients are simulated:

- 30 servers of five sizes (CPU cores x MHz and RAM differ by x4), a third of
  them already loaded. A server's daemon re-reads its statistics every
  SAMPLE_SECONDS, so a client sees figures up to that old (probe time, a few
  ms, is negligible next to it).
- A login holds CPU while it is set up and opens its session only when it
  completes, 3 to 10 s after the choice. Its ssh connection is up 0.2 to 1 s
  after the choice; the daemon counts such a connection as a login in
  progress (ltsp_server_advertise.stats), so it is seen at the next sample.
  The kernel's 1-minute load average follows runnable tasks with its real
  exponential lag (updated every 5 s).
- Scenarios: 1,400 logins over 60 s; the same in a 10 s burst; a server dies
  mid-storm (its users log in again); a server is drained mid-storm; a big
  server joins mid-storm.
- Anchors, in the same run: best-rated as LTSP and X2Go pick; ldminfod's
  rating (fresh at each login, best first); X2Go's broker formula with its
  300 s poll; ltsp-cluster's weighted random with its 60 s poll.

Printed per algorithm: max utilization / ideal (ideal = every server equally
full), spread (max - min utilization), sessions placed over capacity, and for
the mid-storm events the logins still sent to the server after it died or
was drained. For mac-hash: the share of clients moved when a server leaves
or joins, next to hash-mod-N.

Usage: python benchmarks/login_storm.py [--seed N] [--quick] [--strict]
--strict exits 1 when the default misses a target.
"""

from __future__ import annotations

import heapq
import math
import random
import sys
import time
from collections import namedtuple

from ltsp_server_advertise import config, rating

from get_hosts import choose
from get_hosts.probe import ProbeResult
from get_hosts.settings import DEFAULT_ALGORITHM, PoolEntry
from ltsp_lbcore import wire

MIB = 2**20
GIB = 2**30

SAMPLE_SECONDS = config.SCHEMA.defaults().sample_seconds  # the daemon's default reuse time
LOAD_TICK_SECONDS = 5.0  # the kernel recomputes load averages every 5 s
LOGIN_SECONDS = (3.0, 10.0)  # choice -> session open
SSH_CONNECT_SECONDS = (0.2, 1.0)  # choice -> LDM's ssh connection established
SESSION_TASKS = 0.1  # runnable tasks of an open desktop session, on average
LOGIN_TASKS = 0.6  # runnable tasks while a login is being set up
SESSION_BYTES = 350 * MIB  # memory a session really uses (budget: 400 MiB)
SYSTEM_BYTES = 1 * GIB  # the OS and daemons
RELOGIN_SECONDS = 20.0  # users of a dead server log in again within this

# (name, cores, MHz, RAM GiB): capacity from about 31 to 123 sessions.
SERVER_CLASSES = (
    ("s", 4, 2400, 12),
    ("m", 6, 2400, 20),
    ("l", 8, 2400, 24),
    ("xl", 12, 2400, 36),
    ("xxl", 16, 2400, 48),
)

Scenario = namedtuple("Scenario", "name logins spread_seconds event")
SCENARIOS = (
    Scenario("storm 60 s", 1400, 60.0, None),
    Scenario("burst 10 s", 1400, 10.0, None),
    Scenario("server dies at 30 s", 1400, 60.0, ("die", 30.0)),
    Scenario("server drained at 30 s", 1400, 60.0, ("drain", 30.0)),
    Scenario("server joins at 30 s", 1400, 60.0, ("join", 30.0)),
)


def _load_decay(period_seconds, window_seconds):
    return math.exp(-period_seconds / window_seconds)


LOAD_DECAYS = (_load_decay(LOAD_TICK_SECONDS, 60), _load_decay(LOAD_TICK_SECONDS, 300), _load_decay(5, 900))


class Server:
    """One simulated application server and what its daemon advertises."""

    def __init__(self, name, cores, mhz, ram_gib, sessions=0):
        self.entry = PoolEntry(name, name, 377)
        self.cpu_count, self.cpu_mhz, self.mem_total_bytes = cores, float(mhz), ram_gib * GIB
        self.state = "ready"
        self.alive = True
        self.sessions = sessions
        self.logging_in = 0
        self.ssh_pending = 0  # logins whose ssh is connected, session not yet open
        self.counts_logins_in_progress = True  # as ltsp_server_advertise.stats does
        steady = sessions * SESSION_TASKS
        self.loads = [steady, steady, steady]
        self.sample = None  # the daemon's last sample: what clients see
        self.chosen_after_event = 0
        self.capacity = rating.rate(**self.metrics()).capacity

    def runnable_tasks(self):
        return self.sessions * SESSION_TASKS + self.logging_in * LOGIN_TASKS

    def tick_load(self):
        tasks = self.runnable_tasks()
        self.loads = [load * decay + tasks * (1 - decay) for load, decay in zip(self.loads, LOAD_DECAYS)]

    def mem_available_bytes(self):
        used = SYSTEM_BYTES + (self.sessions + self.logging_in) * SESSION_BYTES
        return max(0, self.mem_total_bytes - used)

    def metrics(self):
        """What the daemon reads and rates: the arguments of rating's functions."""
        return dict(
            state=self.state,
            weight=100,
            sessions=self.sessions + (self.ssh_pending if self.counts_logins_in_progress else 0),
            cpu_count=self.cpu_count,
            cpu_mhz=self.cpu_mhz,
            load_1min=self.loads[0],
            mem_total_bytes=self.mem_total_bytes,
            mem_available_bytes=self.mem_available_bytes(),
        )

    def take_sample(self):
        """What the real daemon does every SAMPLE_SECONDS: read, rate, keep."""
        metrics = self.metrics()
        rated = rating.rate(**metrics)
        self.sample = wire.ServerStats(
            hostname=self.entry.name,
            rating=rated.rating,
            capacity=rated.capacity,
            sample_age_ms=0,
            load_5min=self.loads[1],
            load_15min=self.loads[2],
            swap_used_bytes=0,
            swapping=False,
            **metrics,
        )

    def utilization(self):
        return self.sessions / self.capacity


def build_servers(rng):
    """30 servers, six of each class; a third of them already half loaded."""
    servers = []
    for index in range(30):
        name, cores, mhz, ram = SERVER_CLASSES[index % len(SERVER_CLASSES)]
        server = Server(f"{name}{index:02d}", cores, mhz, ram)
        if index % 3 == 0:
            server.sessions = int(server.capacity * rng.uniform(0.3, 0.6))
            server.loads = [server.sessions * SESSION_TASKS] * 3
        servers.append(server)
    return servers


# --- the policies: our algorithms through choose.choose, and the anchors ----

LIMITS = choose.Limits(max_load=None, max_response_ms=None, skip_swapping=True)


def our_policy(name):
    """A policy that chooses as get_hosts does: probe results -> choose.choose."""
    algorithm = choose.get_algorithm(name)

    def pick(servers, now, rng, client_key, snapshot):
        results = [
            ProbeResult(s.entry, s.sample, 2.0, None) if s.alive else ProbeResult(s.entry, None, None, "refused")
            for s in servers
        ]
        first = choose.choose(results, LIMITS, algorithm, rng, client_key).order[0]
        return next(s for s in servers if s.entry is first.entry)

    return pick


def ldminfod_policy(servers, now, rng, client_key, snapshot):
    """LDM asks every ldminfod at login (fresh figures), takes the best rating."""

    def ldminfod_rating(s):
        used = 1 - s.mem_available_bytes() / s.mem_total_bytes
        return max(0, 100 - int(50 * s.loads[2] / 8 + 50 * used))

    usable = [s for s in servers if s.alive and s.state == "ready"]
    return max(usable, key=lambda s: (ldminfod_rating(s), rng.random()))


def x2go_policy(servers, now, rng, client_key, snapshot):
    """X2Go's broker: lowest (sessions+1)/load_factor, from its last 300 s poll."""
    usable = [s for s in servers if s.alive and s.state == "ready" and s.entry.name in snapshot]

    def cost(s):
        sessions, loads, mem_available = snapshot[s.entry.name]
        load_xx = (loads[0] + loads[1] + loads[2]) * 100 / 3 + 1
        load_factor = mem_available / MIB * s.cpu_count * s.cpu_mhz * 100 / load_xx
        # Its herd exhausts a server's memory: the Perl divides by zero there.
        return (sessions + 1) / load_factor if load_factor > 0 else math.inf

    return min(usable, key=lambda s: (cost(s), rng.random()))


def ltsp_cluster_policy(servers, now, rng, client_key, snapshot):
    """ltsp-cluster's lbserver: weighted random, rules load 50, sessions 25, memory 25, 60 s poll.

    Our reading of its rules: each term is the free share of that resource
    (load per CPU, sessions against the largest server's, free memory).
    """
    usable = [s for s in servers if s.alive and s.state == "ready" and s.entry.name in snapshot]
    most_sessions = max(snapshot[s.entry.name][0] for s in usable) or 1

    def weight(s):
        sessions, loads, mem_available = snapshot[s.entry.name]
        free_cpu = max(0.0, 1 - loads[0] / s.cpu_count)
        return 50 * free_cpu + 25 * (1 - sessions / (2 * most_sessions)) + 25 * mem_available / s.mem_total_bytes

    return rng.choices(usable, weights=[max(weight(s), 0.01) for s in usable])[0]


Policy = namedtuple("Policy", "label pick poll_seconds")


def policies():
    ours = [
        Policy(name + (" (default)" if name == DEFAULT_ALGORITHM else ""), our_policy(name), None)
        for name in sorted(choose.ALGORITHMS)
    ]
    anchors = [
        Policy("anchor: ldminfod rating, best", ldminfod_policy, None),
        Policy("anchor: X2Go broker, 300 s poll", x2go_policy, 300.0),
        Policy("anchor: ltsp-cluster weighted, 60 s poll", ltsp_cluster_policy, 60.0),
    ]
    return ours + anchors


# --- the simulation ---------------------------------------------------------

Outcome = namedtuple("Outcome", "max_over_ideal spread over_capacity after_event failed_logins")


Daemon = namedtuple("Daemon", "sample_seconds counts_logins_in_progress")
DAEMON = Daemon(SAMPLE_SECONDS, True)  # what ltsp-server-advertise does by default


def simulate(scenario, policy, seed, daemon=DAEMON):
    """Run one scenario with one policy; returns an Outcome.

    daemon: how the servers' daemons behave (Daemon): the sample reuse time
    and whether logins in progress count as sessions.
    """
    rng = random.Random(seed)  # the world: servers, arrivals, login times
    choice_rng = random.Random(seed + 1)  # the clients' own randomness
    servers = build_servers(rng)
    for server in servers:
        server.counts_logins_in_progress = daemon.counts_logins_in_progress
    events = []
    sequence = 0

    def at(when, kind, payload=None):
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (when, sequence, kind, payload))

    for server in servers:
        server.take_sample()
        at(rng.uniform(0, daemon.sample_seconds), "sample", server)
    at(rng.uniform(0, LOAD_TICK_SECONDS), "tick")
    snapshot = {}
    if policy.poll_seconds:
        at(-rng.uniform(0, policy.poll_seconds), "poll")
    for n in range(scenario.logins):
        at(
            rng.uniform(0, scenario.spread_seconds),
            "arrive",
            f"02:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}:01",
        )
    event_server = None
    if scenario.event:
        at(scenario.event[1], scenario.event[0])
    end = scenario.spread_seconds + LOGIN_SECONDS[1] + RELOGIN_SECONDS + 1
    failed = 0

    while events:
        now, _seq, kind, payload = heapq.heappop(events)
        if now > end and kind in ("sample", "tick", "poll"):
            continue
        if kind == "sample":
            payload.take_sample()
            at(now + daemon.sample_seconds, "sample", payload)
        elif kind == "tick":
            for server in servers:
                server.tick_load()
            at(now + LOAD_TICK_SECONDS, "tick")
        elif kind == "poll":
            snapshot = {s.entry.name: (s.sessions, list(s.loads), s.mem_available_bytes()) for s in servers if s.alive}
            at(now + policy.poll_seconds, "poll")
        elif kind == "arrive":
            server = policy.pick(servers, now, choice_rng, payload, snapshot)
            if server is event_server:
                server.chosen_after_event += 1
            server.logging_in += 1
            connected = now + rng.uniform(*SSH_CONNECT_SECONDS)
            at(connected, "connect", server)
            at(connected + rng.uniform(*LOGIN_SECONDS), "login", (server, payload))
        elif kind == "connect":
            payload.ssh_pending += 1
        elif kind == "login":
            server, client = payload
            server.logging_in -= 1
            server.ssh_pending -= 1
            if server.alive:
                server.sessions += 1
            else:  # the login failed: the user tries again at once
                failed += 1
                at(now, "arrive", client)
        elif kind == "die":
            event_server = max((s for s in servers if s.alive), key=lambda s: s.sessions)
            event_server.alive = False
            for n in range(event_server.sessions):
                at(now + rng.uniform(0, RELOGIN_SECONDS), "arrive", f"02:01:00:00:{n >> 8 & 255:02x}:{n & 255:02x}")
            event_server.sessions = 0
        elif kind == "drain":
            event_server = max(servers, key=lambda s: s.capacity - s.sessions)
            event_server.state = "drain"
            event_server.take_sample()  # SIGHUP: the daemon advertises it at once
        elif kind == "join":
            newcomer = Server("new30", 16, 2400, 48)
            newcomer.counts_logins_in_progress = daemon.counts_logins_in_progress
            newcomer.take_sample()
            servers.append(newcomer)
            at(now + daemon.sample_seconds, "sample", newcomer)

    placed = [s for s in servers if s.alive and s.state == "ready"]
    ideal = sum(s.sessions for s in placed) / sum(s.capacity for s in placed)
    utilizations = [s.utilization() for s in placed]
    over = sum(max(0, s.sessions - math.floor(s.capacity)) for s in placed)
    after_event = event_server.chosen_after_event if event_server else None
    return Outcome(max(utilizations) / ideal, max(utilizations) - min(utilizations), over, after_event, failed)


# --- mac-hash: who moves when a server leaves or joins ----------------------


def moved_share(clients, before, after, first_server):
    moved = sum(1 for client in clients if first_server(client, before) != first_server(client, after))
    return moved / len(clients)


def mac_hash_movement(client_count, rng):
    """Share of clients whose server changes: rendezvous (ours) vs hash-mod-N."""
    macs = [":".join(f"{rng.randrange(256):02x}" for _ in range(6)) for _ in range(client_count)]
    stats = wire.ServerStats(hostname="x", state="ready", weight=100, rating=10.0, sample_age_ms=0)

    def pool(n):
        return [ProbeResult(PoolEntry(f"app{i}", f"app{i}", 377), stats, 1.0, None) for i in range(n)]

    def rendezvous(mac, candidates):
        return choose.order_mac_hash(candidates, None, mac)[0].entry.name

    def mod_n(mac, candidates):
        return candidates[int(choose.unit_hash(mac) * 2**53) % len(candidates)].entry.name

    thirty, twenty_nine, thirty_one = pool(30), pool(29), pool(31)
    rows = []
    for label, before, after in (("one of 30 leaves", thirty, twenty_nine), ("a 31st joins", thirty, thirty_one)):
        rows.append((label, moved_share(macs, before, after, rendezvous), moved_share(macs, before, after, mod_n)))
    return rows


TARGETS = {"storm 60 s": 1.10, "burst 10 s": 1.25}  # max/ideal for the default (issue 5)
SCENARIOS_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def print_scenario(scenario, seeds):
    """One table: every policy on SCENARIO, the worst of SEEDS. Returns {label: worst Outcome}."""
    event = scenario.event[0] if scenario.event else None
    print(f"\n== {scenario.name}")
    header = f"{'algorithm':<42} {'max/ideal':>9} {'spread':>7} {'over cap':>8}"
    print(header + (f" {'sent after':>10}" if event in ("die", "drain") else ""))
    worst_by_label = {}
    for policy in policies():
        outcomes = [simulate(scenario, policy, s) for s in seeds]
        worst = max(outcomes, key=lambda o: o.max_over_ideal)
        over = max(o.over_capacity for o in outcomes)
        line = f"{policy.label:<42} {worst.max_over_ideal:>9.2f} {worst.spread:>7.2f} {over:>8d}"
        if event in ("die", "drain"):
            line += f" {max(o.after_event for o in outcomes):>10d}"
        print(line)
        worst_by_label[policy.label] = worst._replace(over_capacity=over)
    return worst_by_label


def main(argv):
    seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else 2026
    quick = "--quick" in argv
    started = time.perf_counter()
    seeds = [seed] if quick else [seed, seed + 100, seed + 200]
    print(
        f"login storm: 30 servers (capacity x4 from smallest to largest), 1,400 logins, "
        f"sample reuse {SAMPLE_SECONDS:g} s, login {LOGIN_SECONDS[0]:g}-{LOGIN_SECONDS[1]:g} s, "
        f"seeds {seeds} (the worst shown)"
    )
    print("max/ideal: the fullest server's utilization over the even one; spread: max - min utilization;")
    print("over cap: sessions beyond a server's capacity; sent after: logins sent to it after it died/drained")
    default = f"{DEFAULT_ALGORITHM} (default)"
    verdicts = []
    for scenario in SCENARIOS:
        table = print_scenario(scenario, seeds)
        ours, herd = table[default], table["best-rated"]
        ratio = herd.max_over_ideal / ours.max_over_ideal
        print(f"ratio: best-rated herding / {DEFAULT_ALGORITHM}, max/ideal: {ratio:.2f}x")
        target = TARGETS.get(scenario.name)
        if target:
            verdicts.append(
                f"{scenario.name} max/ideal {ours.max_over_ideal:.2f} <= {target:.2f}: "
                + ("ok" if ours.max_over_ideal <= target else "MISSED")
            )
        verdicts.append(f"{scenario.name} no session over capacity: " + ("ok" if ours.over_capacity == 0 else "MISSED"))
    ablation_seeds = seeds if quick else [seed + 100 * n for n in range(10)]
    print(
        f"\n== what makes {DEFAULT_ALGORITHM} work: the daemon's fresh figures "
        f"(max/ideal over {len(ablation_seeds)} seeds, worst / mean)"
    )
    variants = (
        ("as shipped", DAEMON),
        ("logins in progress not counted", DAEMON._replace(counts_logins_in_progress=False)),
        ("samples reused 2 s", DAEMON._replace(sample_seconds=2.0)),
    )
    print(f"{'daemon':<34} " + " ".join(f"{name:>15}" for name in TARGETS))
    default_policy = Policy(default, our_policy(DEFAULT_ALGORITHM), None)
    for label, daemon in variants:
        cells = []
        for name in TARGETS:
            values = [
                simulate(SCENARIOS_BY_NAME[name], default_policy, s, daemon).max_over_ideal for s in ablation_seeds
            ]
            cells.append(f"{max(values):.2f} / {sum(values) / len(values):.2f}")
        print(f"{label:<34} " + " ".join(f"{cell:>15}" for cell in cells))
    print("\n== mac-hash: share of clients moved")
    print(f"{'change':<20} {'rendezvous':>10} {'hash-mod-N':>10} {'ideal':>6}")
    for label, ours, mod_n in mac_hash_movement(2000 if quick else 10000, random.Random(seed)):
        ideal = 1 / 30 if "leaves" in label else 1 / 31
        print(f"{label:<20} {ours:>10.1%} {mod_n:>10.1%} {ideal:>6.1%}")
    print(f"\ntargets for {DEFAULT_ALGORITHM}:")
    for verdict in verdicts:
        print(f"  {verdict}")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 1 if "--strict" in argv and any(v.endswith("MISSED") for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
