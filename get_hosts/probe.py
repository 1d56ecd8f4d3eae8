"""Probing: ask every pool server for its document at once, under one deadline.

Two layers, the way h11 keeps its state machine apart from its I/O:

- ``ProbeRound`` is the state of one round (no sockets, no clock of its
  own): one method per event (``answered``, ``failed``, ``give_up``), the
  results, and ``cutoff``: when the servers still pending are given up. The
  straggler rule is ``straggler_cutoff``, a pure function of the answers so
  far, tested by tables with a fake clock.
- ``probe_pool`` moves the bytes: non-blocking sockets and one
  ``select.poll`` loop (``_PollLoop``), feeding events to a ProbeRound.

Rules (the CLI, the balancer and the tests rely on them):

- Every server is asked at the same time: one non-blocking TCP connection per
  server (no thread per server). IPv4 and IPv6 both work; when a name has
  several addresses they are tried in the order getaddrinfo gives until one
  connects. When the process runs out of file descriptors (a pool larger
  than its open-file limit), the servers not yet connected wait for a socket
  to close and are probed in the next wave, under the same deadline; they are
  never marked Down for our own limit.
- Numeric hosts (``10.0.0.5``, ``fe80::1%eth0``) are parsed with
  ``AI_NUMERICHOST`` and never reach DNS. Only names are resolved, each in its
  own daemon thread, started at once, so resolution runs inside the same
  deadline as everything else; a resolver that hangs costs the deadline, not
  more (the thread is abandoned, never joined).
- ONE deadline, ``timeout_ms`` from the start, covers resolving, connecting
  and reading together.
- At most ``wire.MAX_DOCUMENT_BYTES + 1`` bytes are read from a server, and
  every chunk goes to a ``wire.Decoder`` as it arrives, so garbage, a DTD or
  an oversized document is refused on the chunk that carries it.
- A server that does not resolve, refuses, resets, times out, sends too much
  or sends anything the decoder rejects is Down: ``stats`` is None and
  ``error`` keeps the reason (our own words; text quoted from the server is
  already repr-escaped by wire, and the CLI escapes again before printing).
- The response time is measured from the start of the round to the end of
  the document (its closing root tag, or the server closing the connection,
  whichever comes first), so it includes name resolution and connecting.
- ``straggler=False`` (the balancer's periodic poll) waits for every server
  until the deadline: a slow but live server is never marked Down early.
- The same loop holds other short conversations (``Conversation``): get_hosts
  asks its balancers through ``ask_first``, which sends each one its request
  once connected, reads the answer up to that conversation's cap into its own
  decoder, and ends the round at the first answer a decoder accepts.

The straggler rule (docs/get_hosts.md says the same):

    Once at least one server has answered with a valid document, the servers
    still pending get a grace period, counted from the latest valid answer
    and never past the deadline:

    - when at least half of the pool has settled (answered, or failed for
      good: refused, unreachable, garbage), counted from the later of the
      latest answer and the moment half had settled,

        grace = clamp(GRACE_FACTOR * slowest_answer_ms, floor, GRACE_MAX_MS)
              = clamp(4 * slowest, 250 ms, 300 ms) for a server that took the TCP
                connection (GRACE_MIN_MS: a live daemon, maybe busy),
              = clamp(4 * slowest, 75 ms, 300 ms) for one that has not even taken
                it (GRACE_UNREACHED_MIN_MS: on a LAN a live host accepts in well
                under a millisecond; this one is off or unreachable);

    - while fewer than half have settled, grace = GRACE_MAX_MS (300 ms): the
      pending ones may be a slower majority, so they get the longest grace,
      but a pool whose other servers are all powered off does not wait out
      the deadline for them.

    A server still pending then is Down ("no answer within the straggler
    grace"). Each new valid answer recomputes the grace and restarts it.
    While no server has answered, only the deadline applies.

So on a LAN, where answers take a few ms, a powered-off server costs a
login about the slowest answer plus 75 ms, a stalled one (it took the
connection but says nothing) plus 250 ms, instead of ``LB_TIMEOUT`` (300 ms
when most of the pool is dead); a live server is waited for 250 ms after its
peers, what a busy one may need (see GRACE_MIN_MS), and one answering four
times slower than the slowest of its peers is waited for.
"""

