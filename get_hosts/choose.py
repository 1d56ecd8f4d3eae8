"""Choosing: which probed servers are usable, and in what order. Pure functions.

No I/O here: the input is a list of probe.ProbeResult (or anything with
.entry, .stats, .response_ms, .error), the limits from settings, a
``random.Random`` and the client key; the output is an ordered list.

Rules:

- Every server gets one Verdict from the first filter of FILTERS that
  rejects it (SERVER_FILTERS, the server's own state, then LIMIT_FILTERS,
  the client's limits), in this order: Down (no valid answer), Failing (the daemon
  says its login service fails its check), Drain (state drain or
  maint, or WEIGHT 0: the admin's "takes no new sessions"), Swapped
  (swapping now, when LB_SKIP_SWAPPING), Busy (load per CPU above
  LB_MAX_LOAD, or answered slower than LB_MAX_RESPONSE_MS). These are
  skipped. A server that passes is Idle when its rating is above 0, else Busy
  as a last resort: used only after every Idle server.
- An algorithm orders the Idle servers, then (separately) the last-resort
  Busy ones; the output is the first list followed by the second.
- ALGORITHMS maps each LB_ALGORITHM name to a function
  ``(candidates, rng, client_key) -> ordered list`` that returns a
  permutation of its input. NO_PROBE names the algorithms that need no
  probing at all.
- No usable server at all: the whole pool in configured order (a login
  screen is never left without a host); Choice.fallback says why.
"""

import math
from collections import namedtuple

from get_hosts.errors import GetHostsError
from ltsp_lbcore.oldpython import record
from ltsp_lbcore.states import BUSY, DOWN, DRAINING, FAILING, IDLE, READY, SWAPPED

# Verdict.tier: PREFERRED and LAST_RESORT servers are usable, SKIPPED are not.
PREFERRED, LAST_RESORT, SKIPPED = 0, 1, None

Verdict = namedtuple("Verdict", "result label tier reason")
Choice = namedtuple("Choice", "order verdicts fallback")
Choice.__doc__ = """order: ProbeResults best first (usable ones, or the whole pool on fallback).

verdicts: one Verdict per pool entry, in pool order. fallback: None, or why
the whole pool was returned.
"""

# --- filters: (label, check) where check(result, limits) -> reason or None --


def _no_answer(result, limits):
    if result.stats is None:
        return result.error or "no answer"
    return None


def _failing(result, limits):
    reason = result.stats.failing
    return None if reason is None else f"login service failing: {reason}"


def _not_ready(result, limits):
    state = result.stats.state
    return None if state == READY else f"state {state}: takes no new sessions"


def _weight_zero(result, limits):
    # The daemon's config says WEIGHT 0 takes no new sessions: skipped like
    # drain, never a last resort (its rating would make it one).
    return "WEIGHT 0: takes no new sessions" if result.stats.weight == 0 else None


def _swapping(result, limits):
    if limits.skip_swapping and result.stats.swapping:
        return "swapping now (LB_SKIP_SWAPPING)"
    return None


def _overloaded(result, limits):
    load = result.stats.load_per_cpu
    if limits.max_load is not None and load is not None and load > limits.max_load:
        return f"load {load:.2f}/cpu above LB_MAX_LOAD {limits.max_load:g}"
    return None


def _too_slow(result, limits):
    ms = result.response_ms
    if limits.max_response_ms is not None and ms is not None and ms > limits.max_response_ms:
        return f"answered in {ms:.0f} ms, above LB_MAX_RESPONSE_MS {limits.max_response_ms}"
    return None


# The server's own state, then the client's limits (LB_SKIP_SWAPPING, LB_MAX_LOAD, LB_MAX_RESPONSE_MS):
# ltsp-loadbalancer judges each server by the first once a poll, and by the second per request.
SERVER_FILTERS = (
    (DOWN, _no_answer),
    (FAILING, _failing),
    (DRAINING, _not_ready),
    (DRAINING, _weight_zero),
)
LIMIT_FILTERS = (
    (SWAPPED, _swapping),
    (BUSY, _overloaded),
    (BUSY, _too_slow),
)
FILTERS = SERVER_FILTERS + LIMIT_FILTERS

