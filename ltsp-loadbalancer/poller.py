"""Polling: every server of SERVERS, every POLL_SECONDS, with get_hosts' probe engine.

Rules:

- One round probes the whole pool at once (get_hosts.probe.probe_pool,
  without the straggler rule: a slow but live server is waited for until
  POLL_TIMEOUT_MS), in a worker thread so the event loop keeps answering
  logins meanwhile. Its results go to Balancer.polled on the loop.
- Rounds start every POLL_SECONDS (a round that overruns delays the next,
  never overlaps it); ``poll_now`` starts one at once (after a reload).
- Only the servers of the running config are ever contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import monotonic

from get_hosts.probe import probe_pool
from ltsp_lbcore import wire  # noqa: F401 - the probe engine imports it at its first document: here, before the privilege drop

log = logging.getLogger(__name__)


class Poller:
    def __init__(self, balancer):
        self.balancer = balancer
        self._wake = asyncio.Event()
        self.round_seconds = None  # how long the latest round took
        self.on_round = []  # callables(seconds) run after each round (the /metrics histogram)

    def poll_now(self):
        self._wake.set()

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            config = self.balancer.config
            entries = self.balancer.entries
            started = monotonic()
            if entries:
                results = await loop.run_in_executor(None, probe_pool, entries, config.poll_timeout_ms, False)
                self.balancer.polled(entries, results, monotonic())
                down = sum(1 for result in results if result.stats is None)
                if down:
                    log.debug("poll: %d of %d servers down", down, len(entries))
            self.round_seconds = monotonic() - started
            for callback in self.on_round:
                callback(self.round_seconds)
            wait = max(0.0, config.poll_seconds - self.round_seconds)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
