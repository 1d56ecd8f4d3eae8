"""Probing: ask every pool server for its document at once, under one deadline.

Rules of this module (the CLI and the tests rely on them):

- Every server is asked at the same time: one non-blocking TCP connection per
  server, driven by one ``select.poll`` loop (no thread per server). IPv4 and
  IPv6 both work; when a name has several addresses they are tried in the
  order getaddrinfo gives until one connects.
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
- The response time is measured from the start of probe_pool to the end of
  the document (its closing root tag, or the server closing the connection,
  whichever comes first), so it includes name resolution and connecting.

The straggler rule (docs/get_hosts.md says the same):

    Once at least one server has answered with a valid document, the servers
    still pending get a grace period, counted from the latest valid answer
    and never past the deadline:

    - when at least half of the pool has settled (answered, or failed for
      good: refused, unreachable, garbage), counted from the later of the
      latest answer and the moment half had settled,

        grace = clamp(GRACE_FACTOR * slowest_answer_ms, GRACE_MIN_MS, GRACE_MAX_MS)
              = clamp(4 * slowest, 75 ms, 300 ms);

    - while fewer than half have settled, grace = GRACE_MAX_MS (300 ms): the
      pending ones may be a slower majority, so they get the longest grace,
      but a pool whose other servers are all powered off does not wait out
      the deadline for them.

    A server still pending then is Down ("no answer within the straggler
    grace"). Each new valid answer recomputes the grace and restarts it.
    While no server has answered, only the deadline applies.

So on a LAN, where answers take a few ms, a stalled or powered-off server
costs a login about the slowest answer plus 75 ms instead of ``LB_TIMEOUT``
(300 ms when most of the pool is dead); a server answering four times slower
than the slowest of its peers is still waited for.
"""

from __future__ import annotations

import os
import select
import socket
from collections import namedtuple
from errno import EINPROGRESS
from time import monotonic

from get_hosts import wire

DEFAULT_PORT = 377
GRACE_FACTOR = 4
GRACE_MIN_MS = 75
GRACE_MAX_MS = 300
READ_CHUNK = 4096

ProbeResult = namedtuple("ProbeResult", "entry stats response_ms error")
ProbeResult.__doc__ = """One pool entry's outcome.

entry: the PoolEntry probed. stats: wire.ServerStats, or None when Down.
response_ms: float, start of the probe to the end of the document, or None.
error: why it is Down (str), or None.
"""

_POLL_ERR = select.POLLERR | select.POLLHUP | select.POLLNVAL

# Phases of one probe, named for the reasons given when the deadline hits.
_RESOLVING, _CONNECTING, _READING = "resolving the name", "connecting", "reading"


class _Probe:
    """The state of one server's probe; owned by the poll loop."""

    __slots__ = ("addresses", "batch", "decoder", "entry", "host", "index", "nbytes", "phase", "port", "sock")

    def __init__(self, index, entry):
        self.index = index
        self.entry = entry
        host = entry.host
        # Accept a bracketed IPv6 literal even if the pool parser kept them.
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        self.host = host
        self.port = entry.port or DEFAULT_PORT
        self.addresses = []
        self.decoder = None
        self.sock = None
        self.nbytes = 0
        self.phase = _RESOLVING
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


class _Resolver:
    """Resolves names in daemon threads and wakes the poll loop through a pipe.

    The write end is closed under a lock once the probe is over, so a late
    thread never writes to a file descriptor number that was reused.
    """

    def __init__(self, probes):
        import threading  # only when the pool has names: costs start-up time

        self._lock = threading.Lock()
        self._closed = False
        self.done = []  # (probe, addresses or None, error or None); list.append is atomic
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        for probe in probes:
            threading.Thread(target=self._resolve, args=(probe,), daemon=True).start()

    def _resolve(self, probe):
        try:
            addresses = socket.getaddrinfo(_host_arg(probe.host), probe.port, 0, socket.SOCK_STREAM)
            outcome = (probe, addresses, None if addresses else "name has no address")
        except (OSError, UnicodeError, ValueError) as error:
            outcome = (probe, None, f"cannot resolve the name: {_os_reason(error)}")
        self.done.append(outcome)
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
            self._closed = True
            os.close(self._write_fd)
        os.close(self.read_fd)


def _os_reason(error):
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _grace_ms(slowest_ms):
    """The straggler grace for the slowest valid answer seen so far, in ms."""
    return min(max(GRACE_FACTOR * slowest_ms, GRACE_MIN_MS), GRACE_MAX_MS)


