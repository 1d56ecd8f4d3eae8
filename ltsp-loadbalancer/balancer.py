"""The balancer's state and its answers, apart from HTTP: the pool, the polls, the counters.

Rules:

- ``Balancer`` owns the Pool (pool.py) for the running config, and answers
  ``hosts(...)`` (one login) and ``pool_view(...)`` (the whole pool) from it.
  HTTP (http.py) only moves requests and answers; polling (poller.py) only
  feeds ``polled`` with results.
- An answer names only servers of SERVERS, by the host the config names them
  (never a port, as get_hosts prints them), best first, on one line; the
  first counts as a login handed out. None usable: ``None`` and the reason
  (HTTP 503), so get_hosts probes the pool itself; SERVERS empty says so.
- A request's own settings (query.py: its limits, algorithm and mac-hash
  key, as a pool.Ask) apply to its answer alone; a peek answers the same
  and counts nothing (no login, no failed= report, no answer counted).
- ``reconfigure`` takes a new config (SIGHUP): servers kept from the old
  SERVERS keep their latest document and pending logins; new ones are Down
  until the next poll, which is started at once.
- One pending login per client (by its address) within ONE_LOGIN_SECONDS:
  a client asking again gets a new login in place of its previous one
  (pool.py), its failed= report counted as ever.
- Figures older than ``stale_after`` (a few rounds: polling has stopped)
  are not answered from: 503 with their age, so get_hosts probes itself.
- ``failed=HOST`` (get_hosts' retry): HOST goes last in this answer and is
  one failure report from this client (by its address) for outlier
  ejection (ejection.py); hosts outside SERVERS are ignored. Only the first
  word counts: a client's last login went to one host.
- Counters (for /metrics): answers by result, logins handed out per server,
  poll errors and ejections per server, each server named by its SERVERS
  entry (``labels``: the host, with ``:port`` when not 377), so two entries
  on one host are counted apart. No user names anywhere: requests carry
  none, and no client address is logged.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter

from get_hosts.settings import PoolEntry
from ltsp_lbcore.hostport import format_host_port
from ltsp_lbcore.ports import ADVERTISE_PORT
from ltsp_lbcore.states import DOWN

from .pool import NO_ASK, USABLE_TIERS, Limits, Pool

OK, NO_SERVER, UNKNOWN_SERVERS, STALE = "ok", "no_usable_server", "unknown_servers", "stale_figures"


def limits_of(config):
    return Limits(max_load=config.max_load, max_response_ms=config.max_response_ms, skip_swapping=config.skip_swapping)


def stale_after(config):
    """Seconds after the latest poll when its figures are too old to answer from: a few rounds missed."""
    return 3 * config.poll_seconds + config.poll_timeout_ms / 1000.0


def empty_reason(config):
    """The 503 reason while SERVERS is empty: not a poll that has yet to finish, but nothing to poll."""
    where = f" in {config.path}" if getattr(config, "path", None) else ""
    return f"SERVERS is empty: nothing to balance (set SERVERS{where}, or --servers)"


class Balancer:
    def __init__(self, config, rng=None):
        self.rng = rng or random.Random()
        self.config = config
        self.answers = Counter()  # result -> count
        self.handed_out = Counter()  # server label -> logins handed out since start
        self.poll_errors = Counter()  # server label -> polls that found it Down
        self.ejections = Counter()  # server label -> outlier ejections since start (ejection.py counts them)
        self.labels = []  # the server label of each entry, pool order
        self.pool = self._new_pool(config)
        self.generation = 0  # reloads since start: a view of the pool is of one generation (views.py)
        self.polls = 0
        self.on_poll = []  # callables(balancer, now) run after each poll (the status page's history)

    def _new_pool(self, config):
        entries = [PoolEntry(host, host, port) for host, port in config.servers]
        self.labels = [format_host_port(host, port, default_port=ADVERTISE_PORT) for host, port in config.servers]
        pool = Pool(
            entries,
            self.rng,
            limits_of(config),
            config.login_window_seconds,
            ejections=self.ejections,
            one_login_seconds=config.one_login_seconds,
        )
        # Ejections are counted and logged under each health's name: the entry's label, not its bare host.
        for health, label in zip(pool.outliers.health, self.labels):
            health.name = label
        return pool

    @property
    def entries(self):
        return [server.entry for server in self.pool.servers]

    def reconfigure(self, config, now):
        old_pool = self.pool
        old = {(s.entry.host, s.entry.port): i for i, s in enumerate(old_pool.servers)}
        self.config = config
        self.pool = self._new_pool(config)
        self.generation += 1
        kept = []
        for index, server in enumerate(self.pool.servers):
            previous_index = old.get((server.entry.host, server.entry.port))
            if previous_index is not None:
                previous = old_pool.servers[previous_index]
                server.result, server.taken_at = previous.result, previous.taken_at
                server.pending, server.handed_out = previous.pending, previous.handed_out
                kept.append((index, previous_index))
        self.pool.outliers.carry_over(old_pool.outliers, kept)
        self.pool.carry_clients(old_pool, kept)
        self.pool.rerank(now)

    def polled(self, entries, results, now):
        """A poll of ENTRIES finished: ``polling`` at once."""
        for _step in self.polling(entries, results, now):
            pass

    def polling(self, entries, results, now):
        """A poll of ENTRIES finished, taken in steps (a generator: poller.py answers logins between them).

        Results of a pool replaced meanwhile (SIGHUP), before or during the steps, are dropped.
        """
        pool = self.pool
        if list(entries) != self.entries:
            return
        for label, result in zip(self.labels, results):
            if result.stats is None:
                self.poll_errors[label] += 1
        for step in pool.updating(results, now):
            yield step
            if self.pool is not pool:
                return
        self.polls += 1
        for callback in self.on_poll:
            callback(self, now)

    def hosts(self, words, now, failed=None, peer=None, ask=NO_ASK):
        """One login: (line of hosts, None) or (None, reason).

        WORDS: the servers a request names, or None. FAILED: its failed= words (the first counts), or
        None. PEER: the client's address. ASK (pool.Ask): the request's own limits, algorithm and key;
        a peek gets the same answer and counts nothing (no login, no failed= report, no answer).
        """
        pool = self.pool
        answers = Counter() if ask.peek else self.answers
        if not pool.servers:
            answers[NO_SERVER] += 1
            return None, empty_reason(self.config)
        polled_at = pool.polled_at
        if polled_at is not None and now - polled_at > stale_after(self.config):
            # Polling has stopped (poller.py logs why): dead servers would still look Idle.
            answers[STALE] += 1
            return None, f"the latest poll finished {now - polled_at:.0f} s ago: polling has stopped (see the log)"
        among = None
        if words is not None:
            among = pool.known(words, peer)
            if not among:
                answers[UNKNOWN_SERVERS] += 1
                return None, "none of the servers named in the request is in this balancer's SERVERS"
        last = ()
        if failed:
            last = pool.known(failed[:1], peer)
            if last and not ask.peek:
                pool.report(last, peer, now)
        order = pool.choose(now, among, last, peer, ask)
        if not order:
            answers[NO_SERVER] += 1
            if self.pool.polled_at is None:
                return None, "no poll has finished yet"
            return None, self.pool.down_reason(among, ask.limits)
        line = " ".join(map(self.pool.names.__getitem__, order))
        if ask.peek:
            return line, None
        self.answers[OK] += 1
        self.handed_out[self.labels[order[0]]] += 1
        return line, None

    def pool_view(self, now, rows=None):
        """The whole pool as /v1/pool's JSON document (a dict).

        ROWS: the rows already taken (``pool_rows`` in steps, views.py), else all of them now."""
        if rows is None:
            rows = self.pool_rows(now, 0, len(self.pool.servers))
        polled_at = self.pool.polled_at
        return {
            "servers": rows,
            "poll_seconds": self.config.poll_seconds,
            "last_poll_age_ms": None if polled_at is None else round((now - polled_at) * 1000),
            "stale_after_ms": round(stale_after(self.config) * 1000),  # older figures: /v1/hosts answers 503
            "polls": self.polls,
        }

    def pool_rows(self, now, first, last):
        """The /v1/pool rows of servers FIRST to LAST (pool order, LAST excluded)."""
        rows = []
        outliers = self.pool.outliers
        window_start = now - self.pool.history_seconds  # "Logins, 5 min": the window the pool keeps
        for index in range(first, min(last, len(self.pool.servers))):
            server = self.pool.servers[index]
            stats, verdict = server.stats, server.verdict
            rows.append(
                {
                    "host": server.entry.host,
                    "port": server.entry.port,
                    "state": verdict.label if verdict is not None else DOWN,
                    "usable": verdict is not None and verdict.tier in USABLE_TIERS,
                    "sessions": None if stats is None else stats.sessions,
                    "capacity": None if stats is None else stats.capacity,
                    "rating": None if stats is None else stats.rating,
                    "pending": len(server.pending),
                    "handed_out_5min": _count_since(server.handed_out, window_start),
                    "sample_age_ms": None if server.taken_at is None else round((now - server.taken_at) * 1000),
                    "response_ms": None if server.result is None else server.result.response_ms,
                    "reason": self._reason(server),
                    **outliers.view(index, now),
                    "stats": None if stats is None else stats._asdict(),
                }
            )
        return rows

    @staticmethod
    def _reason(server):
        if server.result is None:
            return "not polled yet"
        verdict = server.verdict
        return None if verdict is None else verdict.reason


def _count_since(times, since):
    """How many of TIMES (sorted, oldest first) are at or after SINCE: a bisection, not a scan."""
    return len(times) - bisect.bisect_left(times, since)
