"""Is the login service behind this daemon working? The daemon's own checks.

A server whose sshd is dead still answers on port 377 with 0 sessions: the
emptiest server of the pool, so every algorithm would send it the storm.
These checks let the document say ``<failing>`` instead (docs/PROTOCOL.md).

Rules:

- The sshd check reads what the kernel already knows, /proc/net/tcp and
  tcp6, which the stats collector reads anyway: a socket in LISTEN on
  SSH_PORT, and its accept queue (for a listening socket the kernel puts
  the connections waiting for accept() in rx_queue). It never connects to
  sshd, so auth.log gets nothing.
  Failing when nothing listens in two checks running (a restart of sshd is
  not an outage), or when connections have waited in the accept queue at
  every check for STUCK_SECONDS (a working sshd accepts in microseconds).
  SSH_PORT = 0 turns it off (XDMCP sites have no TCP login port).
- HEALTH_COMMAND, when set, runs every HEALTH_SECONDS without a shell, as
  the daemon's user, in a session of its own: non-zero exit, or not done
  within HEALTH_SECONDS, is failing, its first output line the reason. Its
  output is read to the end but only OUTPUT_KEPT_BYTES are kept; its
  process group is killed when it is done or out of time, so a command that
  forks leaves nothing behind. A command that cannot run (no such file, not
  executable) is one warning, and never takes the server out by itself.
- The checks run on a thread of their own, never on a client's connection
  path; ``HealthMonitor.failing`` is read by the advertisement at each
  document (one string or None, replaced whole: no lock).
"""

import contextlib
import errno
import logging
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

log = logging.getLogger(__name__)

TCP_LISTEN = "0A"  # the kernel's st column in /proc/net/tcp
SSH_CHECK_SECONDS = 2.0
# Connections waiting in sshd's accept queue at every check for this long: it is not accepting.
STUCK_SECONDS = 6.0
# Nothing listening in this many checks running: sshd is down (one miss may be a restart).
MISSES_TO_FAIL = 2
OUTPUT_KEPT_BYTES = 4096
REASON_CHARS = 200


# --- the sshd check: pure --------------------------------------------------------


def listening_queues(table_text, port):
    """The accept queue (connections waiting now) of every LISTEN socket on PORT in a /proc/net/tcp text.

    Lines that do not parse are skipped (the kernel's format, not a user's).
    """
    port_hex = f":{port:04X}"
    queues = []
    for line in table_text.splitlines()[1:]:
        fields = line.split(None, 5)
        if len(fields) < 5 or fields[3] != TCP_LISTEN or not fields[1].endswith(port_hex):
            continue
        waiting = fields[4].partition(":")[2]
        try:
            queues.append(int(waiting, 16))
        except ValueError:
            continue
    return queues


class SshdWatch:
    """Turns successive listening_queues() readings into a verdict (a reason, or None)."""

    def __init__(self, port):
        self.port = port
        self._misses = 0
        self._waiting_since = None

    def observe(self, now, queues):
        """One reading at monotonic NOW -> the reason sshd is failing, or None."""
        if not queues:
            self._misses += 1
            self._waiting_since = None
            if self._misses >= MISSES_TO_FAIL:
                return f"sshd: nothing listens on port {self.port}"
            return None
        self._misses = 0
        waiting = sum(queues)
        if waiting == 0:
            self._waiting_since = None
            return None
        if self._waiting_since is None:
            self._waiting_since = now
        stuck_for = now - self._waiting_since
        if stuck_for >= STUCK_SECONDS:
            return (
                f"sshd: connections wait unaccepted on port {self.port} for {stuck_for:.0f} s "
                f"({waiting} now): it is not accepting"
            )
        return None


def read_listening_queues(port, procfs="/proc"):
    """The accept queues of the LISTEN sockets on PORT in this network namespace.

    Asked of the kernel through sock_diag (netlink), which dumps listening
    sockets only: microseconds, however many connections the server holds
    (/proc/net/tcp lists every one of them, and a busy server's table costs
    tens of ms to read). The text tables are the fallback where netlink is
    not allowed.
    """
    try:
        return listening_queues_by_netlink(port)
    except OSError:
        pass
    queues = []
    for name in ("net/tcp", "net/tcp6"):
        try:
            with open(os.path.join(procfs, name), encoding="ascii", errors="replace") as table:
                queues += listening_queues(table.read(), port)
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
    return queues


