"""What the daemon says: the cached stats sample plus the config, encoded.

Rules (the sample cache):

- One sample (the metrics dict of ``stats.StatsCollector.collect``) is reused
  for SAMPLE_SECONDS. A client that finds it older than that makes a fresh
  one due; the server starts it on a worker thread once it has handled the
  events at hand (``idle_sample``), and only one at a time: a storm of 1,400
  clients costs one sample, and neither the event loop nor any client waits
  for /proc, utmp or a process scan.
- Stale while revalidate (RFC 5861): every client is answered at once from
  the sample at hand, its sample-age-ms saying how old it is, also the one
  that found it stale. Holding that client until the fresh sample landed
  cost it a whole collection (70-110 ms on a loaded server) after any idle
  spell, enough for get_hosts' straggler grace to call a healthy server Down
  at the first login of the morning.
- While nobody asks, one sample every IDLE_SAMPLE_SECONDS and nothing else:
  an idle daemon uses next to no CPU, the swap rate (measured between two
  samples, see stats.py) never averages over more than that, and the first
  client after a quiet night reads figures at most IDLE_SAMPLE_SECONDS (plus
  one collection) old. A served sample is older only when the collector
  fails or hangs; it is served anyway, its age growing honestly, because no
  answer would make the server Down, which is worse than old figures that
  say they are old. Past STALE_WARNING_SECONDS one warning says so.
- Only before the first sample (``refresh_now`` takes it at startup) is
  there nothing to serve: ``document()`` returns None and the server holds
  the client until the sample lands (``on_sample``).
- Encoding costs a few tens of microseconds, so the bytes are reused while
  nothing in them changes: same sample, same config, same millisecond of age.
"""

from __future__ import annotations

import logging
import threading
import time

from ltsp_lbcore import wire

from . import stats
from .config import MIB
from .errors import AdvertiseError

log = logging.getLogger(__name__)

IDLE_SAMPLE_SECONDS = 60.0
# A served sample this old means two idle samples failed, or one hangs.
STALE_WARNING_SECONDS = 2 * IDLE_SAMPLE_SECONDS


class Advertisement:
    """The document for the current config and a sample reused for SAMPLE_SECONDS."""

    def __init__(self, collect, config, on_sample=None, clock=time.monotonic, health=None):
        """collect: () -> metrics dict. on_sample: called (from the worker thread) when a sample lands.

        health: a health.HealthMonitor whose ``failing`` reason goes into every
        document (read at each one: a check's verdict is news at once, not at
        the next sample), and which follows the config on reload; or None.
        """
        self._collect = collect
        self.health = health
        self._clock = clock
        self.on_sample = on_sample
        self._config = config
        self._sample = None  # (metrics, taken_at): replaced whole, so readers need no lock
        self._refresh_due = False  # a client found the sample stale (event loop only)
        self._refresh_started_at = None  # set while a worker thread collects
        self._memo = None  # (metrics, config, age_ms, document, failing reason)
        self._retry_not_before = 0.0
        self._last_attempt_at = None  # when the latest collection started, landed or not
        self._warned_sample = None  # the stale sample the last warning was about
        self.samples_taken = 0

    def configure(self, config):
        """Use a new config (SIGHUP) for every following document, and for the health checks."""
        self._config = config
        if self.health is not None:
            self.health.configure(config.ssh_port, config.health_command, config.health_seconds)

    def refresh_now(self):
        """Take a sample on this thread (startup, --once)."""
        self._take()
        if self._sample is None:
            raise AdvertiseError("cannot collect the stats (see the log)")

    def document(self, now=None):
        """The document's bytes from the sample at hand, at once; None only before the first sample.

        Never collects: a stale sample makes a fresh one due, for idle_sample() to start.
        """
        now = self._clock() if now is None else now
        sample = self._sample
        if sample is None:
            self._refresh_due = True
            return None
        age = now - sample[1]
        if age > self._config.sample_seconds:
            self._refresh_due = True
            if age > STALE_WARNING_SECONDS and sample is not self._warned_sample:
                self._warned_sample = sample
                log.warning("serving a stats sample %.0f s old: the collector has not finished one since", age)
        return self._encode(sample, now)

    def next_idle_sample_at(self):
        """Monotonic time the next sample is due (None while one is running).

        Soon when a client found the sample stale; else IDLE_SAMPLE_SECONDS
        after the latest attempt, so a failing collector is retried once a
        minute while nobody asks, not every SAMPLE_SECONDS.
        """
        if self._refresh_started_at is not None:
            return None
        if self._refresh_due or self._last_attempt_at is None:
            return self._retry_not_before
        return max(self._last_attempt_at + IDLE_SAMPLE_SECONDS, self._retry_not_before)

    def idle_sample(self, now):
        """Start the sample that is due, on a worker thread.

        The server calls this after handling each batch of events, so the
        clients that made a sample due have their answers before it starts.
        """
        sample = self._sample
        if self._refresh_due and sample is not None and now - sample[1] <= self._config.sample_seconds:
            self._refresh_due = False  # a fresh sample landed after the client saw the stale one
        due = self.next_idle_sample_at()
        if due is not None and now >= due:
            self._start_refresh(now)

    def _encode(self, sample, now):
        metrics, taken_at = sample
        config = self._config
        age_ms = max(0, int((now - taken_at) * 1000))
        failing = None if self.health is None else self.health.failing
        memo = self._memo
        # Identity, not equality: comparing two Configs field by field would
        # cost more than the lookup saves (the reason is one shared string too).
        if memo is not None and memo[0] is metrics and memo[1] is config and memo[2] == age_ms and memo[4] is failing:
            return memo[3]
        server_stats = stats.server_stats(
            metrics,
            state=config.state,
            weight=config.weight,
            sample_age_ms=age_ms,
            session_cpu_mhz=config.session_cpu_mhz,
            session_memory_bytes=config.session_memory_mb * MIB,
            failing=failing,
        )
        document = wire.encode(server_stats)
        self._memo = (metrics, config, age_ms, document, failing)
        return document

    def _start_refresh(self, now):
        if self._refresh_started_at is not None:
            return
        self._refresh_due = False
        self._refresh_started_at = now
        thread = threading.Thread(target=self._refresh_in_thread, name="stats-sample", daemon=True)
        try:
            thread.start()
        except RuntimeError as error:  # cannot start a thread (out of memory or tasks)
            log.warning("cannot start the stats sampler thread: %s; serving the old sample", error)
            self._refresh_started_at = None
            self._retry_not_before = now + self._config.sample_seconds  # not a busy loop of retries

    def _refresh_in_thread(self):
        try:
            self._take()
        finally:
            self._refresh_started_at = None
            if self.on_sample is not None:
                self.on_sample()

    def _take(self):
        taken_at = self._last_attempt_at = self._clock()
        try:
            metrics = self._collect()
        except Exception:
            # The collector promises not to raise; if it does anyway, keep the
            # old sample (its age keeps growing, honestly) and do not retry
            # before another SAMPLE_SECONDS: the daemon keeps answering.
            log.exception("collecting the stats failed; keeping the previous sample")
            self._retry_not_before = taken_at + self._config.sample_seconds
            return
        self.samples_taken += 1
        self._sample = (metrics, taken_at)
        log.debug("stats sample %d taken in %.1f ms", self.samples_taken, (self._clock() - taken_at) * 1000)
