"""Refused connections, logged so that an admin sees them and a flood does not fill the log.

Both services close a client outside ALLOW before reading anything; the
admin who locked themselves out must see why without --debug, and a peer
that retries a thousand times a second must not write a thousand lines.

Rules:

- The first refusal of a peer is one warning naming the peer and why.
- Further refusals of that peer within INTERVAL seconds are counted, not
  logged; once the interval is over, the count is one line of its own
  ("... N more times in 59 s"), said at the next refusal of anyone, or at
  ``flush`` (the services flush everything when they stop), and the
  peer's next refusal is a first again.
- Memory is bounded: at most MAX_PEERS peers are remembered at once;
  refusals from further peers are counted together, with one line when the
  overflow starts and one with the count when its interval is over.
- No I/O but the logger, no clock of its own: ``now`` comes from the caller.
"""

from collections import OrderedDict

INTERVAL_SECONDS = 60.0
MAX_PEERS = 1024


class _Peer:
    __slots__ = ("last", "reason", "since", "suppressed")

    def __init__(self, reason, since):
        self.reason = reason
        self.since = since  # the refusal that was logged
        self.last = since  # the latest one counted
        self.suppressed = 0

    def count(self, now):
        self.suppressed += 1
        self.last = now


class RefusalLog:
    """refused(peer, reason, now): one line per peer per interval, with the count of the rest after it."""

    def __init__(self, log, interval=INTERVAL_SECONDS, max_peers=MAX_PEERS):
        self.log = log
        self.interval = interval
        self.max_peers = max_peers
        self._peers = OrderedDict()  # peer -> _Peer, oldest interval first
        self._others = None  # _Peer counting the refusals beyond max_peers, or None
        self.lines = 0  # lines logged (the tests count them)

    def refused(self, peer, reason, now):
        self.flush(now)
        known = self._peers.get(peer)
        if known is not None:
            known.count(now)
            return
        if len(self._peers) < self.max_peers:
            self._peers[peer] = _Peer(reason, now)
            self._say("refused %s: %s (more refusals of it are counted, one line a %g s)", peer, reason, self.interval)
            return
        if self._others is None:
            self._others = _Peer(reason, now)
            self._say(
                "refused %s: %s; %d peers are being refused already: the refusals of further peers are counted "
                "together for %g s",
                peer,
                reason,
                self.max_peers,
                self.interval,
            )
        else:
            self._others.count(now)

    def flush(self, now):
        """Say the counts of every interval over at NOW (the oldest first; inf: all) and forget those peers."""
        limit = now - self.interval
        peers = self._peers
        while peers:
            peer, state = next(iter(peers.items()))
            if state.since > limit:
                break
            del peers[peer]
            if state.suppressed:
                span = state.last - state.since
                self._say("refused %s %d more times in %.0f s: %s", peer, state.suppressed, span, state.reason)
        others = self._others
        if others is not None and others.since <= limit:
            self._others = None
            if others.suppressed:
                self._say(
                    "refused %d more connections from peers beyond the first %d in %.0f s: %s",
                    others.suppressed,
                    self.max_peers,
                    others.last - others.since,
                    others.reason,
                )

    def _say(self, message, *args):
        self.lines += 1
        self.log.warning(message, *args)