# sock_diag, linux/inet_diag.h: a dump request for one family's TCP sockets in some states.
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN_STATE = 10
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
DIAG_REQUEST = struct.Struct("=BBBBI48x")  # family, protocol, extensions, pad, states; the socket id left 0
# inet_diag_msg: family, state, timer, retrans (4 bytes), the socket id (48: the source port first,
# big-endian), then expires, rqueue (a listener's accept queue now), wqueue (its backlog).
DIAG_QUEUES = struct.Struct("=III")
DIAG_QUEUES_OFFSET = 4 + 48


def listening_queues_by_netlink(port):
    """listening_queues() for IPv4 and IPv6 through sock_diag; OSError when netlink says no."""
    queues = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        sock.settimeout(1.0)
        for sequence, family in enumerate((socket.AF_INET, socket.AF_INET6), 1):
            request = DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN_STATE)
            header = NLMSG_HEADER.pack(
                NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0
            )
            sock.send(header + request)
            queues += _read_dump(sock, sequence, port)
    return queues


def _read_dump(sock, sequence, port):
    queues = []
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, _flags, seq, _pid = NLMSG_HEADER.unpack_from(data, offset)
            if length < NLMSG_HEADER.size:
                raise OSError("sock_diag: a message shorter than its header")
            body = offset + NLMSG_HEADER.size
            if seq == sequence:
                if kind == NLMSG_DONE:
                    return queues
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, body)[0]
                    raise OSError(-code, f"sock_diag: {os.strerror(-code)}")
                if kind == SOCK_DIAG_BY_FAMILY and body + DIAG_QUEUES_OFFSET + DIAG_QUEUES.size <= len(data):
                    source_port = struct.unpack_from(">H", data, body + 4)[0]
                    if source_port == port:
                        queues.append(DIAG_QUEUES.unpack_from(data, body + DIAG_QUEUES_OFFSET)[1])
            offset += (length + 3) & ~3


# --- the admin's command -----------------------------------------------------------


class CannotRun(Exception):
    """The command could not be started at all: the admin's mistake, not the service's failure."""


def one_line(text):
    """The first non-blank line of TEXT, printable and at most REASON_CHARS long ('' when none)."""
    for line in text.splitlines():
        line = "".join(c if c.isprintable() else "?" for c in line.strip())
        if line:
            return line[:REASON_CHARS]
    return ""


def run_check(argv, timeout):
    """Run ARGV once; None when it passed, else the one-line reason. CannotRun when it cannot start."""
    name = os.path.basename(argv[0])
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole when done
            close_fds=True,
        )
    except OSError as error:
        raise CannotRun(f"HEALTH_COMMAND {argv[0]!r} cannot run: {error.strerror or error}") from None
    try:
        kept = _read_output(process, started + timeout)
        status = process.poll()
    finally:
        _kill_group(process)
        process.stdout.close()
        process.wait()
    if status is None:
        return f"{name} did not finish within {timeout:g} s"
    if status == 0:
        return None
    line = one_line(kept.decode("utf-8", "replace"))
    how = f"exited {status}" if status > 0 else f"killed by signal {-status}"
    return f"{name} {how}: {line}" if line else f"{name} {how}"


def _read_output(process, deadline):
    """Read the command's output until it exits and its pipe is drained, or DEADLINE; keep the start."""
    kept = bytearray()
    pipe = process.stdout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(kept)
        readable, _, _ = select.select([pipe], [], [], min(remaining, 0.2))
        if readable:
            chunk = os.read(pipe.fileno(), 65536)
            if not chunk:  # every writer closed it
                # Closed its output but may run on: then it is out of time, said by the caller.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.001, deadline - time.monotonic()))
                return bytes(kept)
            if len(kept) < OUTPUT_KEPT_BYTES:
                kept += chunk[: OUTPUT_KEPT_BYTES - len(kept)]
        elif process.poll() is not None:
            # Exited, but a child it left behind still holds the pipe: done.
            return bytes(kept)


