"""The balancer's view of the pool: latest documents, login accounting, and the choice of one login.

No I/O and no clock of its own (every method takes ``now``), so the tests
and benchmarks/login_storm.py drive it with a fake clock.

Rules (docs/placement.md measures them):

- Each server of SERVERS keeps its latest probe result (stats or Down) and
  when it was taken (``taken_at``, the poll time less the document's
  sample age).
- **Login accounting.** A login handed out counts on its server at once: its
  rating drops and its sessions grow for every choice made after it. It
  stays counted until the server's own figures show it (a later sample,
  taken after the hand-out, whose sessions grew: our share of that growth
  settles as many of the oldest pending logins) or until
  LOGIN_WINDOW_SECONDS pass (the client never logged in).
- **One client, one pending login** (``one_login_seconds``, the config's
  ONE_LOGIN_SECONDS; 0 turns it off): a client (by its address: what the
  request says of itself is not trusted) that asks again within that time
  gets its new login in place of its previous one, which stops counting
  unless it already became a session. A program asking in a loop holds one
  login's worth of any server; a retry (get_hosts' failed=) moves its count
  off the server that failed it. At most MAX_CLIENTS_REMEMBERED clients.
- **Other balancers.** Two or three balancers may run side by side and share
  nothing. Each one measures how many sessions the pool gained over its last
  SHARE_WINDOW_POLLS polls against the logins it handed out itself in that time
  (shifted by VISIBLE_AFTER_SECONDS, the time a login takes to show in a
  sample): the ratio, ``share_scale``, is about the number of balancers when
  clients split evenly, and it follows an uneven split or a balancer that
  stopped by itself, with no configuration. Each pending login then counts
  ``share_scale`` times: the logins the other balancers hand out meanwhile
  land where ours do, since they choose from the same figures by the same
  rule. Alone, the ratio stays near 1 and is taken as 1 (below ALONE_BELOW).
- **The choice**, with get_hosts' own rules on the accounted figures: every
  server is judged by ``choose``'s filters (Down, Failing, Drain and WEIGHT 0
  are skipped, once a poll; Swapped, too loaded and too slow are skipped
  by the limits in force: the request's own, ``Ask.limits``, else the
  config's; a rating of 0 after accounting makes it a last resort), and
  the usable ones are ordered least full after this login first
  (``choose.fullness_after_one_more``), ties at random. get_hosts draws two
  at random because each thin client is blind to the others' choices; the
  balancer sees every login it hands out, so its accounted view is exact
  between polls and a random draw would only add noise (two-choice here:
  1.035 against 1.012 in the 60 s storm).
- **A request's own algorithm** (``Ask.algorithm``, one of
  ``ORDERED_BY_REQUEST``) orders each tier instead, through get_hosts'
  ``choose.ALGORITHMS`` on the accounted figures (pending logins counted):
  mac-hash on ``Ask.client_key`` keeps a client on its server while that
  server is usable, as get_hosts' own mac-hash does on the same names.
- Speed: verdicts are computed once per poll; each login re-ranks only the
  server it was handed to (O(log n)), then the names are joined. The
  servers a request's limits skip are computed once per poll for each
  distinct set of limits (a site sends a few). A request's algorithm costs
  O(n) for its candidates. A poll's results are taken in steps of
  UPDATE_STEP servers (``updating``), so that logins go between them: each
  server is judged and re-ranked with its new figures as its step comes, as
  if its answer had come a moment later (1,000 servers at once held the
  event loop ~10 ms).
- A peek (``Ask.peek``) answers the same order and counts nothing: no
  login handed out.
- A request may restrict the pool to servers it names; servers the balancer
  does not know are ignored (never contacted: the balancer polls only its
  own SERVERS).
- **Outliers** (ejection.py decides): each poll tells it which logins became
  sessions, which expired and whose sessions fell, and the sessions none of
  our logins explains (a server's growth beyond the logins of ours it
  settled: someone else's logins); the share estimate tells it whether
  other balancers hand out logins too. /v1/hosts' ``failed=`` reports go
  to it too. A server it ejects is Failing, in a tier of its own
  (EJECTED) named only when no other server of the request is usable: a
  login screen is never left without a host while any server is usable.
  A half-open server is ranked as usual while its trial slot is free.
- A request's ``failed=`` servers go last in its answer.
"""

