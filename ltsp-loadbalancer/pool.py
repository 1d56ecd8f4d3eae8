"""The balancer's view of the pool: latest documents, login accounting, and the choice of one login.

No I/O and no clock of its own (every method takes ``now``), so the tests
and benchmarks/login_storm.py drive it with a fake clock.

Rules:

- Each server of SERVERS keeps its latest probe result (stats or Down) and
  when it was taken (``taken_at``, the poll time less the document's
  sample age).
- **Login accounting.** A login handed out counts on its server at once: its
  rating drops by one and its sessions grow by one for every choice made
  after it. It stays counted until the server's own figures show it (a later
  sample, taken after the hand-out, whose sessions grew: each session more
  than the previous sample settles the oldest pending login) or until
  LOGIN_WINDOW_SECONDS pass (the client never logged in).
- Choosing uses get_hosts' own rules on the accounted figures: every server
  is judged by ``choose.assess`` (Down, Drain, Swapped, too loaded, too slow
  are skipped; a rating of 0 after accounting makes it a last resort), and
  the order is get_hosts' default, two-choice: two servers drawn by capacity,
  the one less full after this login first, then the others least full first.
  Two replicas that share nothing still spread a storm evenly: each one's
  draws are independent, and each counts its own hand-outs, so neither sends
  its next login to the server it just filled (docs/placement.md measures
  it against least-full-first, which herds replicas).
- Speed: verdicts are computed once per poll; each login re-ranks only the
  server it was handed to. A login costs O(log n) plus one join of the
  names, not a sort of the pool.
- A request may restrict the pool to servers it names; servers the balancer
  does not know are ignored (never contacted: the balancer polls only its
  own SERVERS).
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections import deque, namedtuple

from get_hosts import choose
from ltsp_lbcore.states import DOWN

Limits = namedtuple("Limits", "max_response_ms max_load skip_swapping")
Limits.__doc__ = "The filters of choose.assess (get_hosts' LB_MAX_RESPONSE_MS, LB_MAX_LOAD, LB_SKIP_SWAPPING)."

DEFAULT_LIMITS = Limits(None, None, True)
# Distinct request words remembered by Pool.known (a site's clients name one pool).
KNOWN_CACHE_WORDS = 4096
_INDEX = operator.itemgetter(2)  # a ranking key's server index


class Server:
    """One server of SERVERS: its latest probe, its pending logins, its verdict."""

    __slots__ = ("entry", "handed_out", "key", "pending", "result", "taken_at", "verdict")

    def __init__(self, entry):
        self.entry = entry
        self.result = None  # get_hosts.probe.ProbeResult, None before the first poll
        self.taken_at = None  # when the latest document's sample was taken
        self.pending = deque()  # hand-out times of logins not yet in the server's figures
        self.handed_out = deque()  # hand-out times in the last HISTORY_SECONDS (the status page)
        self.verdict = None
        self.key = None  # this server's place in its tier's ranking

    @property
    def stats(self):
        return None if self.result is None else self.result.stats

    def accounted(self):
        """The latest stats with the pending logins counted in (None when Down)."""
        stats = self.stats
        if stats is None or not self.pending:
            return stats
        extra = len(self.pending)
        return stats._replace(
            rating=max(0.0, stats.rating - extra),
            sessions=(stats.sessions or 0) + extra,
        )


class Pool:
    """Every server of SERVERS, the accounting, and the ranking that choosing reads."""

    def __init__(self, entries, rng, limits=DEFAULT_LIMITS, login_window_seconds=30.0, history_seconds=300.0):
        self.servers = [Server(entry) for entry in entries]
        self.rng = rng
        self.limits = limits
        self.login_window_seconds = login_window_seconds
        self.history_seconds = history_seconds
        self.polled_at = None
        self._tie = itertools.count()
        # Per tier (PREFERRED, LAST_RESORT): sorted [(fullness, tiebreak, index)].
        self._ranked = {choose.PREFERRED: [], choose.LAST_RESORT: []}
        self._by_name = {}
        self._capacity = [0.0] * len(self.servers)
        self._known_words = {}
        self.names = [server.entry.host for server in self.servers]
        self._cumulative = []
        for index, server in enumerate(self.servers):
            self._by_name.setdefault(server.entry.host.lower(), []).append(index)

    # --- events ---------------------------------------------------------------------

    def update(self, results, now):
        """A poll's results (one ProbeResult per server, pool order) arrived at NOW."""
        for server, result in zip(self.servers, results):
            self._settle_pending(server, result, now)
            server.result = result
            stats = result.stats
            server.taken_at = None if stats is None else now - stats.sample_age_ms / 1000.0
        self.polled_at = now
        self.rerank(now)

    def _settle_pending(self, server, result, now):
        """Drop the pending logins the new document shows, and those past the login window."""
        old, new = server.stats, result.stats
        if new is not None and old is not None and server.pending:
            grown = (new.sessions or 0) - (old.sessions or 0)
            sample_time = now - new.sample_age_ms / 1000.0
            while grown > 0 and server.pending and server.pending[0] <= sample_time:
                server.pending.popleft()
                grown -= 1
        self._expire(server, now)

    def _expire(self, server, now):
        while server.pending and server.pending[0] < now - self.login_window_seconds:
            server.pending.popleft()
        while server.handed_out and server.handed_out[0] < now - self.history_seconds:
            server.handed_out.popleft()

    def hand_out(self, index, now):
        """Count a login handed to server INDEX at NOW, and re-rank it."""
        server = self.servers[index]
        self._unrank(index)
        server.pending.append(now)
        server.handed_out.append(now)
        self._rank(index)

    # --- ranking --------------------------------------------------------------------

    def rerank(self, now):
        """Judge and rank every server again (after a poll, or a new config)."""
        for tier in self._ranked.values():
            tier.clear()
        for index, server in enumerate(self.servers):
            self._expire(server, now)
            server.key = None
            self._rank(index)
        # Capacities for the two-choice draws: fixed between polls (accounting changes fullness, not size).
        self._capacity = [0.0 if server.key is None else choose.capacity_of(server.stats) for server in self.servers]
        self._cumulative = list(itertools.accumulate(self._capacity))

    def _rank(self, index):
        server = self.servers[index]
        result = server.result
        if result is None:
            server.verdict = None
            return
        accounted = server.accounted()
        if accounted is not result.stats:
            result = result._replace(stats=accounted)
        server.verdict = choose.assess(result, self.limits)
        if server.verdict.tier is choose.SKIPPED:
            return
        server.key = (choose.fullness_after_one_more(accounted), next(self._tie), index)
        bisect.insort(self._ranked[server.verdict.tier], server.key)

    def _unrank(self, index):
        server = self.servers[index]
        if server.key is None:
            return
        ranked = self._ranked[server.verdict.tier]
        del ranked[bisect.bisect_left(ranked, server.key)]
        server.key = None

    # --- choosing -------------------------------------------------------------------

    def known(self, words):
        """Indexes of the servers named by WORDS (host or host:port); unknown ones are left out.

        Every client of a site names the same pool, so each word's answer is
        kept (up to KNOWN_CACHE_WORDS of them, for this SERVERS).
        """
        from ltsp_lbcore.hostport import parse_host_port

        chosen = set()
        cache = self._known_words
        for word in words:
            indexes = cache.get(word)
            if indexes is None:
                try:
                    host, port = parse_host_port(word)
                except ValueError:
                    indexes = ()
                else:
                    candidates = self._by_name.get(host.lower(), ())
                    indexes = tuple(i for i in candidates if port is None or self.servers[i].entry.port == port)
                if len(cache) < KNOWN_CACHE_WORDS:
                    cache[word] = indexes
            chosen.update(indexes)
        return sorted(chosen)

    def choose(self, now, among=None):
        """Server indexes best first for one login (hands the first out), or [] when none is usable.

        AMONG: the indexes a request restricts the pool to, or None for all.
        """
        allowed = None if among is None else set(among)
        order = []
        for tier in (choose.PREFERRED, choose.LAST_RESORT):
            if allowed is None:
                ranked = list(map(_INDEX, self._ranked[tier]))
            else:
                ranked = [key[2] for key in self._ranked[tier] if key[2] in allowed]
            order.extend(self._two_choice(ranked, tier, allowed))
        if order:
            self.hand_out(order[0], now)
        return order

    def _two_choice(self, ranked, tier, allowed):
        """RANKED (least full first) with the better of two capacity-weighted draws moved first."""
        if len(ranked) < 2:
            return ranked
        first = self._draw(ranked, tier, allowed, None)
        second = self._draw(ranked, tier, allowed, first)
        servers = self.servers
        winner = first if servers[first].key < servers[second].key else second
        place = ranked.index(winner)
        return [winner, *ranked[:place], *ranked[place + 1 :]]

    def _draw(self, ranked, tier, allowed, other):
        """One server of RANKED drawn with probability proportional to its capacity, OTHER excluded.

        Draws from the whole pool's capacities (computed once per poll) and
        retries a few times when the server is not a candidate: O(log n) in
        the usual case; a small restricted pool falls back to weights over
        its own candidates.
        """
        servers, cumulative = self.servers, self._cumulative
        if cumulative and cumulative[-1] > 0:
            for _ in range(8):
                index = bisect.bisect_right(cumulative, self.rng.random() * cumulative[-1])
                index = min(index, len(servers) - 1)
                server = servers[index]
                if (
                    index != other
                    and server.key is not None
                    and server.verdict.tier == tier
                    and (allowed is None or index in allowed)
                ):
                    return index
        candidates = [index for index in ranked if index != other]
        weights = [self._capacity[index] for index in candidates]
        if not any(weights):
            return self.rng.choice(candidates)
        return self.rng.choices(candidates, weights=weights)[0]

    def usable(self):
        return sum(len(tier) for tier in self._ranked.values())

    def down_reason(self, among=None):
        """Why no server (of AMONG, or of the pool) is usable, in get_hosts' words (counts per label)."""
        counts = {}
        for server in self.servers if among is None else [self.servers[index] for index in among]:
            label = server.verdict.label if server.verdict is not None else DOWN
            counts[label] = counts.get(label, 0) + 1
        summary = ", ".join(f"{n} {label}" for label, n in counts.items())
        return f"no usable server ({summary})"