def _kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError as error:
        if error.errno not in (errno.ESRCH, errno.EPERM):
            raise


def command_problem(argv):
    """Why ARGV cannot run at all (one line), or None: checked at start and on reload."""
    if not argv:
        return None
    path = argv[0]
    if os.sep not in path:
        found = shutil.which(path)
        if found is None:
            return f"HEALTH_COMMAND {path!r}: no such command on PATH ({os.environ.get('PATH', '')})"
        path = found
    if not os.path.isfile(path):
        return f"HEALTH_COMMAND {path!r}: no such file"
    if not os.access(path, os.X_OK):
        return f"HEALTH_COMMAND {path!r}: not executable by this user"
    return None


# --- the monitor: a thread running both on their schedules ----------------------------


class HealthMonitor:
    """Runs the checks on a daemon thread; ``failing`` is the current reason, or None."""

    def __init__(self, procfs="/proc", on_change=None):
        """Checks nothing until configure() says what (the advertisement's configure() does, from the config)."""
        self.failing = None
        self.on_change = on_change
        self._procfs = procfs
        self._sshd = None
        self._sshd_reason = None
        self._command = ()
        self._command_seconds = 10.0
        self._command_reason = None
        self._command_due = 0.0
        self._command_unrunnable = False
        self._wake = threading.Event()
        self._stopped = False
        self._thread = None

    def configure(self, ssh_port, command, command_seconds):
        """New settings (start, SIGHUP); a command that cannot run is said here, at each.

        What did not change keeps its verdict and history: a reload is not a recovery.
        """
        if ssh_port != getattr(self._sshd, "port", 0) or not ssh_port:
            self._sshd = SshdWatch(ssh_port) if ssh_port else None
            self._sshd_reason = None
        command = tuple(command or ())
        if command != self._command:
            self._command = command
            self._command_reason = None
            self._command_due = 0.0
        self._command_seconds = command_seconds
        self._command_unrunnable = False
        problem = command_problem(self._command)
        if problem is not None:
            log.warning("%s; the check is skipped and never takes this server out by itself", problem)
            self._command_unrunnable = True
        self._wake.set()

    def start(self):
        self._thread = threading.Thread(target=self._run, name="health-checks", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopped = True
        self._wake.set()

    def check_once(self, now=None, settle=False):
        """Run whatever is due now (the thread's loop); returns the current reason.

        settle: one look is the verdict (--once has no second check to wait
        for): nothing listening counts as MISSES_TO_FAIL misses.
        """
        now = time.monotonic() if now is None else now
        if self._sshd is not None:
            try:
                queues = read_listening_queues(self._sshd.port, self._procfs)
            except OSError as error:
                log.warning("cannot read the listening sockets for the sshd check: %s", error)
            else:
                for _ in range(MISSES_TO_FAIL if settle and not queues else 1):
                    self._sshd_reason = self._sshd.observe(now, queues)
        if self._command and not self._command_unrunnable and now >= self._command_due:
            self._command_due = now + self._command_seconds
            try:
                self._command_reason = run_check(self._command, self._command_seconds)
            except CannotRun as error:
                log.warning("%s; the check is skipped until the next reload", error)
                self._command_unrunnable = True
                self._command_reason = None
        self._set(self._sshd_reason or self._command_reason)
        return self.failing

    def _set(self, reason):
        if reason == self.failing:
            return
        if reason is None:
            log.info("login service healthy again (was failing: %s)", self.failing)
        else:
            log.warning("login service failing, this server takes no new logins: %s", reason)
        self.failing = reason
        if self.on_change is not None:
            self.on_change()

    def _run(self):
        while not self._stopped:
            self._wake.clear()
            try:
                self.check_once()
            except Exception:  # a check must never end the checking
                log.exception("a health check failed unexpectedly; checking again later")
            pause = SSH_CHECK_SECONDS if self._sshd is not None else self._command_seconds
            if not self._command and self._sshd is None:
                pause = None  # nothing to check: sleep until a reload
            self._wake.wait(pause)
