"""Outlier ejection: which servers the balancer's own evidence says are black holes. Pure, on the caller's clock.

A server whose login service is broken keeps answering its polls with 0
sessions, so it looks the emptiest and would win every login. The daemon's
own check (its ``<failing>`` element) catches what it can see; this module
catches the rest from what only the balancer knows: where it sent logins.
Rules (docs/placement.md, "A broken server", says why these figures):

- **Evidence 1: logins that never become sessions.** pool.py settles a
  login when the server's sessions grow, else it expires after the login
  window. An expiry is *conclusive* only when the server's sessions never
  fell while that login was pending (people logging out hide people
  logging in). A server's *streak* is its conclusive expiries since its
  last confirmed login. The streak is evidence only against the rest of the
  pool: with ``p`` the share of other servers' logins that became sessions
  since the streak began (its lower 95 % bound, Wilson's: a few lucky
  logins elsewhere prove little), a healthy server would show ``n``
  unconfirmed in a row with probability ``(1 - p) ** n``. It is ejected
  when that is at most UNCONFIRMED_ALPHA, n >= MIN_UNCONFIRMED and at least
  one other login was confirmed. So a storm where everyone logs in at once
  ejects after 4, a room of greeters nobody uses (LDM asks for a host before
  anyone types) after a hundred or more, and a whole site that is slow never.
- **Evidence 1 is a lone balancer's.** An unconfirmed login is evidence
  only if its person logged in nowhere, which only a balancer that hands
  out every login of the pool can tell. Two guards, both from pool.py's
  figures (``others_share``, ``unexplained``):
  - When the share estimate says other balancers hand out logins we never
    see (``share_scale`` above 1: replicas each asked by some clients),
    which of our logins became sessions is itself an estimate (each
    server's growth is split by it), so expiries prove nothing: no
    ejection from them; failure reports still eject.
  - Sessions the pool gained that none of our logins explains (a server's
    growth beyond the logins of ours it settled) are people someone else
    sent: another replica's answer taken instead of ours (get_hosts asks
    every LB_BALANCER at once and uses the first answer, so each replica
    counts logins that are never used, and the share estimate stays 1),
    a login from outside. Each one may be one of the streak's people, so
    it cancels one of its expiries: ``n`` above is the streak less the
    unexplained sessions since a login window before its first login
    (settling pairs sessions with logins by count only, up to a login
    window apart). Alone, none appear and nothing changes.
- **Evidence 2: failure reports.** ``failed=HOST`` on /v1/hosts is one
  client's word that its last login there did not last. Clients are told
  apart by peer address; REPORTERS distinct ones within REPORT_WINDOW_SECONDS
  eject. A client reporting again counts once (it moves to the front of a
  per-server LRU of at most MAX_REPORTERS), so one client cannot eject a
  server however often it asks.
- **Ejection** lasts BASE_EJECTION_SECONDS times the number of ejections of
  that server in the last hour (this one included), at most
  MAX_EJECTION_SECONDS (Envoy's rule). Then **half-open**: one trial login
  every TRIAL_SECONDS at most; the first login that becomes a session there
  restores it. A trial whose client reports it, or that expires unconfirmed
  while others' logins succeed (HALF_OPEN_ALPHA), ejects it again, longer.
- **The cap:** at most half of the usable pool (servers that the daemon's
  own figures would let take logins) is out at once; evidence against one
  more is logged once and the server keeps serving.
- Every ejection and return is ONE log line with its evidence; a server held
  back by the cap is one line too, once per piece of evidence.

Servers are indexes into the pool (pool.py's order). Nothing here reads a
clock: every method takes ``now`` (seconds, monotonic).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque

log = logging.getLogger(__name__)

SERVING, EJECTED, HALF_OPEN = "serving", "ejected", "half-open"

MIN_UNCONFIRMED = 3  # a streak shorter than this is never evidence, whatever the rest of the pool does
UNCONFIRMED_ALPHA = 1e-4  # how unlikely the streak must be for a healthy server
HALF_OPEN_ALPHA = 0.1  # a half-open server was ejected already: a weaker doubt sends it back
REPORTERS = 2  # distinct clients reporting a server within the window eject it
REPORT_WINDOW_SECONDS = 60.0  # get_hosts' LB_RETRY_SECONDS: a report is about a login at most this old
MAX_REPORTERS = 32  # per server, most recent first: memory is bounded whatever the clients send
BASE_EJECTION_SECONDS = 30.0
MAX_EJECTION_SECONDS = 300.0
EJECTION_MEMORY_SECONDS = 3600.0  # ejections counted for the growth (and shown: "in the last hour")
TRIAL_SECONDS = 10.0  # half-open: at most one login this often
MAX_OUT_SHARE = 0.5  # of the usable pool
# Outcomes of the pool's logins (confirmed, expired) and the sessions none of ours explains, in buckets: the rest
# of the pool's success rate, and who else hands out logins.
BUCKET_SECONDS = 5.0
OUTCOME_MEMORY_SECONDS = 600.0
TRIAL_PEERS = 8  # clients of recent trial logins remembered per half-open server

NEVER = float("inf")


class Health:
    """One server's standing: its mode, its evidence, its ejections."""

    __slots__ = (
        "ejected_until",
        "ejections",
        "evidence",
        "fell_at",
        "held",
        "mode",
        "name",
        "reporters",
        "since",
        "streak",
        "streak_from",
        "trial_at",
        "trial_peers",
        "usable",
    )

    def __init__(self, name):
        self.name = name
        self.mode = SERVING
        self.since = -NEVER  # when the current mode began
        self.usable = False  # the daemon's figures let it take logins (pool.py sets it)
        self.streak = 0  # conclusive unconfirmed expiries since its last confirmed login
        self.streak_from = None  # hand-out time of the streak's first login
        self.fell_at = -NEVER  # the latest poll that saw its sessions fall
        self.reporters = OrderedDict()  # peer -> time of its latest report, oldest first
        self.ejections = deque()  # start times of its ejections in the last hour
        self.ejected_until = None
        self.evidence = None  # why it is out (the ejection's log line)
        self.held = False  # the cap held it back: said once
        self.trial_at = None  # the latest trial login (half-open)
        self.trial_peers = deque(maxlen=TRIAL_PEERS)


