"""What the daemon says: the cached stats sample plus the config, encoded.

Rules (the sample cache):

- One sample (the metrics dict of ``stats.StatsCollector.collect``) is reused
  for SAMPLE_SECONDS. When a client asks and the sample is older than that, a
  refresh starts on a worker thread, and only one at a time: a storm of 1,400
  clients costs one sample, and the event loop never waits for /proc, utmp or
  a process scan.
- While that refresh runs, clients still get the old sample if it is younger
  than twice SAMPLE_SECONDS (their sample-age-ms says how old). An older one,
  i.e. the first client after the server sat idle, would be news from long
  ago: ``document()`` returns None and the server holds the client (without
  blocking anyone) until the fresh sample lands, or at most
  ``REFRESH_WAIT_LIMIT_SECONDS``, after which the old sample is served anyway:
  a stuck collector must not stop the answers.
- While nobody asks, one sample every IDLE_SAMPLE_SECONDS and nothing
  else: an idle daemon uses next to no CPU, yet the swap rate (measured
  between two samples, see stats.py) never averages over more than that, so
  the first login after a quiet hour does not read "swapping" off an hour.
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

# How long clients may be held for a fresh sample when the cached one is too
# old to serve. A collection takes milliseconds; this is only for a stuck one.
REFRESH_WAIT_LIMIT_SECONDS = 0.5
IDLE_SAMPLE_SECONDS = 60.0


class Advertisement:
    """The document for the current config and a sample reused for SAMPLE_SECONDS."""

    def __init__(self, collect, config, on_sample=None, clock=time.monotonic):
        """collect: () -> metrics dict. on_sample: called (from the worker thread) when a sample lands."""
        self._collect = collect
        self._clock = clock
        self.on_sample = on_sample
        self._config = config
        self._sample = None  # (metrics, taken_at): replaced whole, so readers need no lock
        self._refresh_started_at = None  # set while a worker thread collects
        self._memo = None  # (metrics, config, age_ms, document)
        self._retry_not_before = 0.0
        self.samples_taken = 0

    def configure(self, config):
        """Use a new config (SIGHUP) for every following document."""
        self._config = config

    def refresh_now(self):
        """Take a sample on this thread (startup, --once)."""
        self._take()
        if self._sample is None:
            raise AdvertiseError("cannot collect the stats (see the log)")

    def document(self, now=None):
        """The document's bytes, or None when the caller should wait for a fresh sample (see rules)."""
        now = self._clock() if now is None else now
        sample = self._sample
        max_age = self._config.sample_seconds
        age = None if sample is None else now - sample[1]
        if (age is None or age > max_age) and now >= self._retry_not_before:
            self._start_refresh(now)
        if sample is None or age > 2 * max_age:
            started = self._refresh_started_at
            if sample is None or (started is not None and now - started < REFRESH_WAIT_LIMIT_SECONDS):
                return None
        return self._encode(sample, now)

    def next_idle_sample_at(self):
        """Monotonic time of the next sample if nobody asks before (None while one is running)."""
        if self._refresh_started_at is not None or self._sample is None:
            return None
        return max(self._sample[1] + IDLE_SAMPLE_SECONDS, self._retry_not_before)

    def idle_sample(self, now):
        """Start a background sample if the idle interval has passed (the server's timer calls this)."""
        due = self.next_idle_sample_at()
        if due is not None and now >= due:
            self._start_refresh(now)

    def wait_deadline(self):
        """Monotonic time by which document() stops returning None, or None when no refresh runs."""
        started = self._refresh_started_at
        return None if started is None else started + REFRESH_WAIT_LIMIT_SECONDS

    def _encode(self, sample, now):
        metrics, taken_at = sample
        config = self._config
        age_ms = max(0, int((now - taken_at) * 1000))
        memo = self._memo
        # Identity, not equality: comparing two Configs field by field would
        # cost more than the lookup saves.
        if memo is not None and memo[0] is metrics and memo[1] is config and memo[2] == age_ms:
            return memo[3]
        server_stats = stats.server_stats(
            metrics,
            state=config.state,
            weight=config.weight,
            sample_age_ms=age_ms,
            session_cpu_mhz=config.session_cpu_mhz,
            session_memory_bytes=config.session_memory_mb * MIB,
        )
        document = wire.encode(server_stats)
        self._memo = (metrics, config, age_ms, document)
        return document

    def _start_refresh(self, now):
        if self._refresh_started_at is not None:
            return
        self._refresh_started_at = now
        thread = threading.Thread(target=self._refresh_in_thread, name="stats-sample", daemon=True)
        try:
            thread.start()
        except RuntimeError as error:  # cannot start a thread (out of memory or tasks)
            log.warning("cannot start the stats sampler thread: %s; serving the old sample", error)
            self._refresh_started_at = None

    def _refresh_in_thread(self):
        try:
            self._take()
        finally:
            self._refresh_started_at = None
            if self.on_sample is not None:
                self.on_sample()

    def _take(self):
        taken_at = self._clock()
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