import os
import select
import socket
from collections import namedtuple
from errno import EINPROGRESS, EMFILE, ENFILE
from time import monotonic

from ltsp_lbcore import wire
from ltsp_lbcore.ports import ADVERTISE_PORT

GRACE_FACTOR = 4
# The floor: no live server is given less. Before stale-while-revalidate a
# daemon held its first client after an idle spell for a whole sample:
# 70-110 ms on loaded servers; 36-101 ms median, 84-146 ms worst with 2-8
# CPU burners beside it (benchmarks/cold_daemon.py --burners N against that
# daemon), past the 75 ms this used to be. Such daemons remain in pools after
# the thin clients update, and any busy server may wait its turn for a CPU:
# 250 ms leaves room above both. The price: a powered-off server among live
# ones costs a login 250 ms after the last answer, not 75.
GRACE_MIN_MS = 250
# A server that has not taken the TCP connection 75 ms after its peers answered is not there:
# the floor that a live daemon needs is for the answer, not for the handshake.
GRACE_UNREACHED_MIN_MS = 75
GRACE_MAX_MS = 300
READ_CHUNK = 4096

ProbeResult = namedtuple("ProbeResult", "entry stats response_ms error")
ProbeResult.__doc__ = """One pool entry's outcome.

entry: the PoolEntry probed. stats: wire.ServerStats (ask_first: what the
conversation's decoder made of the answer), or None when Down.
response_ms: float, start of the probe to the end of the document, or None.
error: why it is Down (str), or None.
"""

Conversation = namedtuple("Conversation", "request new_decoder limit refused")
Conversation.__doc__ = """What a probe says and reads once connected.

request: bytes sent first (b"": nothing; the daemon speaks unasked).
new_decoder(): a fresh decoder, made at the answer's first byte: feed(bytes);
``complete`` turns true when the answer is whole before the server closes;
close() returns the value the probe settles with. Any of them raises
ValueError for an answer it refuses.
limit: the most bytes read; one more is refused. refused: the words put
before the decoder's error in the reason.
"""

# ltsp-server-advertise: connect, read one document, done.
ADVERTISE = Conversation(b"", wire.Decoder, wire.MAX_DOCUMENT_BYTES, "bad document: ")

_POLL_ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL

# Phases of one probe, named for the reasons given when the deadline hits.
RESOLVING, WAITING, CONNECTING, READING = "resolving the name", "waiting for a free socket", "connecting", "reading"
SENDING = "sending the request"


# --- the state of a round: no I/O ----------------------------------------------------


def grace_ms(slowest_ms, floor_ms=GRACE_MIN_MS):
    """The straggler grace for the slowest valid answer seen so far, in ms (FLOOR_MS at least)."""
    return min(max(GRACE_FACTOR * slowest_ms, floor_ms), GRACE_MAX_MS)


def straggler_cutoff(last_answer, slowest_ms, quorum_time, deadline, floor_ms=GRACE_MIN_MS):
    """When the servers still pending are given up (the rule above), in the clock's seconds.

    last_answer: time of the latest valid answer, or None (none yet: only the
    deadline applies). slowest_ms: the slowest valid answer's response time.
    quorum_time: when half the pool had settled, or None. floor_ms: the
    grace's floor: GRACE_MIN_MS for a server that took the connection,
    GRACE_UNREACHED_MIN_MS for one that has not.
    """
    if last_answer is None:
        return deadline
    if quorum_time is None:
        return min(deadline, last_answer + GRACE_MAX_MS / 1000.0)
    return min(deadline, max(last_answer, quorum_time) + grace_ms(slowest_ms, floor_ms) / 1000.0)