from __future__ import annotations

import bisect
import operator
from collections import OrderedDict, deque, namedtuple

from get_hosts import choose
from ltsp_lbcore.states import DOWN, FAILING

from .ejection import Outliers

# The filters' limits, get_hosts' own: LB_MAX_LOAD, LB_MAX_RESPONSE_MS, LB_SKIP_SWAPPING.
Limits = choose.Limits
DEFAULT_LIMITS = Limits(max_load=None, max_response_ms=None, skip_swapping=True)
Ask = namedtuple("Ask", "limits algorithm client_key peek")
Ask.__doc__ = """What one request asks beyond the servers: limits (a Limits, or None: the config's),
algorithm (a name of ORDERED_BY_REQUEST, or None: least full first), client_key (mac-hash's key),
peek (True: a look, counting nothing)."""
NO_ASK = Ask(None, None, None, False)
# The algorithms a request may name that order the balancer's candidates (``loadbalancer`` and none
# mean its own least-full order; ``fixed`` never asks a balancer).
ORDERED_BY_REQUEST = frozenset(name for name in choose.ALGORITHMS if name not in ("loadbalancer", "fixed"))
# Request algorithms that read no figure the accounting changes (rating, sessions): mac-hash weighs by
# capacity, random by nothing. Their candidates skip the accounted copy (half of mac-hash's cost here).
READS_NO_ACCOUNTING = frozenset({"mac-hash", "random"})
# Distinct limits whose skipped servers are kept until the next poll.
LIMITS_CACHE = 64
# Clients remembered for one_login_seconds (peer -> its latest login): a storm of 3,000 logins/s for 20 s.
MAX_CLIENTS_REMEMBERED = 65536
UPDATE_STEP = 100  # servers judged and re-ranked per step of a poll's update (~1 ms)
# The share estimate (see the rules): a login shows in a sample taken about
# this long after it was handed out (the client connects in well under a
# second, the daemon samples every second).
VISIBLE_AFTER_SECONDS = 1.0
SHARE_WINDOW_POLLS = 5  # the window of the estimate: 10 s at POLL_SECONDS 2, longer for slower polls
MIN_OWN_FOR_SHARE = 10  # fewer hand-outs in the window say nothing about a share
ALONE_BELOW = 1.4  # alone, timing noise moves the ratio by a few tenths
MAX_SHARE_SCALE = 8.0
# Distinct request words remembered by Pool.known (a site's clients name one pool).
KNOWN_CACHE_WORDS = 4096
KNOWN_WORDS_PER_CLIENT = 64  # a client names its pool, a few spellings of each: more is junk
_INDEX = operator.itemgetter(2)  # a ranking key's server index
# The tier of servers ejected as outliers (choose's tiers are PREFERRED 0 and LAST_RESORT 1).
EJECTED = 2
USABLE_TIERS = (choose.PREFERRED, choose.LAST_RESORT)
# Every limit open: what a server's own state alone decides (its ranking); the limits apply per request.
OPEN_LIMITS = choose.Limits(max_load=None, max_response_ms=None, skip_swapping=False)