def probe_pool(entries, timeout_ms):
    """Probe every entry at once; return a list of ProbeResult in pool order.

    entries: PoolEntry-like objects with .host and .port (port None means 377).
    timeout_ms: the one deadline for resolving, connecting and reading.
    Never raises for anything a server does; every entry gets a result.
    """
    start = monotonic()
    deadline = start + timeout_ms / 1000.0
    results = [None] * len(entries)
    probes = [_Probe(index, entry) for index, entry in enumerate(entries)]
    poller = select.poll()
    by_fd = {}
    pending = len(probes)
    settled = 0  # answered or failed for good
    slowest_ms = None  # slowest valid answer so far
    last_answer = None  # monotonic time of the latest valid answer
    quorum_time = None  # when half the pool had settled
    cutoff = deadline
    batch = 0  # counts poll() calls; see _Probe.batch

    def finish(probe, stats=None, error=None):
        nonlocal pending, settled, slowest_ms, last_answer, quorum_time, cutoff
        sock = probe.sock
        if sock is not None:
            poller.unregister(sock.fileno())
            del by_fd[sock.fileno()]
            sock.close()
            probe.sock = None
        now = monotonic()
        response_ms = None
        if stats is not None:
            response_ms = (now - start) * 1000.0
            slowest_ms = response_ms if slowest_ms is None else max(slowest_ms, response_ms)
            last_answer = now
        results[probe.index] = ProbeResult(probe.entry, stats, response_ms, error)
        pending -= 1
        settled += 1
        if quorum_time is None and 2 * settled >= len(probes):
            quorum_time = now
        if last_answer is not None:
            cutoff = min(deadline, max(last_answer, quorum_time or last_answer) + current_grace_ms() / 1000.0)

    def current_grace_ms():
        return _grace_ms(slowest_ms) if quorum_time is not None else GRACE_MAX_MS

    def connect_next(probe):
        """Start connecting to the probe's next address, or finish it as Down."""
        reason = "no address to connect to"
        while probe.addresses:
            family, socktype, proto, _name, sockaddr = probe.addresses.pop(0)
            try:
                sock = socket.socket(family, socktype, proto)
            except OSError as error:
                reason = f"cannot open a socket: {_os_reason(error)}"
                continue
            sock.setblocking(False)
            try:
                code = sock.connect_ex(sockaddr)
            except (OSError, OverflowError, ValueError) as error:
                sock.close()
                reason = f"connect failed: {_os_reason(error)}"
                continue
            if code in (0, EINPROGRESS):
                probe.sock = sock
                probe.phase = _CONNECTING
                by_fd[sock.fileno()] = probe
                probe.batch = batch
                poller.register(sock.fileno(), select.POLLOUT)
                return
            sock.close()
            reason = f"connect failed: {os.strerror(code)}"
        finish(probe, error=reason)

    def on_connected(probe, events):
        sock = probe.sock
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0 and events & select.POLLOUT:
            probe.phase = _READING
            probe.decoder = wire.Decoder()
            poller.modify(sock.fileno(), select.POLLIN)
            return
        poller.unregister(sock.fileno())
        del by_fd[sock.fileno()]
        sock.close()
        probe.sock = None
        last = f"connect failed: {os.strerror(code) if code else 'connection closed'}"
        if probe.addresses:
            connect_next(probe)
        else:
            finish(probe, error=last)

    def on_readable(probe):
        limit = wire.MAX_DOCUMENT_BYTES + 1 - probe.nbytes
        try:
            data = probe.sock.recv(min(READ_CHUNK, limit))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            finish(probe, error=f"{_os_reason(error)} after {probe.nbytes} bytes")
            return
        try:
            if data:
                probe.nbytes += len(data)
                probe.decoder.feed(data)
                if not probe.decoder.complete:
                    return
                # The root element closed: the answer is whole, whether or
                # not the server closes the connection (docs/PROTOCOL.md).
            elif probe.nbytes == 0:
                finish(probe, error="closed the connection without sending anything")
                return
            stats = probe.decoder.close()
        except wire.ProtocolError as error:
            finish(probe, error=f"bad document: {error}")
            return
        finish(probe, stats=stats)

    resolver = None
    names = []
    for probe in probes:
        numeric = _numeric_addresses(probe.host, probe.port)
        if numeric is None:
            names.append(probe)
        else:
            probe.addresses = numeric
            connect_next(probe)
    try:
        if names:
            resolver = _Resolver(names)
            poller.register(resolver.read_fd, select.POLLIN)
        while pending:
            now = monotonic()
            if now >= cutoff:
                break
            batch += 1
            # Round up so that a wait of 0.3 ms does not spin with timeout 0.
            for fd, events in poller.poll((cutoff - now) * 1000.0 + 1.0):
                if resolver is not None and fd == resolver.read_fd:
                    for probe, addresses, error in resolver.drain():
                        if addresses:
                            probe.addresses = list(addresses)
                            connect_next(probe)
                        else:
                            finish(probe, error=error)
                    continue
                probe = by_fd.get(fd)
                if probe is None or probe.batch == batch:
                    # Finished earlier in this batch, or its fd number was
                    # closed and reused by a new socket: the event is stale.
                    continue
                if probe.phase == _CONNECTING:
                    on_connected(probe, events)
                elif events & (select.POLLIN | _POLL_ERR):
                    on_readable(probe)
        straggler = cutoff < deadline
        # Before finish() below counts the stragglers as settled (and so changes the grace).
        grace_ms = current_grace_ms() if straggler else None
        for probe in probes:
            if results[probe.index] is not None:
                continue
            if straggler:
                waited = (monotonic() - start) * 1000.0
                reason = (
                    f"no answer within the straggler grace: gave up at {waited:.0f} ms, "
                    f"{grace_ms:.0f} ms after the last answer, while {probe.phase}"
                )
            else:
                reason = f"timed out after {timeout_ms:g} ms while {probe.phase}"
            if probe.phase == _READING:
                reason += f" ({probe.nbytes} bytes so far)"
            finish(probe, error=reason)
    finally:
        for probe in probes:
            if probe.sock is not None:
                probe.sock.close()
        if resolver is not None:
            resolver.close()
    return results