Limits = record("Limits", "max_load max_response_ms skip_swapping", defaults=(None, None, True))
Limits.__doc__ = "The filter limits; a settings.Settings works too (same field names)."


def rejection(result, limits, filters=FILTERS):
    """(label, reason) of the first of FILTERS that skips RESULT under LIMITS, or None."""
    for label, check in filters:
        reason = check(result, limits)
        if reason is not None:
            return label, reason
    return None


def assess(result, limits):
    """One ProbeResult -> Verdict(result, label, tier, reason)."""
    rejected = rejection(result, limits)
    if rejected is not None:
        return Verdict(result, rejected[0], SKIPPED, rejected[1])
    rating = result.stats.rating
    if rating <= 0:
        return Verdict(result, BUSY, LAST_RESORT, f"rating {rating:g}: full, used only after every Idle server")
    return Verdict(result, IDLE, PREFERRED, f"rating {rating:g}")


# --- algorithms: (candidates, rng, client_key) -> ordered list --------------


def order_random(candidates, rng, client_key=None):
    """Uniform shuffle."""
    order = list(candidates)
    rng.shuffle(order)
    return order


def order_best_rated(candidates, rng, client_key=None):
    """Highest rating first; equal ratings in random order."""
    return sorted(candidates, key=lambda c: (-c.stats.rating, rng.random()))


def order_weighted(candidates, rng, client_key=None):
    """Weighted sampling without replacement, weight = rating (Efraimidis-Spirakis).

    Each server draws key = u ** (1/w), compared as log(u)/w (same order, no
    underflow); sorting by key descending gives the whole list, the first
    being server i with probability w_i / sum(w). Servers with w <= 0 come
    last, in random order.
    """

    def key(candidate):
        weight = candidate.stats.rating
        u = 1.0 - rng.random()  # in (0, 1]: log is defined
        if weight > 0:
            return (1, math.log(u) / weight)
        return (0, u)

    return sorted(candidates, key=key, reverse=True)


_FNV_OFFSET, _FNV_PRIME, _MASK64 = 0xCBF29CE484222325, 0x100000001B3, 0xFFFFFFFFFFFFFFFF


def _fnv1a(value, text):
    """64-bit FNV-1a of TEXT's UTF-8, continued from state VALUE (a shared prefix is hashed once)."""
    for byte in text.encode("utf-8", "surrogateescape"):
        value = ((value ^ byte) * _FNV_PRIME) & _MASK64
    return value


def _unit(value):
    """murmur3's fmix64 of an FNV state, as a float in (0, 1)."""
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    value ^= value >> 33
    return ((value >> 11) + 0.5) / 9007199254740992.0  # 53 bits, never 0 or 1


def unit_hash(text):
    """A stable uniform float in (0, 1) from TEXT: 64-bit FNV-1a, then murmur3's fmix64.

    Pure Python so that mac-hash needs no hashlib (OpenSSL) at start-up; the
    finaliser spreads every input bit over the output, so near-identical
    MACs land far apart. Stable across runs, machines and Python versions.
    """
    return _unit(_fnv1a(_FNV_OFFSET, text))


def rendezvous_score(client_key, entry, weight, _prefix=None):
    """Weighted rendezvous (HRW) score of one server for one client: -w / ln(h).

    h hashes the client key with the pool entry's name and port (two servers
    on one host differ by port): unit_hash(f"{client_key}\n{name}\n{port}").
    Higher is better. _PREFIX: the FNV state of f"{client_key}\n", when known.
    """
    prefix = _fnv1a(_FNV_OFFSET, f"{client_key}\n") if _prefix is None else _prefix
    h = _unit(_fnv1a(prefix, f"{entry.name}\n{entry.port}"))
    return -weight / math.log(h)


def order_mac_hash(candidates, rng=None, client_key=""):
    """Weighted rendezvous hashing on the client key (its MAC).

    Weight is the server's advertised capacity (its size, WEIGHT applied),
    else its WEIGHT from an older daemon: stable, unlike the rating, so a
    client keeps its server while that server is usable, a server twice the
    size keeps twice the clients, and one server leaving or joining moves
    only about its share of them. Servers of weight 0 come last; ties (only
    with weight 0) by pool name.
    """

    prefix = _fnv1a(_FNV_OFFSET, f"{client_key}\n")  # the key's bytes once, not once per server

    def key(candidate):
        stats = candidate.stats
        weight = 100 if stats is None else (stats.capacity if stats.capacity is not None else stats.weight)
        score = rendezvous_score(client_key, candidate.entry, weight, prefix)
        return (-score, candidate.entry.name, candidate.entry.port)

    return sorted(candidates, key=key)