class Outcomes:
    """The whole pool's confirmed and expired logins, and its unexplained sessions, in buckets of BUCKET_SECONDS."""

    def __init__(self):
        self.buckets = deque()  # [bucket number, confirmed, expired, unexplained] (bounded)

    def add(self, now, confirmed=0, expired=0, unexplained=0.0):
        number = int(now // BUCKET_SECONDS)
        buckets = self.buckets
        if not buckets or buckets[-1][0] != number:
            buckets.append([number, 0, 0, 0.0])
            oldest = number - OUTCOME_MEMORY_SECONDS / BUCKET_SECONDS
            while buckets[0][0] < oldest:
                buckets.popleft()
        buckets[-1][1] += confirmed
        buckets[-1][2] += expired
        buckets[-1][3] += unexplained

    def since(self, start):
        """(confirmed, expired, unexplained) in the buckets from START's on."""
        first = int(start // BUCKET_SECONDS)
        confirmed = expired = 0
        unexplained = 0.0
        for number, c, e, u in reversed(self.buckets):
            if number < first:
                break
            confirmed += c
            expired += e
            unexplained += u
        return confirmed, expired, unexplained


Z_95 = 1.645  # one-sided 95 %


def success_rate_low(successes, trials):
    """The lower one-sided 95 % bound of a success rate (Wilson's score interval); 0 with no trials."""
    if trials <= 0:
        return 0.0
    rate = successes / trials
    z2 = Z_95 * Z_95
    centre = rate + z2 / (2 * trials)
    spread = Z_95 * math.sqrt(rate * (1 - rate) / trials + z2 / (4 * trials * trials))
    return max(0.0, (centre - spread) / (1 + z2 / trials))


def _ordinal(n):
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


class Outliers:
    """Every server's Health, the pool's outcomes, and the decisions. COUNTER (host -> ejections) is the balancer's."""

    def __init__(self, names, login_window_seconds=30.0, counter=None):
        self.health = [Health(name) for name in names]
        self.login_window_seconds = login_window_seconds
        self.outcomes = Outcomes()
        self.counter = counter if counter is not None else {}
        self.out = set()  # indexes not SERVING (pool.py checks it on every ranking)
        self.usable_count = 0
        self.others_share = False  # pool.py: the share estimate says other balancers hand out logins too
        self.next_change = NEVER  # the earliest time tick() has something to do

    # --- what the pool tells us ------------------------------------------------------------

    def set_usable(self, index, usable):
        health = self.health[index]
        if health.usable != usable:
            health.usable = usable
            self.usable_count += 1 if usable else -1

    def sessions_fell(self, index, now):
        """A poll saw the server's sessions fall: its pending logins can no longer be told apart."""
        self.health[index].fell_at = now

    def unexplained(self, sessions, now):
        """The pool gained SESSIONS (a float: a share) that none of our logins explains: someone else's logins."""
        if sessions > 0:
            self.outcomes.add(now, unexplained=sessions)

    def confirmed(self, index, count, now):
        """COUNT logins handed to the server became sessions. True when that restored it."""
        health = self.health[index]
        self.outcomes.add(now, confirmed=count)
        health.streak, health.streak_from, health.held = 0, None, False
        if health.mode != HALF_OPEN:
            return False
        log.warning(
            "%s is back in service: a login there became a session (out %.0f s, %s ejection in the last hour)",
            health.name,
            now - health.ejections[-1] if health.ejections else 0.0,
            _ordinal(len(health.ejections)),
        )
        self._set_mode(index, SERVING, now)
        health.evidence = None
        health.reporters.clear()
        return True

    def expired(self, index, handed_at, now):
        """Logins handed to the server at HANDED_AT (times) expired unconfirmed. True when its mode changed."""
        health = self.health[index]
        # Conclusive: handed out in the current mode, and no fall of its sessions since.
        conclusive = [t for t in handed_at if t >= health.since and t > health.fell_at]
        if not conclusive:
            return False
        self.outcomes.add(now, expired=len(conclusive))
        if health.mode == EJECTED:
            return False
        if health.streak_from is None:
            health.streak_from = min(conclusive)
        health.streak += len(conclusive)
        if self.others_share:
            return False  # which of our logins became sessions is an estimate: no evidence (the rules)
        streak = health.streak
        confirmed, expired, _unexplained = self.outcomes.since(health.streak_from)
        expired = max(0, expired - streak)  # the rest of the pool's
        # Each session someone else's login explains may be one of the streak's people (the rules).
        unexplained = self.outcomes.since(health.streak_from - self.login_window_seconds)[2]
        n = streak - math.floor(unexplained)
        if n <= 0:
            return False
        doubt = (1.0 - success_rate_low(confirmed, confirmed + expired)) ** n
        window = f"{self.login_window_seconds:g} s"
        others = f"while {confirmed} of {confirmed + expired} logins elsewhere did"
        if n < streak:
            others += f", less {streak - n} sessions that came from no login of ours"
        if health.mode == HALF_OPEN:
            if confirmed and doubt <= HALF_OPEN_ALPHA:
                return self._eject(index, now, f"{streak} trial logins never became sessions within {window} {others}")
            return False
        if n >= MIN_UNCONFIRMED and confirmed and doubt <= UNCONFIRMED_ALPHA:
            evidence = f"{streak} logins in a row never became sessions within {window} {others}"
            return self._eject(index, now, evidence)
        return False

    def reported(self, index, peer, now):
        """Client PEER says its last login to the server did not last. True when its mode changed."""
        health = self.health[index]
        if health.mode == EJECTED:
            return False
        if health.mode == HALF_OPEN and peer in health.trial_peers:
            return self._eject(index, now, "the client of a trial login reported it failed")
        reporters = health.reporters
        reporters[peer] = now
        reporters.move_to_end(peer)
        oldest = now - REPORT_WINDOW_SECONDS
        while len(reporters) > MAX_REPORTERS or next(iter(reporters.values())) < oldest:
            reporters.popitem(last=False)
        if len(reporters) < REPORTERS:
            return False
        window = f"{REPORT_WINDOW_SECONDS:g} s"
        return self._eject(index, now, f"{len(reporters)} clients reported their login there failed within {window}")

    def handed_out(self, index, peer, now):
        """A login went to a server that is not SERVING (a trial, or a last resort)."""
        health = self.health[index]
        if health.mode == HALF_OPEN:
            health.trial_at = now
            health.trial_peers.append(peer)
            self.next_change = min(self.next_change, now + TRIAL_SECONDS)

    # --- time ----------------------------------------------------------------------------------

    def tick(self, now):
        """Ejections that ended, trial slots that opened: the indexes to rank again."""
        if now < self.next_change:
            return []
        changed = []
        for index in sorted(self.out):
            health = self.health[index]
            if health.mode == EJECTED and now >= health.ejected_until:
                self._set_mode(index, HALF_OPEN, now)
                # Not a return yet (that is one line, with its evidence, when a login there succeeds).
                log.debug("%s half-open: one trial login every %g s", health.name, TRIAL_SECONDS)
                changed.append(index)
            elif health.mode == HALF_OPEN and health.trial_at is not None and now >= health.trial_at + TRIAL_SECONDS:
                health.trial_at = None
                changed.append(index)
        self._schedule()
        return changed

    def admits(self, index, now):
        """May the server get a login now (SERVING, or a half-open server's trial slot is free)?"""
        health = self.health[index]
        if health.mode == SERVING:
            return True
        return health.mode == HALF_OPEN and (health.trial_at is None or now >= health.trial_at + TRIAL_SECONDS)

    # --- what the pool shows ------------------------------------------------------------------

    def reason(self, index, now):
        health = self.health[index]
        if health.mode == EJECTED:
            left = max(0.0, health.ejected_until - now)
            return f"ejected for {left:.0f} s more: {health.evidence}"
        if health.mode == HALF_OPEN:
            trials = f"one trial login every {TRIAL_SECONDS:g} s until one becomes a session"
            return f"half-open: {trials} (ejected: {health.evidence})"
        return None

    def view(self, index, now):
        """Its /v1/pool fields: ejection (None, ejected, half-open), ejections_1h, ejected_remaining_ms."""
        health = self.health[index]
        _forget_old(health, now)
        remaining = None
        if health.mode == EJECTED:
            remaining = max(0, round((health.ejected_until - now) * 1000))
        return {
            "ejection": None if health.mode == SERVING else health.mode,
            "ejections_1h": len(health.ejections),
            "ejected_remaining_ms": remaining,
        }

    # --- decisions ----------------------------------------------------------------------------

    def _eject(self, index, now, evidence):
        health = self.health[index]
        if not health.usable:
            return False  # skipped anyway (Down, Drain, Failing by its own check...)
        if health.mode == SERVING:
            out = sum(1 for other in self.out if self.health[other].usable)
            allowed = int(self.usable_count * MAX_OUT_SHARE)
            if out + 1 > allowed:
                if not health.held:
                    health.held = True
                    log.warning(
                        "%s not ejected: %d of %d usable servers are out already (at most half of the usable pool "
                        "is): %s",
                        health.name,
                        out,
                        self.usable_count,
                        evidence,
                    )
                return False
        _forget_old(health, now)
        health.ejections.append(now)
        count = len(health.ejections)
        seconds = min(MAX_EJECTION_SECONDS, BASE_EJECTION_SECONDS * count)
        health.ejected_until = now + seconds
        health.evidence = evidence
        health.held = False
        health.streak, health.streak_from = 0, None
        health.reporters.clear()
        health.trial_at = None
        health.trial_peers.clear()
        self._set_mode(index, EJECTED, now)
        self.counter[health.name] = self.counter.get(health.name, 0) + 1
        log.warning(
            "ejected %s for %.0f s (%s ejection in the last hour): %s", health.name, seconds, _ordinal(count), evidence
        )
        return True

    def _set_mode(self, index, mode, now):
        health = self.health[index]
        health.mode, health.since = mode, now
        if mode == SERVING:
            self.out.discard(index)
            health.ejected_until = health.trial_at = None
            health.trial_peers.clear()
        else:
            self.out.add(index)
        self._schedule()

    def _schedule(self):
        soonest = NEVER
        for index in self.out:
            health = self.health[index]
            if health.mode == EJECTED:
                soonest = min(soonest, health.ejected_until)
            elif health.trial_at is not None:
                soonest = min(soonest, health.trial_at + TRIAL_SECONDS)
        self.next_change = soonest

    # --- a reload -------------------------------------------------------------------------------

    def carry_over(self, old, pairs):
        """Keep OLD's standing of the servers kept by a reload: PAIRS of (new index, old index)."""
        self.outcomes = old.outcomes
        for new_index, old_index in pairs:
            health = old.health[old_index]
            usable, health.usable = health.usable, False
            self.health[new_index] = health
            self.set_usable(new_index, usable)
            if health.mode != SERVING:
                self.out.add(new_index)
        self._schedule()


def _forget_old(health, now):
    while health.ejections and health.ejections[0] < now - EJECTION_MEMORY_SECONDS:
        health.ejections.popleft()
