"""Name resolution for the poller: a few threads and a cache, whatever DNS does.

get_hosts resolves each name of its pool in a thread of its own, once per
login; a balancer polling every POLL_SECONDS would start a thread per name
per round, and while DNS hangs they pile up (thousands in seconds). Here:

- At most WORKERS threads call getaddrinfo, for the whole process. A name
  has at most one lookup under way: a round that finds one waits for it,
  never queues another. A hanging resolver so costs WORKERS threads and a
  queue no longer than SERVERS.
- An answer is kept: for FRESH_SECONDS after success (FAILED_SECONDS after
  a failure, so a fixed DNS shows soon). An older one still answers its
  round at once while a new lookup runs beside it; a name without any
  answer waits for its lookup within the round's deadline (then it is Down,
  "name lookup still under way").
- Only the names of the latest round are kept (a reload forgets the rest).
- ``for_round`` gives get_hosts.probe what its _Resolver gives it: a pipe's
  read end that wakes the poll loop, ``drain`` and ``close``.
"""

from __future__ import annotations

import functools
import queue
import threading
from time import monotonic

from get_hosts.probe import _Resolver, lookup

WORKERS = 4
FRESH_SECONDS = 60.0
FAILED_SECONDS = 5.0


class NameCache:
    """The process' resolver: WORKERS threads, one lookup per name at a time, answers kept (see the rules)."""

    def __init__(self, workers=WORKERS, lookup=lookup, clock=monotonic):
        self._workers = workers
        self._threads = []  # started at the first lookup; daemon threads: a hung lookup never delays the exit
        self._queue = queue.SimpleQueue()
        self._lookup = lookup
        self._clock = clock
        self._lock = threading.Lock()
        self._answers = {}  # (host, port) -> (addresses, reason, when)
        self._running = {}  # (host, port) -> the callback waiting for its lookup's answer, or None

    def lookups_running(self):
        return len(self._running)

    def for_round(self, probes):
        """The resolver of one poll round for PROBES (those with a name): get_hosts.probe's, asking this cache."""

        def ask(probe, answered):
            self.ask((probe.host, probe.port), functools.partial(answered, probe))

        return _Resolver(probes, ask)

    def ask(self, key, callback):
        """CALLBACK(addresses, reason) now with a kept answer, or once its lookup ends; refreshes an old one.

        Rounds never overlap, so a name's lookup keeps only the latest round's callback waiting: a lookup
        that hangs holds one callback, not one per round.
        """
        now = self._clock()
        with self._lock:
            answer = self._answers.get(key)
            expired = answer is None or now - answer[2] > (FRESH_SECONDS if answer[0] else FAILED_SECONDS)
            if key in self._running:
                if answer is None:
                    self._running[key] = callback
                    return
            elif expired:
                self._running[key] = callback if answer is None else None
                self._queue.put(key)
                self._start_worker(key)
        if answer is not None:
            callback(answer[0], answer[1])

    def _start_worker(self, key):
        if len(self._threads) >= self._workers:
            return
        thread = threading.Thread(target=self._work, name="resolve", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no thread can start: a worker already running takes the name later
            if not self._threads:
                del self._running[key]
                raise
            return
        self._threads.append(thread)

    def keep_only(self, keys):
        """Forget the answers of names not in KEYS (the running SERVERS)."""
        with self._lock:
            for key in [key for key in self._answers if key not in keys]:
                del self._answers[key]

    def _work(self):
        while True:
            self._resolve(self._queue.get())

    def _resolve(self, key):
        addresses, reason = self._lookup(*key)
        with self._lock:
            self._answers[key] = (addresses, reason, self._clock())
            callback = self._running.pop(key, None)
        if callback is not None:
            callback(addresses, reason)
