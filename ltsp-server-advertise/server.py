"""Serving: one process, one thread, one selector, every listening socket.

Rules:

- A connection is accepted, checked against ALLOW, written its document and
  closed, all in the accept handler: the usual client costs accept, send,
  one recv and close, and no per-connection state. Nothing is read that we
  need; the one non-blocking recv before close only empties what a client
  may have sent, so the close is a FIN and not a reset that could destroy
  the document in the client's buffer.
- A peer outside ALLOW gets the connection closed without a document, and
  a warning (ltsp_lbcore.refusals: one line per peer a minute, then the
  count of the rest), so an admin sees a lock-out without --debug.
- A client that does not take the whole document at once (a full socket
  buffer) is held: registered for writability until WRITE_TIMEOUT_SECONDS,
  then dropped. So is a client that comes before the first sample exists
  (see advertisement.py; after that, every client is answered at once).
  Held clients count against MAX_CLIENTS; at the limit the listening
  sockets leave the selector until a place frees up. A client that
  holds the connection open but does not read costs nothing: its document
  fits in the socket buffer and we have already closed our end.
- Out of file descriptors (EMFILE, ENFILE, ENOBUFS, ENOMEM from accept), the
  pending connections stay in the kernel's queue; the listening sockets leave
  the selector (no busy loop on a socket that stays readable) and come back
  after FAMINE_RETRY_SECONDS, or at once when we close a descriptor of our
  own. One warning per famine, one line when it ends.
- Signals go through set_wakeup_fd into the same selector: SIGHUP reloads
  the config (a bad file keeps the running one and says why), SIGTERM and
  SIGINT stop the loop; run() then returns 0.
- Idle means select() sleeping until the next idle sample (one a minute, see
  advertisement.py): no other timer runs when no client is held. A sample a
  client made due starts after the events at hand are handled
  (``idle_sample`` at the end of each turn), never on a connection's path.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import selectors
import signal
import socket
import time

from ltsp_lbcore import listeners as listeners_module
from ltsp_lbcore.allow import AllowList
from ltsp_lbcore.refusals import RefusalLog
from ltsp_lbcore.service import reload_config

log = logging.getLogger(__name__)

# Accepts per wakeup of one listening socket, so that signals, timers and the
# other sockets get their turn during a storm.
ACCEPT_BATCH = 256
# Retry interval while out of file descriptors: 10 cheap wakeups a second.
FAMINE_RETRY_SECONDS = 0.1
# What a client may have sent us, discarded before close (see the rules).
DRAIN_BYTES = 65536
# accept() errors that mean "out of a resource"; the connection stays queued.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _send_all_or_some(conn, data):
    """Bytes sent (0 when the buffer is full), or None when the peer is gone."""
    try:
        return conn.send(data, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        return None


def _close(conn):
    with contextlib.suppress(OSError):
        conn.recv(DRAIN_BYTES, socket.MSG_DONTWAIT)
    conn.close()


class Server:
    """Serves the advertisement on the given listening sockets until stop()."""

    def __init__(self, sockets, config, advertisement, reload_config=None, clock=time.monotonic):
        """reload_config: () -> Config, called on SIGHUP; raises ServiceError on a bad file."""
        self._sockets = list(sockets)
        self._advertisement = advertisement
        self._reload_config = reload_config
        self._clock = clock
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._listening = False
        self._stopping = False
        self._signals = []
        self._holding = {}  # conn -> [remaining memoryview or None (waiting for a sample), deadline]
        self._deadlines = []  # heap of (deadline, seq, conn)
        self._seq = itertools.count()
        self._famine_until = None  # monotonic time; None when not starving
        self._famine_started = None
        self._refusals = RefusalLog(log)
        self.apply_config(config)
        advertisement.on_sample = self.wake
        # Counters, for logs and tests.
        self.served = 0
        self.refused = 0
        self.timed_out = 0

    # --- configuration --------------------------------------------------------

    def apply_config(self, config):
        self.config = config
        self._allow = AllowList(config.allow)
        self._advertisement.configure(config)

    def _reload(self):
        if self._reload_config is None:
            return
        new = reload_config(self._reload_config, self.config)
        if new is None:
            return
        self.apply_config(new)
        log.info(
            "reloaded %s: STATE=%s WEIGHT=%d MAX_CLIENTS=%d SAMPLE_SECONDS=%g",
            new.path,
            new.state,
            new.weight,
            new.max_clients,
            new.sample_seconds,
        )
        self._update_listening(self._clock())

    # --- the loop -------------------------------------------------------------

    def wake(self):
        """Wake the loop from another thread (a sample landed)."""
        # A full buffer (OSError) means the loop is awake anyway.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def stop(self):
        self._stopping = True
        self.wake()

    def install_signal_handlers(self):
        """SIGHUP reloads, SIGTERM/SIGINT stop. Main thread only."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame):
        self._signals.append(signum)

    def run(self):
        """Serve until stop() or SIGTERM. Returns the exit status (0)."""
        for sock in self._sockets:
            log.info("listening on %s", listeners_module.describe(sock))
        self._update_listening(self._clock())
        try:
            while not self._stopping:
                events = self._selector.select(self._timeout(self._clock()))
                for key, mask in events:
                    key.data(key.fileobj, mask)
                now = self._clock()
                self._handle_signals()
                self._run_timers(now)
        finally:
            self._shutdown()
            self._refusals.flush(float("inf"))  # the refusals counted since their peer's last line
        log.info("stopped: %d served, %d refused, %d timed out", self.served, self.refused, self.timed_out)
        return 0

    def _shutdown(self):
        for conn in list(self._holding):
            self._release(conn)
        for sock in self._sockets:
            if self._listening:
                self._selector.unregister(sock)
            sock.close()
        self._listening = False
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _handle_signals(self):
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                log.info("SIGHUP: reloading %s", self.config.path)
                self._reload()
            else:
                log.info("%s: stopping", signal.Signals(signum).name)
                self._stopping = True

    def _on_wake(self, sock, _mask):
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        self._serve_waiting(self._clock())

    def _timeout(self, now):
        times = []
        if self._deadlines:
            times.append(self._deadlines[0][0])
        if self._famine_until is not None:
            times.append(self._famine_until)
        # A client waiting for the first sample needs no timer: the sample is due
        # (this time), or running, and on_sample wakes us when it lands.
        idle_sample_at = self._advertisement.next_idle_sample_at()
        if idle_sample_at is not None:
            times.append(idle_sample_at)
        return max(0.0, min(times) - now) if times else None

    def _run_timers(self, now):
        if self._famine_until is not None and now >= self._famine_until:
            # Back into the selector; if the queue still cannot be taken,
            # accept fails again and _starve() takes them out again.
            self._famine_until = None
            self._update_listening(now)
        self._advertisement.idle_sample(now)
        while self._deadlines and self._deadlines[0][0] <= now:
            _deadline, _seq, conn = heapq.heappop(self._deadlines)
            if conn in self._holding:
                self.timed_out += 1
                log.debug("write timeout: dropping a client that did not take its document")
                self._release(conn)
        if any(entry[0] is None for entry in self._holding.values()):
            self._serve_waiting(now)

    # --- listening sockets in and out of the selector -------------------------

    def _update_listening(self, now):
        wanted = self._famine_until is None and len(self._holding) < self.config.max_clients
        if wanted and not self._listening:
            for sock in self._sockets:
                self._selector.register(sock, selectors.EVENT_READ, self._on_listener)
        elif not wanted and self._listening:
            for sock in self._sockets:
                self._selector.unregister(sock)
        self._listening = wanted

    def _starve(self, error, now):
        if self._famine_started is None:
            self._famine_started = now
            log.warning(
                "out of file descriptors (%s): connections wait in the kernel's queue; retrying every %g s",
                error.strerror,
                FAMINE_RETRY_SECONDS,
            )
        self._famine_until = now + FAMINE_RETRY_SECONDS
        self._update_listening(now)

    # --- clients --------------------------------------------------------------

    def _on_listener(self, listener, _mask):
        now = self._clock()
        for _ in range(ACCEPT_BATCH):
            if len(self._holding) >= self.config.max_clients:
                self._update_listening(now)
                return
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno in RESOURCE_ERRNOS:
                    self._starve(error, now)
                    return
                # ECONNABORTED, EPROTO, EPERM (a firewall): that one client is gone.
                log.debug("accept failed: %s", error)
                continue
            if self._famine_started is not None:
                log.warning("file descriptors available again after %.1f s: serving", now - self._famine_started)
                self._famine_started = None
            self._serve(conn, listener.family, peer, now)

    def _serve(self, conn, family, peer, now):
        if not self._allow.allows(peer[0]):
            self.refused += 1
            self._refusals.refused(peer[0], "not in ALLOW", now)
            conn.close()
            return
        document = self._advertisement.document(now)
        if document is None:
            self._hold(conn, None, now)
            return
        self._write(conn, document, now)

    def _write(self, conn, document, now):
        sent = _send_all_or_some(conn, document)
        if sent is None:
            conn.close()
            return
        if sent == len(document):
            self.served += 1
            _close(conn)
            return
        self._hold(conn, memoryview(document)[sent:], now)

    def _hold(self, conn, remaining, now):
        """Keep a client that could not be finished now (buffer full, or waiting for a sample)."""
        deadline = now + self.config.write_timeout_seconds
        self._holding[conn] = [remaining, deadline]
        heapq.heappush(self._deadlines, (deadline, next(self._seq), conn))
        if remaining is not None:
            conn.setblocking(False)
            self._selector.register(conn, selectors.EVENT_WRITE, self._on_writable)
        if len(self._holding) >= self.config.max_clients:
            self._update_listening(now)

    def _release(self, conn):
        entry = self._holding.pop(conn, None)
        if entry is not None and entry[0] is not None:
            self._selector.unregister(conn)
        _close(conn)
        # We just freed a descriptor: if starving, try the queue now, not at the next retry.
        self._famine_until = None
        self._update_listening(self._clock())

    def _on_writable(self, conn, _mask):
        entry = self._holding[conn]
        remaining = entry[0]
        sent = _send_all_or_some(conn, remaining)
        if sent is None:
            self._release(conn)
        elif sent == len(remaining):
            self.served += 1
            self._release(conn)
        else:
            entry[0] = remaining[sent:]

    def _serve_waiting(self, now):
        waiting = [conn for conn, entry in self._holding.items() if entry[0] is None]
        if not waiting:
            return
        document = self._advertisement.document(now)
        if document is None:
            return
        for conn in waiting:
            del self._holding[conn]
            self._write(conn, document, now)
        self._update_listening(now)
