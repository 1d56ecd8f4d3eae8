"""The last hour of every server's fullness, in memory, for the status page's sparklines.

No I/O and no clock of its own: ``record(servers, now)`` takes the pool's
servers and the poll's time, so tests drive it with a fake clock.

Rules:

- Time is cut into slots of STEP_SECONDS (30 s); a series keeps the last
  POINTS slots (120: one hour). A slot's value is the peak fullness seen by
  the polls that fell in it (a server full for 10 s of 30 shows full), in
  whole percent of its capacity; a slot with no answer (Down, not polled,
  no capacity) has no value.
- Memory is bounded by the pool, not by time: one ``array('B')`` of POINTS
  bytes per server of SERVERS (255 means no value, fullness is capped at
  254 %), written in place as a ring; 1,000 servers hold about 0.2 MiB.
  Servers that leave SERVERS (SIGHUP) lose their series; servers kept keep it.
- The pool's total load (sessions over capacity of every server that
  answered) has a series of its own, with the same slots.
- Slots the balancer did not poll (stopped, clock jump) are cleared, never
  filled with a stale value.
"""

from __future__ import annotations

from array import array

STEP_SECONDS = 30.0
POINTS = 120
NO_VALUE = 255
MAX_PERCENT = 254


def fullness_percent(sessions, capacity):
    """Sessions over capacity, in whole percent capped at MAX_PERCENT; None when either is unknown or capacity is 0."""
    if sessions is None or not capacity or capacity <= 0:
        return None
    return min(MAX_PERCENT, max(0, round(100.0 * sessions / capacity)))


class History:
    """Per server (host, port): a ring of POINTS slot values, plus the pool's own ring."""

    def __init__(self, step_seconds=STEP_SECONDS, points=POINTS):
        self.step_seconds = float(step_seconds)
        self.points = points
        self.slot = None  # number of the newest slot (time // step), None before the first record
        self.series = {}  # (host, port) -> array('B')
        self.pool = self._empty()
        self._pool_object = None  # the Pool the keys were taken from: a SIGHUP replaces it

    def _empty(self):
        return array("B", [NO_VALUE]) * self.points

    def attach(self, balancer):
        """Record every poll of BALANCER from now on (Balancer.on_poll)."""
        balancer.on_poll.append(lambda balancer, now: self.record(balancer.pool, now))
        return self

    # --- writing --------------------------------------------------------------------

    def record(self, pool, now):
        """One poll of POOL (a pool.Pool: .servers with .entry and .stats) finished at NOW (seconds)."""
        if pool is not self._pool_object:
            self._follow(pool)
        self._advance(int(now // self.step_seconds))
        at = self.slot % self.points
        total_sessions = total_capacity = 0.0
        for server in pool.servers:
            stats = server.stats
            if stats is None:
                continue
            value = fullness_percent(stats.sessions, stats.capacity)
            if value is None:
                continue
            ring = self.series[(server.entry.host, server.entry.port)]
            if ring[at] == NO_VALUE or ring[at] < value:
                ring[at] = value
            total_sessions += stats.sessions
            total_capacity += stats.capacity
        value = fullness_percent(total_sessions, total_capacity)
        if value is not None and (self.pool[at] == NO_VALUE or self.pool[at] < value):
            self.pool[at] = value

    def _follow(self, pool):
        """Series for exactly POOL's servers: kept ones keep theirs, new ones start empty."""
        old = self.series
        self.series = {}
        for server in pool.servers:
            key = (server.entry.host, server.entry.port)
            self.series[key] = old.get(key) or self._empty()
        self._pool_object = pool

    def _advance(self, slot):
        """Make SLOT the newest: the slots between the previous newest and it are cleared."""
        if self.slot is not None and slot <= self.slot:
            return  # same slot (or a clock that went back: keep writing the newest)
        skipped = self.points if self.slot is None else min(self.points, slot - self.slot)
        rings = [*self.series.values(), self.pool]
        for offset in range(skipped):
            at = (slot - offset) % self.points
            for ring in rings:
                ring[at] = NO_VALUE
        self.slot = slot

    # --- reading --------------------------------------------------------------------

    def ordered(self, ring):
        """RING's values oldest first, as bytes (NO_VALUE where there is none)."""
        if self.slot is None:
            return bytes([NO_VALUE]) * self.points
        start = (self.slot + 1) % self.points
        return (ring[start:] + ring[:start]).tobytes()

    def snapshot(self):
        """(pool's values, {(host, port): values}) oldest first, as bytes: a copy the caller may keep."""
        return self.ordered(self.pool), {key: self.ordered(ring) for key, ring in self.series.items()}

    def view(self, now, snapshot=None):
        """The /v1/history document (a dict): every series oldest first, in whole percent, None for no value."""
        pool, servers = snapshot or self.snapshot()
        return {
            "step_seconds": self.step_seconds,
            "points": self.points,
            "newest_age_seconds": None if self.slot is None else round(now - self.slot * self.step_seconds, 1),
            "pool": values_list(pool),
            "servers": [
                {"host": host, "port": port, "fullness": values_list(values)}
                for (host, port), values in servers.items()
            ],
        }


_VALUES = (*range(NO_VALUE), None)  # a stored byte -> its value


def values_list(data):
    """Stored bytes -> a list of percents, None for no value."""
    return list(map(_VALUES.__getitem__, data))