class ProbeRound:
    """One round of probes of a pool: what has settled, and when to stop waiting.

    Times are the caller's clock (monotonic seconds). Each entry settles
    once: ``answered`` (a valid document), ``failed`` (Down for a reason
    of its own) or ``give_up`` (the cutoff came first).
    """

    def __init__(self, entries, start, timeout_ms, straggler=True):
        self.entries = list(entries)
        self.results = [None] * len(self.entries)
        self.start = start
        self.timeout_ms = timeout_ms
        self.deadline = start + timeout_ms / 1000.0
        self.straggler = straggler
        self.settled = 0
        self.slowest_ms = None
        self.last_answer = None
        self.quorum_time = None
        self.reached = [False] * len(self.entries)  # took the TCP connection
        self.pending_reached = 0  # of them, not settled yet

    @property
    def pending(self):
        return len(self.entries) - self.settled

    @property
    def cutoff(self):
        """The next moment a pending server is given up (the earlier of the two floors' cutoffs in use)."""
        if not self.straggler:
            return self.deadline
        cutoffs = []
        if self.pending_reached:
            cutoffs.append(self._cutoff(GRACE_MIN_MS))
        if self.pending > self.pending_reached:
            cutoffs.append(self._cutoff(GRACE_UNREACHED_MIN_MS))
        return min(cutoffs, default=self.deadline)

    def cutoff_for(self, index):
        """When pending server INDEX is given up."""
        if not self.straggler:
            return self.deadline
        return self._cutoff(GRACE_MIN_MS if self.reached[index] else GRACE_UNREACHED_MIN_MS)

    def _cutoff(self, floor_ms):
        return straggler_cutoff(self.last_answer, self.slowest_ms, self.quorum_time, self.deadline, floor_ms)

    def connected(self, index):
        """Server INDEX took the TCP connection: it is there, and gets a live server's grace."""
        if not self.reached[index] and self.results[index] is None:
            self.reached[index] = True
            self.pending_reached += 1

    def answered(self, index, stats, now):
        response_ms = (now - self.start) * 1000.0
        self.slowest_ms = response_ms if self.slowest_ms is None else max(self.slowest_ms, response_ms)
        self.last_answer = now
        self._settle(index, ProbeResult(self.entries[index], stats, response_ms, None), now)

    def failed(self, index, error, now):
        self._settle(index, ProbeResult(self.entries[index], None, None, error), now)

    def give_up(self, index, phase, nbytes, now, grace=None):
        """Down at the cutoff. GRACE: the straggler grace in force (ms), or None when the deadline hit."""
        if grace is not None:
            waited = (now - self.start) * 1000.0
            reason = (
                f"no answer within the straggler grace: gave up at {waited:.0f} ms, "
                f"{grace:.0f} ms after the last answer, while {phase}"
            )
        else:
            reason = f"timed out after {self.timeout_ms:g} ms while {phase}"
        if phase == READING:
            reason += f" ({nbytes} bytes so far)"
        self.failed(index, reason, now)

    def grace_in_force(self, index):
        """The grace (ms) that set server INDEX's cutoff, or None when that cutoff is the deadline."""
        if self.cutoff_for(index) >= self.deadline:
            return None
        if self.quorum_time is None:
            return GRACE_MAX_MS
        return grace_ms(self.slowest_ms, GRACE_MIN_MS if self.reached[index] else GRACE_UNREACHED_MIN_MS)

    def _settle(self, index, result, now):
        self.results[index] = result
        self.settled += 1
        if self.reached[index]:
            self.pending_reached -= 1
        if self.quorum_time is None and 2 * self.settled >= len(self.entries):
            self.quorum_time = now


# --- the I/O -------------------------------------------------------------------------


class _Probe:
    """The sockets and bytes of one server's probe; owned by the poll loop."""

    __slots__ = (
        "addresses",
        "batch",
        "conversation",
        "decoder",
        "host",
        "index",
        "nbytes",
        "phase",
        "port",
        "sent",
        "sock",
    )

    def __init__(self, index, entry, conversation):
        self.index = index
        self.conversation = conversation
        self.sent = 0  # bytes of the request sent
        host = entry.host
        # Accept a bracketed IPv6 literal even if the pool parser kept them.
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = entry.port or ADVERTISE_PORT
        self.addresses = []
        self.decoder = None
        self.sock = None
        self.nbytes = 0
        self.phase = RESOLVING
        self.batch = 0  # the poll batch in which its socket was registered


