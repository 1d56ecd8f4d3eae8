"""Polling: every server of SERVERS, every POLL_SECONDS, with get_hosts' probe engine.

Rules:

- One round probes the whole pool at once (get_hosts.probe.probe_pool,
  without the straggler rule: a slow but live server is waited for until
  POLL_TIMEOUT_MS), in a worker thread so the event loop keeps answering
  logins meanwhile. Its results go to Balancer.polling on the loop, a step
  (a hundred servers, ~1 ms) per turn of the loop, logins answered between.
- Rounds start every POLL_SECONDS (a round that overruns delays the next,
  never overlaps it); ``poll_now`` starts one at once (after a reload).
- Only the servers of the running config are ever contacted.
- Names resolve through one NameCache (resolver.py): a few threads for the
  process and answers kept, never a thread per name per round.
- A round that fails (out of descriptors at a pipe, a thread that cannot
  start, anything) is one warning and the next round runs on time; while
  rounds keep failing the same way, one line a FAILURE_LOG_SECONDS with
  their count; the first round that works again says so. Meanwhile the
  figures age, and the balancer answers 503 once they are stale
  (Balancer.stale_after).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import monotonic

from get_hosts.probe import probe_pool
from ltsp_lbcore import wire  # noqa: F401 - the probe engine imports it at its first document: here, before the privilege drop

from .resolver import NameCache

log = logging.getLogger(__name__)

FAILURE_LOG_SECONDS = 60.0


class Poller:
    def __init__(self, balancer, names=None):
        self.balancer = balancer
        self.names = names or NameCache()
        self._wake = asyncio.Event()
        self.round_seconds = None  # how long the latest round took
        self.on_round = []  # callables(seconds) run after each round (the /metrics histogram)
        self.failed_rounds = 0  # since start
        self._failing = None  # (first failure's text, when it was logged, rounds failed since)

    def poll_now(self):
        self._wake.set()

    def _probe(self, entries, timeout_ms):
        """One round in a worker thread: names through the NameCache, then every server at once."""
        self.names.keep_only({(entry.host, entry.port) for entry in entries})
        return probe_pool(entries, timeout_ms, False, self.names.for_round)

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            config = self.balancer.config
            started = monotonic()
            try:
                await self._round(loop, config)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._failed(error, monotonic())
            else:
                self._worked()
            self.round_seconds = monotonic() - started
            for callback in self.on_round:
                with contextlib.suppress(Exception):
                    callback(self.round_seconds)
            wait = max(0.0, config.poll_seconds - self.round_seconds)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _round(self, loop, config):
        entries = self.balancer.entries
        if not entries:
            return
        results = await loop.run_in_executor(None, self._probe, entries, config.poll_timeout_ms)
        for _step in self.balancer.polling(entries, results, monotonic()):
            await asyncio.sleep(0)  # the logins that came meanwhile are answered between the steps
        down = sum(1 for result in results if result.stats is None)
        if down:
            log.debug("poll: %d of %d servers down", down, len(entries))

    def _failed(self, error, now):
        self.failed_rounds += 1
        text = f"{type(error).__name__}: {error}"
        failing = self._failing
        if failing is None or failing[0] != text:
            log.warning("poll round failed: %s (the next round runs in POLL_SECONDS)", text)
            self._failing = (text, now, 0)
        elif now - failing[1] >= FAILURE_LOG_SECONDS:
            log.warning("poll rounds still failing: %d more in %.0f s: %s", failing[2] + 1, now - failing[1], text)
            self._failing = (text, now, 0)
        else:
            self._failing = (text, failing[1], failing[2] + 1)

    def _worked(self):
        if self._failing is not None:
            log.warning("poll round worked again (%d rounds failed since start)", self.failed_rounds)
            self._failing = None