def capacity_of(stats):
    """Sessions a server holds in all: its <capacity>, else rating + sessions (an older daemon), at least 1."""
    if stats.capacity:
        return stats.capacity
    return max(stats.rating + (stats.sessions or 0), 1.0)


def with_pending(stats, pending):
    """STATS with PENDING logins counted in (the balancer's accounting: logins it handed out that the
    figures do not show yet): that many more sessions, that much less rating (not below 0)."""
    if not pending:
        return stats
    return stats._replace(rating=max(0.0, stats.rating - pending), sessions=(stats.sessions or 0) + pending)


def fullness_after_one_more(stats, pending=0.0):
    """How full the server would be with this login too: (used + PENDING + 1) / capacity.

    PENDING: logins already sent there that its figures do not show yet (the
    balancer's accounting); they count past full too, where the rating stops at 0.
    """
    capacity = capacity_of(stats)
    return (capacity - min(stats.rating, capacity) + pending + 1) / capacity


def order_two_choice(candidates, rng, client_key=None):
    """The power of two choices, sized: the default (docs/placement.md says why).

    Two different servers are drawn with probability proportional to their
    capacity; the one that would be less full after this login goes first.
    The others follow, least full first (ties at random). Every client of a
    login storm reads the same seconds-old figures: best-rated sends them all
    to one server, weighted random piles up noise; two random candidates,
    compared, stay balanced on old information (Mitzenmacher 2000), and
    drawing them by capacity gives each server its share when all are empty.
    """
    rest = list(candidates)
    if len(rest) < 2:
        return rest
    weights = [capacity_of(candidate.stats) for candidate in rest]
    first = rng.choices(range(len(rest)), weights=weights)[0]
    weights[first] = 0.0
    second = rng.choices(range(len(rest)), weights=weights)[0]

    def fullness(candidate):
        return (fullness_after_one_more(candidate.stats), rng.random())

    winner = min(rest[first], rest[second], key=fullness)
    rest.remove(winner)
    return [winner, *sorted(rest, key=fullness)]


def order_fixed(candidates, rng=None, client_key=None):
    """The pool exactly as configured."""
    return list(candidates)


ALGORITHMS = {
    "two-choice": order_two_choice,
    "random": order_random,
    "best-rated": order_best_rated,
    "weighted": order_weighted,
    "mac-hash": order_mac_hash,
    "fixed": order_fixed,
    # Asking ltsp-loadbalancer (get_hosts.balancer_client); this is what
    # get_hosts does itself when no balancer answers: the default.
    "loadbalancer": order_two_choice,
}
NO_PROBE = frozenset({"fixed"})


def get_algorithm(name):
    """The ordering function for NAME, or GetHostsError listing the valid names."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        valid = ", ".join(sorted(ALGORITHMS))
        raise GetHostsError(f"unknown LB_ALGORITHM {name!r} (valid: {valid})") from None


def choose(results, limits, algorithm, rng, client_key=None):
    """Probe results (pool order) -> Choice(order, verdicts, fallback).

    ALGORITHM is a function of ALGORITHMS. Usable servers: Idle ones ordered
    by it, then last-resort Busy ones ordered by it. None usable: the whole
    pool in configured order, with the reason in Choice.fallback.
    """
    verdicts = [assess(result, limits) for result in results]
    preferred = [v.result for v in verdicts if v.tier == PREFERRED]
    last_resort = [v.result for v in verdicts if v.tier == LAST_RESORT]
    order = algorithm(preferred, rng, client_key) + algorithm(last_resort, rng, client_key)
    if order:
        return Choice(order, verdicts, None)
    counts = {}
    for verdict in verdicts:
        counts[verdict.label] = counts.get(verdict.label, 0) + 1
    summary = ", ".join(f"{n} {label}" for label, n in counts.items())
    return Choice(list(results), verdicts, f"no usable server ({summary}); using the whole pool in configured order")