def _host_arg(host):
    """HOST as getaddrinfo wants it: ASCII as bytes, which spares the idna codec's
    import (encodings.idna, stringprep, unicodedata: 1.5 ms at every login)."""
    try:
        return host.encode("ascii")
    except UnicodeError:
        return host


def _numeric_addresses(host, port):
    """getaddrinfo for a numeric host (no DNS), or None when host is a name."""
    try:
        return socket.getaddrinfo(_host_arg(host), port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None


def lookup(host, port):
    """(addresses, None) or (None, reason): one getaddrinfo of HOST, never raising."""
    try:
        addresses = socket.getaddrinfo(_host_arg(host), port, 0, socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as error:
        return None, f"cannot resolve the name: {_os_reason(error)}"
    return (addresses, None) if addresses else (None, "name has no address")


class _Resolver:
    """Names resolved beside the poll loop: answers land in ``done`` and wake the loop through a pipe.

    ASK(probe, answered) starts the lookup of one probe's name and calls
    ``answered(probe, addresses, reason)`` when it ends, from any thread; the
    default is a daemon thread per name (one login). The balancer's poller
    asks its NameCache instead (ltsp_loadbalancer.resolver). The write end
    is closed under a lock once the probe is over, so a late answer never
    writes to a file descriptor number that was reused.
    """

    def __init__(self, probes, ask=None):
        import threading  # only when the pool has names: costs start-up time

        self._threading = threading
        self._lock = threading.Lock()
        self._closed = False
        self.done = []  # (probe, addresses or None, reason or None); list.append is atomic
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        try:
            for probe in probes:
                (ask or self._ask_in_a_thread)(probe, self.answered)
        except BaseException:
            self.close()
            raise

    def _ask_in_a_thread(self, probe, answered):
        def resolve():
            answered(probe, *lookup(probe.host, probe.port))

        self._threading.Thread(target=resolve, daemon=True).start()

    def answered(self, probe, addresses, reason):
        self.done.append((probe, addresses, reason))
        with self._lock:
            if not self._closed:
                os.write(self._write_fd, b"x")

    def drain(self):
        """Empty the wake pipe; return and forget the names resolved so far."""
        try:
            while os.read(self.read_fd, 512):
                pass
        except BlockingIOError:
            pass
        done = []
        while self.done:  # pop() is atomic: a thread may append meanwhile
            done.append(self.done.pop(0))
        return done

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._write_fd)
        os.close(self.read_fd)


def _os_reason(error):
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


class _OutOfSockets(Exception):
    """The process has no file descriptor left for another socket (EMFILE, ENFILE)."""


class _PollLoop:
    """Drives one ProbeRound with non-blocking sockets and select.poll.

    conversations: one Conversation per entry (default: ADVERTISE for all).
    first_wins: end the round at the first answer, leaving the others
    unsettled (None) instead of giving them up.
    """

    def __init__(self, round_, conversations=None, first_wins=False, resolver=None):
        self.round = round_
        self.first_wins = first_wins
        self.new_resolver = resolver or _Resolver
        self.poller = select.poll()
        self.by_fd = {}
        self.waiting = []  # connected nowhere yet: out of file descriptors (next wave)
        self.batch = 0  # counts poll() calls; see _Probe.batch
        if conversations is None:
            conversations = [ADVERTISE] * len(round_.entries)
        self.probes = [
            _Probe(index, entry, conversation)
            for index, (entry, conversation) in enumerate(zip(round_.entries, conversations))
        ]

    def finish(self, probe, stats=None, error=None):
        self._close(probe)
        probe.decoder = None
        if stats is not None:
            self.round.answered(probe.index, stats, monotonic())
        else:
            self.round.failed(probe.index, error, monotonic())

    def _close(self, probe):
        sock = probe.sock
        if sock is not None:
            self.poller.unregister(sock.fileno())
            del self.by_fd[sock.fileno()]
            sock.close()
            probe.sock = None

    def connect_next(self, probe):
        """Start connecting to the probe's next address, or finish it as Down."""
        reason = "no address to connect to"
        while probe.addresses:
            try:
                reason = self._try_address(probe, probe.addresses[0])
            except _OutOfSockets:
                probe.phase = WAITING
                self.waiting.append(probe)
                return
            probe.addresses.pop(0)
            if reason is None:
                return
        self.finish(probe, error=reason)

    def _try_address(self, probe, address):
        """Connect PROBE to ADDRESS: None when under way, else why not."""
        family, socktype, proto, _name, sockaddr = address
        try:
            sock = socket.socket(family, socktype, proto)
        except OSError as error:
            if error.errno in (EMFILE, ENFILE) and self.by_fd:
                raise _OutOfSockets from None  # a socket of ours will close: wait for it
            return f"cannot open a socket: {_os_reason(error)}"
        sock.setblocking(False)
        try:
            code = sock.connect_ex(sockaddr)
        except (OSError, OverflowError, ValueError) as error:
            sock.close()
            return f"connect failed: {_os_reason(error)}"
        if code not in (0, EINPROGRESS):
            sock.close()
            return f"connect failed: {os.strerror(code)}"
        probe.sock = sock
        probe.phase = CONNECTING
        self.by_fd[sock.fileno()] = probe
        probe.batch = self.batch
        self.poller.register(sock.fileno(), select.POLLOUT)
        return None

    def on_connected(self, probe, events):
        sock = probe.sock
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0 and events & select.POLLOUT:
            self.round.connected(probe.index)
            if probe.conversation.request:
                probe.phase = SENDING
                self.on_writable(probe)
            else:
                probe.phase = READING
                self.poller.modify(sock.fileno(), select.POLLIN)
            return
        self._close(probe)
        last = f"connect failed: {os.strerror(code) if code else 'connection closed'}"
        if probe.addresses:
            self.connect_next(probe)
        else:
            self.finish(probe, error=last)

    def on_writable(self, probe):
        request = probe.conversation.request
        try:
            probe.sent += probe.sock.send(memoryview(request)[probe.sent :])  # a view: no copy of the rest
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.finish(probe, error=f"sending the request failed: {_os_reason(error)}")
            return
        if probe.sent == len(request):
            probe.phase = READING
            self.poller.modify(probe.sock.fileno(), select.POLLIN)

    def on_readable(self, probe):
        conversation = probe.conversation
        limit = conversation.limit + 1 - probe.nbytes
        try:
            data = probe.sock.recv(min(READ_CHUNK, limit))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self.finish(probe, error=f"{_os_reason(error)} after {probe.nbytes} bytes")
            return
        if probe.decoder is None:
            # Made at the first byte, not at connect: a parser lives only while a document
            # arrives, not while a thousand servers are being connected to.
            probe.decoder = conversation.new_decoder()
        try:
            if data:
                probe.nbytes += len(data)
                probe.decoder.feed(data)
                if probe.nbytes > conversation.limit:
                    self.finish(probe, error=f"answer larger than {conversation.limit} bytes")
                    return
                if not probe.decoder.complete:
                    return
                # The root element closed: the answer is whole, whether or
                # not the server closes the connection (docs/PROTOCOL.md).
            elif probe.nbytes == 0:
                self.finish(probe, error="closed the connection without sending anything")
                return
            stats = probe.decoder.close()
        except ValueError as error:  # wire.ProtocolError is one
            self.finish(probe, error=f"{conversation.refused}{error}")
            return
        self.finish(probe, stats=stats)

    def start_next_wave(self):
        """Connect the probes that waited for a file descriptor, while there are free ones."""
        while self.waiting:
            probe = self.waiting.pop(0)
            self.connect_next(probe)
            if probe.phase == WAITING:  # queued again: still no descriptor free
                return

    def on_resolved(self, resolver):
        for probe, addresses, error in resolver.drain():
            if addresses:
                probe.addresses = list(addresses)
                self.connect_next(probe)
            else:
                self.finish(probe, error=error)

    def dispatch(self, fd, events, resolver):
        if resolver is not None and fd == resolver.read_fd:
            self.on_resolved(resolver)
            return
        probe = self.by_fd.get(fd)
        if probe is None or probe.batch == self.batch:
            # Finished earlier in this batch, or its fd number was closed and
            # reused by a new socket: the event is stale.
            return
        if probe.phase == CONNECTING:
            self.on_connected(probe, events)
        elif probe.phase == SENDING:
            self.on_writable(probe)
        elif events & (select.POLLIN | _POLL_ERR):
            self.on_readable(probe)

    def run(self):
        """Probe until every server settled or the cutoff; the stragglers are given up."""
        resolver = None
        names = []
        for probe in self.probes:
            numeric = _numeric_addresses(probe.host, probe.port)
            if numeric is None:
                names.append(probe)
            else:
                probe.addresses = numeric
                self.connect_next(probe)
        try:
            if names:
                resolver = self.new_resolver(names)
                self.poller.register(resolver.read_fd, select.POLLIN)
            while self.round.pending and not (self.first_wins and self.round.last_answer is not None):
                now = monotonic()
                if now >= self.round.cutoff:
                    if now >= self.round.deadline or not self.give_up_due(now):
                        break
                    continue
                self.batch += 1
                # Round up so that a wait of 0.3 ms does not spin with timeout 0.
                for fd, events in self.poller.poll((self.round.cutoff - now) * 1000.0 + 1.0):
                    self.dispatch(fd, events, resolver)
                if self.waiting:
                    self.start_next_wave()
            if self.round.last_answer is None or not self.first_wins:
                self.give_up_pending()
        finally:
            for probe in self.probes:
                if probe.sock is not None:
                    probe.sock.close()
            if resolver is not None:
                resolver.close()

    def give_up_due(self, now):
        """Give up the pending servers whose own cutoff has come (an unreached one's comes first); True if any."""
        due = [probe for probe in self.probes if self.round.results[probe.index] is None]
        due = [probe for probe in due if self.round.cutoff_for(probe.index) <= now]
        self._give_up(due)
        return bool(due)

    def give_up_pending(self):
        self._give_up([probe for probe in self.probes if self.round.results[probe.index] is None])

    def _give_up(self, probes):
        # The graces before give_up() counts the stragglers as settled (and so changes them).
        graces = [self.round.grace_in_force(probe.index) for probe in probes]
        for probe, grace in zip(probes, graces):
            self._close(probe)
            self.round.give_up(probe.index, probe.phase, probe.nbytes, monotonic(), grace)


def probe_pool(entries, timeout_ms, straggler=True, resolver=None):
    """Probe every entry at once; return a list of ProbeResult in pool order.

    entries: PoolEntry-like objects with .host and .port (port None means 377).
    timeout_ms: the one deadline for resolving, connecting and reading.
    straggler: apply the straggler rule (one login); False waits for every
    server until the deadline (a periodic poller).
    resolver: called with the probes whose host is a name, returns an object
    like _Resolver (read_fd, drain, close); None: a thread per name (one login).
    Never raises for anything a server does; every entry gets a result.
    """
    round_ = ProbeRound(entries, monotonic(), timeout_ms, straggler)
    _PollLoop(round_, resolver=resolver).run()
    return round_.results


def ask_first(entries, conversations, timeout_ms):
    """Hold one Conversation with each entry at once, under one deadline, until the first accepted answer.

    Returns ProbeResults in entry order: ``stats`` is the decoder's value for
    the one that answered first; the others are Down with their reason, or
    None when still under way when that answer came. Names resolve in
    threads like the pool's, so a lookup that hangs costs the others nothing.
    """
    round_ = ProbeRound(entries, monotonic(), timeout_ms, straggler=False)
    _PollLoop(round_, conversations, first_wins=True).run()
    return round_.results