class Server:
    """One server of SERVERS: its latest probe, its pending logins, its verdict."""

    __slots__ = ("entry", "handed_out", "key", "pending", "result", "taken_at", "tier", "verdict")

    def __init__(self, entry):
        self.entry = entry
        self.result = None  # get_hosts.probe.ProbeResult, None before the first poll
        self.taken_at = None  # when the latest document's sample was taken
        self.pending = deque()  # hand-out times of logins not yet in the server's figures
        self.handed_out = deque()  # hand-out times in the last history_seconds (the status page)
        self.verdict = None  # as the config's limits judge it (the pool view)
        self.tier = choose.SKIPPED  # its ranking (None: skipped by its own state, whatever the limits)
        self.key = None  # this server's place in its tier's ranking

    @property
    def stats(self):
        return None if self.result is None else self.result.stats

    def accounted(self, scale=1.0):
        """The latest stats with the pending logins counted in, each SCALE times (None when Down)."""
        stats = self.stats
        if stats is None:
            return None
        return choose.with_pending(stats, len(self.pending) * scale)


class Pool:
    """Every server of SERVERS, the accounting, and the ranking that choosing reads."""

    def __init__(
        self,
        entries,
        rng,
        limits=DEFAULT_LIMITS,
        login_window_seconds=30.0,
        history_seconds=300.0,
        ejections=None,
        one_login_seconds=0.0,
    ):
        self.servers = [Server(entry) for entry in entries]
        self.names = [server.entry.host for server in self.servers]
        # EJECTIONS: the balancer's count per host (kept across reloads, for /metrics).
        self.outliers = Outliers(self.names, login_window_seconds, ejections)
        self.rng = rng
        self.limits = limits
        self.login_window_seconds = login_window_seconds
        self.history_seconds = history_seconds
        self.polled_at = None
        self.share_scale = 1.0
        self.one_login_seconds = one_login_seconds
        self._clients = OrderedDict()  # peer -> (index, time) of its latest login, oldest first (one_login_seconds)
        self._recent = deque()  # our hand-out times, for the share estimate
        self._growth = deque()  # (poll time, sessions the pool gained since the poll before)
        # Per tier (PREFERRED, LAST_RESORT): sorted [(fullness, tiebreak, index)].
        self._ranked = {choose.PREFERRED: [], choose.LAST_RESORT: [], EJECTED: []}
        self._known_words = {}
        self._known_added = {}  # peer -> words it added to _known_words (at most as many peers as words)
        self._skipped_by = {}  # Limits -> frozenset of the indexes its limit filters skip (until the next poll)
        self._by_name = {}
        for index, server in enumerate(self.servers):
            self._by_name.setdefault(server.entry.host.lower(), []).append(index)

    # --- events ---------------------------------------------------------------------

    def update(self, results, now):
        """A poll's results (one ProbeResult per server, pool order) arrived at NOW: ``updating`` at once."""
        for _step in self.updating(results, now):
            pass

    def updating(self, results, now, step=UPDATE_STEP):
        """``update`` in steps of STEP servers: a generator; the caller may answer logins between its steps.

        Each server takes its new figures, settles and expires its pending logins and is re-ranked in its
        step; the pool-wide part (the share estimate, what no login explains, the poll's time, ejections
        for logins that never became sessions) comes before the first and after the last.
        """
        scale = self.share_scale
        self._estimate_share(results, now)
        outliers = self.outliers
        outliers.tick(now)
        unexplained = 0.0
        expired = []
        for first in range(0, len(self.servers), step):
            for index in range(first, min(first + step, len(self.servers))):
                server, result = self.servers[index], results[index]
                old, new = server.stats, result.stats
                grown = 0 if old is None or new is None else (new.sessions or 0) - (old.sessions or 0)
                if grown < 0:
                    outliers.sessions_fell(index, now)
                confirmed = self._settle_pending(server, result, now)
                if confirmed:
                    outliers.confirmed(index, confirmed, now)
                if grown > 0:
                    # Growth beyond our share of it: people someone else sent (see the rules).
                    unexplained += grown - min(confirmed, grown / self.share_scale)
                server.result = result
                stats = result.stats
                server.taken_at = None if stats is None else now - stats.sample_age_ms / 1000.0
                times = self._expire(server, now)
                if times:
                    expired.append((index, times))
                self._rerank_one(index, now)
            self._skipped_by.clear()  # the limits' skipped servers, from the figures as they are now
            yield
        outliers.unexplained(unexplained, now)
        self.polled_at = now
        if self.share_scale != scale:  # every server's accounted figures moved: rank them all again
            self._rank_all(now)
        self._weigh_expired(expired, now)

    def _estimate_share(self, results, now):
        """share_scale: the sessions the pool gained for each login we handed out (see the rules)."""
        grown = 0
        for server, result in zip(self.servers, results):
            old, new = server.stats, result.stats
            if old is not None and new is not None:
                grown += (new.sessions or 0) - (old.sessions or 0)
        growth, recent = self._growth, self._recent
        growth.append((now, grown))
        while len(growth) > SHARE_WINDOW_POLLS + 1:
            growth.popleft()
        while recent and recent[0] < growth[0][0] - VISIBLE_AFTER_SECONDS:
            recent.popleft()
        if len(growth) < 2:
            return
        start, end = growth[0][0] - VISIBLE_AFTER_SECONDS, now - VISIBLE_AFTER_SECONDS
        own = bisect.bisect_right(recent, end) - bisect.bisect_right(recent, start)
        if own >= MIN_OWN_FOR_SHARE:
            ratio = sum(grown for _when, grown in list(growth)[1:]) / own
            self.share_scale = min(MAX_SHARE_SCALE, ratio) if ratio >= ALONE_BELOW else 1.0
            self.outliers.others_share = self.share_scale > 1.0

    def _settle_pending(self, server, result, now):
        """Drop the pending logins the new document shows: how many (they became sessions)."""
        old, new = server.stats, result.stats
        settled = 0
        if new is not None and old is not None and server.pending:
            grown = (new.sessions or 0) - (old.sessions or 0)
            ours = -(-grown // self.share_scale) if grown > 0 else 0  # our share of the growth, rounded up
            sample_time = now - new.sample_age_ms / 1000.0
            while ours > 0 and server.pending and server.pending[0] <= sample_time:
                server.pending.popleft()
                ours -= 1
                settled += 1
        return settled

    def _expire(self, server, now):
        """Drop the pending logins past the login window (the client never logged in): their hand-out times."""
        expired = None
        limit = now - self.login_window_seconds
        pending = server.pending
        while pending and pending[0] < limit:
            if expired is None:
                expired = []
            expired.append(pending.popleft())
        while server.handed_out and server.handed_out[0] < now - self.history_seconds:
            server.handed_out.popleft()
        return expired

    def hand_out(self, index, now, peer=None):
        """Count a login handed to server INDEX at NOW (for client PEER), and re-rank it."""
        if peer is not None and self.one_login_seconds > 0:
            self._replace_login(peer, index, now)
        server = self.servers[index]
        self._unrank(index)
        server.pending.append(now)
        server.handed_out.append(now)
        self._recent.append(now)
        if index in self.outliers.out:
            self.outliers.handed_out(index, peer, now)
        self._rank(index, now)

    def _replace_login(self, peer, index, now):
        """PEER's login at NOW to INDEX takes the place of its previous one within one_login_seconds, which
        stops counting (unless it already became a session or expired: then it is no longer pending)."""
        clients = self._clients
        previous = clients.pop(peer, None)
        clients[peer] = (index, now)
        while len(clients) > MAX_CLIENTS_REMEMBERED or next(iter(clients.values()))[1] < now - self.one_login_seconds:
            clients.popitem(last=False)  # oldest first: forgotten once past the window
        if previous is None or previous[1] < now - self.one_login_seconds:
            return
        was, handed_at = previous
        server = self.servers[was]
        if not _remove_sorted(server.pending, handed_at):
            return  # it became a session, or expired: no longer pending
        self._unrank(was)
        _remove_sorted(server.handed_out, handed_at)
        _remove_sorted(self._recent, handed_at)
        self._rank(was, now)

    def carry_clients(self, old, kept):
        """A reload: the clients of OLD (a Pool) whose latest login went to a server kept (KEPT: pairs of new
        and old index) are remembered here under its new index, so a client asking after a SIGHUP replaces."""
        new_index = {old_index: index for index, old_index in kept}
        for peer, (index, when) in old._clients.items():
            if index in new_index:
                self._clients[peer] = (new_index[index], when)

    def report(self, indexes, peer, now):
        """Client PEER says its last login, to one of INDEXES, did not last (get_hosts' failed=)."""
        for index in indexes:
            if self.outliers.reported(index, peer, now):
                self._rerank_one(index, now)

    # --- ranking --------------------------------------------------------------------

    def rerank(self, now):
        """Judge and rank every server again (after a poll, or a new config); logins past the window expire."""
        outliers = self.outliers
        outliers.tick(now)
        expired = []
        for index, server in enumerate(self.servers):
            times = self._expire(server, now)
            if times:
                expired.append((index, times))
        self._rank_all(now)
        self._weigh_expired(expired, now)

    def _weigh_expired(self, expired, now):
        """EXPIRED: (index, hand-out times) of logins past the window, after the ranking: ejection.py weighs
        the evidence against the pool's usable servers; a server whose mode changed is ranked again."""
        for index, times in expired:
            if self.outliers.expired(index, times, now):
                self._rerank_one(index, now)

    def _rank_all(self, now):
        for tier in self._ranked.values():
            tier.clear()
        self._skipped_by.clear()
        for index, server in enumerate(self.servers):
            server.key = None
            self._rank(index, now)

    def _rerank_one(self, index, now):
        self._unrank(index)
        self._rank(index, now)

    def _rank(self, index, now):
        """Rank server INDEX by its own state (every limit open); its verdict as the config's limits judge it."""
        server = self.servers[index]
        result = server.result
        if result is None:
            server.verdict, server.tier = None, choose.SKIPPED
            self.outliers.set_usable(index, False)
            return
        accounted = server.accounted(self.share_scale)
        if accounted is not result.stats:
            result = result._replace(stats=accounted)
        verdict = choose.assess(result, OPEN_LIMITS)
        tier = verdict.tier
        limited = None if tier is choose.SKIPPED else choose.rejection(result, self.limits, choose.LIMIT_FILTERS)
        self.outliers.set_usable(index, tier is not choose.SKIPPED and limited is None)
        if tier is not choose.SKIPPED and index in self.outliers.out:
            if not self.outliers.admits(index, now):
                tier = EJECTED
            verdict = choose.Verdict(result, FAILING, tier, self.outliers.reason(index, now))
        server.tier = tier
        server.verdict = verdict if limited is None else choose.Verdict(result, limited[0], choose.SKIPPED, limited[1])
        if tier is choose.SKIPPED:
            return
        fullness = choose.fullness_after_one_more(server.stats, len(server.pending) * self.share_scale)
        server.key = (fullness, self.rng.random(), index)
        bisect.insort(self._ranked[tier], server.key)

    def _unrank(self, index):
        server = self.servers[index]
        if server.key is None:
            return
        ranked = self._ranked[server.tier]
        del ranked[bisect.bisect_left(ranked, server.key)]
        server.key = None

    # --- choosing -------------------------------------------------------------------

    def known(self, words, peer=None):
        """Indexes of the servers named by WORDS (host or host:port); unknown ones are left out.

        Every client of a site names the same pool, so each word's answer is
        kept (up to KNOWN_CACHE_WORDS of them, for this SERVERS): only a word
        that names a server, and at most KNOWN_WORDS_PER_CLIENT added by one
        client (PEER), so junk or endless spellings from one client cannot
        fill it and leave everyone else's words unkept.
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
                if indexes and len(cache) < KNOWN_CACHE_WORDS:
                    added = self._known_added.get(peer, 0)
                    if added < KNOWN_WORDS_PER_CLIENT:
                        self._known_added[peer] = added + 1
                        cache[word] = indexes
            chosen.update(indexes)
        return sorted(chosen)

    def choose(self, now, among=None, last=(), peer=None, ask=NO_ASK):
        """Server indexes best first for one login (hands the first out), or [] when none is usable.

        AMONG: the indexes a request restricts the pool to, or None for all. LAST: indexes that go
        last (the client's failed= servers). PEER: the client's address (a half-open server's trials).
        ASK: the request's own limits, algorithm and key, and whether it only peeks (an Ask).
        """
        if now >= self.outliers.next_change:
            for index in self.outliers.tick(now):
                self._rerank_one(index, now)
        allowed = None if among is None else set(among)
        skipped = self.skipped_by(ask.limits or self.limits)
        tiers = [self._collect(tier, allowed, skipped) for tier in USABLE_TIERS]
        if not any(tiers):  # ejected servers rather than no host at all
            tiers = [self._collect(EJECTED, allowed, skipped)]
        order = []
        for members in tiers:
            if ask.algorithm is not None and len(members) > 1:
                members = self._ordered_by(ask.algorithm, members, ask.client_key)
            order.extend(members)
        if last and len(order) > 1:
            failed = set(last)
            order = [i for i in order if i not in failed] + [i for i in order if i in failed]
        if order and not ask.peek:
            self.hand_out(order[0], now, peer)
        return order

    def _collect(self, tier, allowed, skipped):
        ranked = self._ranked[tier]
        if allowed is None and not skipped:
            return list(map(_INDEX, ranked))
        return [key[2] for key in ranked if (allowed is None or key[2] in allowed) and key[2] not in skipped]

    def skipped_by(self, limits):
        """Indexes of the servers LIMITS' filters skip (swapping, too loaded, too slow), kept until the next poll."""
        skipped = self._skipped_by.get(limits)
        if skipped is None:
            skipped = frozenset(
                index
                for index, server in enumerate(self.servers)
                if server.stats is not None and choose.rejection(server.result, limits, choose.LIMIT_FILTERS)
            )
            if len(self._skipped_by) < LIMITS_CACHE:
                self._skipped_by[limits] = skipped
        return skipped

    def _ordered_by(self, algorithm, members, client_key):
        """MEMBERS (indexes) in the order get_hosts' ALGORITHM gives them on the accounted figures."""
        candidates = []
        accounting = algorithm not in READS_NO_ACCOUNTING
        for index in members:
            server = self.servers[index]
            result = server.result
            if accounting and server.pending:
                result = result._replace(stats=server.accounted(self.share_scale))
            candidates.append(result)
        position = {id(candidate): index for candidate, index in zip(candidates, members)}
        ordered = choose.ALGORITHMS[algorithm](candidates, self.rng, client_key or "")
        return [position[id(candidate)] for candidate in ordered]

    def down_reason(self, among=None, limits=None):
        """Why no server (of AMONG, or of the pool) is usable under LIMITS (the config's), in get_hosts' words."""
        limits = limits or self.limits
        counts = {}
        for server in self.servers if among is None else [self.servers[index] for index in among]:
            label = server.verdict.label if server.verdict is not None else DOWN
            if server.tier is not choose.SKIPPED and limits != self.limits:
                limited = choose.rejection(server.result, limits, choose.LIMIT_FILTERS)
                label = limited[0] if limited else label
            counts[label] = counts.get(label, 0) + 1
        summary = ", ".join(f"{n} {label}" for label, n in counts.items())
        return f"no usable server ({summary})"


def _remove_sorted(times, value):
    """Remove one VALUE from TIMES (sorted, a deque or list) by bisection: True when it was there."""
    at = bisect.bisect_left(times, value)
    if at < len(times) and times[at] == value:
        del times[at]
        return True
    return False
