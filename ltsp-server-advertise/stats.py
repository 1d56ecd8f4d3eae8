"""Collecting this server's load: what the document on port 377 says.

Rules of this module:
- Collection only: no sockets, no config files, no serving. The daemon calls
  StatsCollector.collect() when its sample is too old, and server_stats() to
  turn the sample into the wire record.
- Nothing here sleeps, scans processes or asks the network: collect() reads
  a handful of small kernel files: about 0.2 ms, plus 3 us per logind session
  (0.8 ms with 200 sessions), measured on a 2-core VM.
- Honest edges, as psutil has them: a metric that cannot be read is None,
  never a made-up 0; it is logged ONCE (a warning naming the metric and the
  reason) when it starts failing and once (info) when it recovers; the other
  metrics are still collected. collect() never raises for a broken metric.
- Every /proc file is read through psutil.PROCFS_PATH, so tests (and
  containers) point the module at another /proc. (cpu_count comes from
  sysconf and, where the machine has cpufreq, psutil reads CPU speed from
  /sys: those two cannot be redirected.)
- No user name leaves this module: sessions are counted, never listed.

Sessions: the count must rise the moment a user logs in, because the load
average and memory lag a login storm by seconds. LDM logs a thin-client user
in over ssh (`ssh -X` running the session command); a command run without a
pty gets no utmp entry from sshd, so `who` can miss the very sessions we
serve. pam_systemd registers every PAM session with systemd-logind, pty or
not, the moment it opens. So the primary source is logind's state directory,
/run/systemd/sessions: one KEY=VALUE file per session, written by logind
before the login shell starts. We count files whose CLASS is a user class
("user", or in newer systemd "user-early", "user-light", "user-incomplete"
...: a human's session) and whose STATE is not "closing"
(a session that logged out but still has processes). That excludes greeters,
lock screens, background jobs (cron) and the user service manager's own
session. logind marks these files private; we read them anyway because the
public interfaces (sd-login via libsystemd, D-Bus) would add a C dependency
or a bus round trip to every sample, and CLASS and STATE have been written
there for many releases. Machines without logind (no such directory) fall back to utmp via
psutil.users(), counting distinct (user, terminal, host) entries; the log
says which source is in use.

Logins in progress count too, as RD Connection Broker's
ConnectionEstablishmentPenalty does: from the moment LDM's ssh connects until
the session's desktop is up takes 3-10 s, and in a login storm every client
choosing in that window would otherwise see the server as emptier than it
is. An LDM login holds one established TCP connection to sshd for its whole
life, so established connections to port 22 (/proc/net/tcp and tcp6, a
read of small kernel tables, no process scan) that logind does not yet know
as an sshd session are logins in progress: sessions = logind's user sessions
+ max(0, established sshd connections - logind's sshd sessions). An admin's
scp counts for its few seconds: overcounting lowers the rating, the safe way.
If /proc/net/tcp cannot be read, logins in progress count 0 (one warning).

Swapping: "swap used" stays high for days after a burst, so it says nothing
about now. We take the kernel's cumulative page-in and page-out counters
(/proc/vmstat pswpin/pswpout) at every collect() and report swapping when
the bytes moved since the previous sample, per second, exceed a threshold
(default 1 MiB/s). The collector reads the counters when it is built, so the
first collect() already has a rate once MIN_SWAP_WINDOW_SECONDS have passed.
A shorter interval cannot tell: one page moved in a microsecond is not
gigabytes per second. So until a window is that long, swapping is true only
if more moved than the threshold allows for a whole window (certainly
swapping), and otherwise the verdict of the last full window, which before
the first one is None (unknown: `--once` right after start says nothing
rather than a "false" it did not measure). The baseline moves only once a
full window has passed. The rate is an average over the window: a daemon
that samples only on demand after an idle hour averages over that hour, so
the daemon should sample on a timer for "now" to mean now. psutil.swap_memory() is not used
for the counters because it reports 0 when /proc/vmstat cannot be read,
which would look like "not swapping"; it also assumes 4 KiB pages, where we
use the machine's page size.

CPU speed: psutil.cpu_freq() maximum, else current (both the mean over CPUs,
so cpu_count * cpu_mhz is the machine's total), else the mean "cpu MHz" of
/proc/cpuinfo (VMs without cpufreq report only that). It is read once
and kept: the maximum is a hardware constant, and reading /proc/cpuinfo can
cost milliseconds on large machines (the kernel asks every CPU its clock).
Load averages come from /proc/loadavg (psutil.getloadavg() is os.getloadavg()
on Linux, which ignores PROCFS_PATH); uptime from psutil.boot_time().
"""

from __future__ import annotations

import logging
import math
import mmap
import os
import time

import psutil

from ltsp_lbcore import wire
from ltsp_lbcore.ports import SSH_PORT

from .rating import DEFAULT_SESSION_CPU_MHZ, DEFAULT_SESSION_MEMORY_BYTES, rate

log = logging.getLogger(__name__)

DEFAULT_SESSIONS_DIR = "/run/systemd/sessions"
# LDM logs in over ssh; its established connections are logins in progress.
DEFAULT_SWAP_RATE_THRESHOLD_BYTES_PER_S = 2**20
MIN_SWAP_WINDOW_SECONDS = 1.0
# Hostname of last resort: the wire format requires one, and it is only
# informational (clients name servers as their pool does).
FALLBACK_HOSTNAME = "localhost"

# The keys of collect()'s dict that the document carries.
METRIC_KEYS = (
    "hostname",
    "sessions",
    "cpu_count",
    "cpu_mhz",
    "load_1min",
    "load_5min",
    "load_15min",
    "mem_total_bytes",
    "mem_available_bytes",
    "swap_used_bytes",
    "swapping",
    "uptime_seconds",
)
# ...and those only the rating reads. closed_logins: connections sshd closed at
# once within the last minute (count_login_connections). They weigh as
# sessions in the rating for that minute, so a server whose sshd accepts and
# closes every login does not look empty to every thin client; the advertised
# sessions stay what they are, so a balancer never takes them for logins that
# became sessions.
LOCAL_KEYS = ("closed_logins",)
SAMPLE_KEYS = METRIC_KEYS + LOCAL_KEYS


def _procfs(name):
    # Looked up at each read, not at import, so PROCFS_PATH may change later.
    return os.path.join(psutil.PROCFS_PATH, name)


def _non_negative(name, value):
    if value is None or not 0 <= value < math.inf:  # also false for NaN
        raise ValueError(f"{name} is not a finite non-negative number (got {value!r})")
    return value


# --- sessions -----------------------------------------------------------------


def _session_kind(text):
    """logind session file text -> (open user session, opened by sshd)."""
    fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    # logind always writes CLASS; pam_systemd's default class is "user", so a
    # file without one is counted (overcounting lowers the rating, the safe way).
    session_class = fields.get("CLASS", "user")
    is_user = session_class == "user" or session_class.startswith("user-")
    is_open = is_user and fields.get("STATE") != "closing"
    return (is_open, is_open and fields.get("SERVICE") == "sshd")


def count_logind_sessions(sessions_dir, cache=None):
    """Open user sessions registered with systemd-logind in sessions_dir."""
    return logind_session_counts(sessions_dir, cache)[0]


def logind_session_counts(sessions_dir, cache=None):
    """(open user sessions, of which opened by sshd) registered with systemd-logind.

    cache: a dict the caller keeps between calls (the collector does): a file
    whose inode, mtime and size are unchanged is not read again. logind
    replaces a session file by renaming a new one over it, so any change
    gives a new inode. With hundreds of sessions this turns a read per
    session into a stat per session. FileNotFoundError when the directory
    does not exist (no logind here).
    """
    seen = {}
    with os.scandir(sessions_dir) as entries:
        for entry in entries:
            # logind keeps a FIFO "<id>.ref" beside each session file (opening
            # it would block) and writes updates to a hidden temporary file
            # that it renames over the old one (which would count twice).
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                status = entry.stat(follow_symlinks=False)
                key = (status.st_ino, status.st_mtime_ns, status.st_size)
                if cache is not None and cache.get(entry.name, (None,))[0] == key:
                    seen[entry.name] = cache[entry.name]
                    continue
                with open(entry.path, encoding="utf-8", errors="replace") as session_file:
                    text = session_file.read()
            except FileNotFoundError:
                continue  # the session closed between listing and reading
            seen[entry.name] = (key, _session_kind(text))
    if cache is not None:
        # Replaced, not merged: closed sessions leave the cache with their files.
        cache.clear()
        cache.update(seen)
    kinds = [kind for _key, kind in seen.values()]
    return (sum(is_open for is_open, _ssh in kinds), sum(is_ssh for _open, is_ssh in kinds))


TCP_ESTABLISHED, TCP_TIME_WAIT = "01", "06"  # the kernel's st column in /proc/net/tcp


def count_login_connections(local_port):
    """(established, closed) connections to local_port, IPv4 and IPv6 (/proc/net/tcp, tcp6).

    established: logins in progress, or sessions. closed: TIME_WAIT on this
    side, i.e. connections this server closed first within the kernel's 60 s:
    logins sshd ended at once. A missing tcp6 (no IPv6) counts 0; a missing
    tcp raises.
    """
    established = closed = 0
    suffix = f":{local_port:04X}"
    for name, required in (("net/tcp", True), ("net/tcp6", False)):
        try:
            with open(_procfs(name), encoding="ascii") as table:
                next(table, None)  # the header line
                for line in table:
                    fields = line.split(None, 4)
                    if len(fields) < 4 or not fields[1].endswith(suffix):
                        continue
                    if fields[3] == TCP_ESTABLISHED:
                        established += 1
                    elif fields[3] == TCP_TIME_WAIT:
                        closed += 1
        except FileNotFoundError:
            if required:
                raise
    return established, closed


def count_utmp_sessions(users):
    """Sessions in psutil.users() entries: distinct (user, terminal, host)."""
    return len({(user.name, user.terminal, user.host) for user in users})


def count_utmp_remote_sessions(users):
    """The utmp sessions that came over the network (a host is recorded): sshd's."""
    return len({(user.name, user.terminal, user.host) for user in users if user.host})


# --- kernel files read directly --------------------------------------------------


def read_loadavg():
    """(load_1min, load_5min, load_15min) from /proc/loadavg."""
    with open(_procfs("loadavg"), encoding="ascii") as loadavg_file:
        fields = loadavg_file.read().split()
    if len(fields) < 3:
        raise ValueError(f"expected 3 load averages in /proc/loadavg, got {len(fields)} fields")
    return tuple(_non_negative("load average", float(field)) for field in fields[:3])


def read_swap_moved_bytes():
    """Bytes paged in from and out to swap since boot (/proc/vmstat pswpin + pswpout)."""
    pages = {}
    with open(_procfs("vmstat"), "rb") as vmstat_file:
        for line in vmstat_file:
            if line.startswith((b"pswpin ", b"pswpout ")):
                name, value = line.split()
                pages[name] = int(value)
    if len(pages) != 2:
        raise ValueError("no pswpin and pswpout counters in /proc/vmstat")
    return (pages[b"pswpin"] + pages[b"pswpout"]) * mmap.PAGESIZE


def read_cpuinfo_mhz():
    """The mean "cpu MHz" of /proc/cpuinfo, as psutil.cpu_freq() averages its CPUs."""
    speeds_mhz = []
    with open(_procfs("cpuinfo"), "rb") as cpuinfo_file:
        for line in cpuinfo_file:
            if line.lower().startswith(b"cpu mhz"):
                speeds_mhz.append(float(line.partition(b":")[2]))
    speeds_mhz = [speed for speed in speeds_mhz if 0 < speed < math.inf]
    if not speeds_mhz:
        raise ValueError("psutil.cpu_freq() reports no speed and /proc/cpuinfo has no 'cpu MHz'")
    return sum(speeds_mhz) / len(speeds_mhz)


def read_cpu_mhz():
    """CPU speed in MHz: psutil.cpu_freq() max, else current, else /proc/cpuinfo."""
    try:
        frequency = psutil.cpu_freq()
    except Exception as error:  # psutil raises many types on odd sysfs trees
        log.debug("psutil.cpu_freq() failed, trying /proc/cpuinfo: %s", error)
        frequency = None
    if frequency is not None:
        for speed_mhz in (frequency.max, frequency.current):
            if speed_mhz is not None and 0 < speed_mhz < math.inf:
                return float(speed_mhz)
    return read_cpuinfo_mhz()


# --- the collector -----------------------------------------------------------------


class StatsCollector:
    """Reads this server's metrics; one instance lives as long as the daemon.

    sessions_dir: systemd-logind's session directory; None counts utmp only.
    use_utmp: fall back to utmp (psutil.users()) when sessions_dir is absent.
    ssh_port: sshd's port, whose established connections without a session
    are logins in progress; None counts none.
    swap_rate_threshold_bytes_per_s: paging faster than this is "swapping".
    clock: monotonic seconds, the time base of collect(now=...).
    """

    def __init__(
        self,
        *,
        sessions_dir=DEFAULT_SESSIONS_DIR,
        use_utmp=True,
        ssh_port=SSH_PORT,
        swap_rate_threshold_bytes_per_s=DEFAULT_SWAP_RATE_THRESHOLD_BYTES_PER_S,
        clock=time.monotonic,
    ):
        threshold = swap_rate_threshold_bytes_per_s
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < math.inf:
            raise ValueError(f"swap_rate_threshold_bytes_per_s is not a non-negative number (got {threshold!r})")
        self.sessions_dir = sessions_dir
        self.use_utmp = use_utmp
        self.ssh_port = ssh_port
        self.swap_rate_threshold_bytes_per_s = threshold
        self._clock = clock
        self._failing = set()  # names of the readers whose failure was logged
        self._sessions_source = None
        self._session_cache = {}  # see count_logind_sessions
        self._cpu_mhz = None
        # One table drives collection: (reader name, keys it fills, method).
        self._readers = (
            ("hostname", ("hostname",), self._read_hostname),
            ("sessions", ("sessions", "closed_logins"), self._read_sessions),
            ("cpu_count", ("cpu_count",), self._read_cpu_count),
            ("cpu_mhz", ("cpu_mhz",), self._read_cpu_mhz),
            ("load averages", ("load_1min", "load_5min", "load_15min"), self._read_load),
            ("memory", ("mem_total_bytes", "mem_available_bytes"), self._read_memory),
            ("swap_used_bytes", ("swap_used_bytes",), self._read_swap_used),
            ("swapping", ("swapping",), self._read_swapping),
            ("uptime_seconds", ("uptime_seconds",), self._read_uptime),
        )
        self._swapping = None  # the verdict of the last full swap window
        # The swap counters now, so the first collect() already has a rate.
        # A failure here is reported by that collect(), not twice.
        try:
            self._swap_base = (clock(), read_swap_moved_bytes())
        except Exception:
            self._swap_base = None

    def collect(self, now=None):
        """One sample: a dict with exactly SAMPLE_KEYS, None where unknown.

        now: monotonic seconds (default: the clock's now); used for the swap rate.
        """
        now = self._clock() if now is None else now
        metrics = {}
        for name, keys, reader in self._readers:
            try:
                values = reader(now)
            except Exception as error:
                # Any exception: psutil and the kernel files fail in many
                # ways, and one broken metric must not cost the whole answer.
                values = (None,) * len(keys)
                if name not in self._failing:
                    self._failing.add(name)
                    log.warning(
                        "cannot read %s (%s), leaving it out until it can be: %s: %s",
                        name,
                        ", ".join(keys),
                        type(error).__name__,
                        error,
                    )
            else:
                if name in self._failing:
                    self._failing.discard(name)
                    log.info("%s can be read again", name)
            metrics.update(zip(keys, values))
        return metrics

    def _read_hostname(self, _now):
        hostname = os.uname().nodename
        if not hostname or not hostname.isprintable() or " " in hostname or len(hostname) > 253:
            raise ValueError(f"host name {hostname!r} is empty, too long or has blanks")
        return (hostname,)

    def _read_sessions(self, _now):
        in_progress, closed = self._ssh_connections()
        if self.sessions_dir is not None:
            try:
                count, ssh_sessions = logind_session_counts(self.sessions_dir, self._session_cache)
            except FileNotFoundError:
                if not self.use_utmp:
                    raise
            else:
                self._note_sessions_source(f"systemd-logind ({self.sessions_dir})")
                return (count + max(0, in_progress - ssh_sessions), closed)
        users = psutil.users()
        self._note_sessions_source("utmp (no systemd-logind sessions directory)")
        return (count_utmp_sessions(users) + max(0, in_progress - count_utmp_remote_sessions(users)), closed)

    def _ssh_connections(self):
        """(established, closed at once) sshd connections (count_login_connections); (0, 0) if they cannot be counted.

        Established ones that are not (yet) sessions are logins in progress.
        """
        if self.ssh_port is None:
            return 0, 0
        try:
            counts = count_login_connections(self.ssh_port)
        except Exception as error:
            if "logins in progress" not in self._failing:
                self._failing.add("logins in progress")
                log.warning("cannot count ssh logins in progress, counting 0: %s: %s", type(error).__name__, error)
            return 0, 0
        if "logins in progress" in self._failing:
            self._failing.discard("logins in progress")
            log.info("ssh logins in progress can be counted again")
        return counts

    def _note_sessions_source(self, source):
        if source != self._sessions_source:
            self._sessions_source = source
            log.info("counting sessions from %s", source)

    def _read_cpu_count(self, _now):
        count = psutil.cpu_count(logical=True)
        if not count:
            raise ValueError(f"psutil.cpu_count() returned {count!r}")
        return (count,)

    def _read_cpu_mhz(self, _now):
        if self._cpu_mhz is None:
            self._cpu_mhz = read_cpu_mhz()
        return (self._cpu_mhz,)

    def _read_load(self, _now):
        return read_loadavg()

    def _read_memory(self, _now):
        memory = psutil.virtual_memory()
        if not memory.total > 0:
            raise ValueError(f"MemTotal is not positive (got {memory.total!r})")
        return (memory.total, _non_negative("MemAvailable", memory.available))

    def _read_swap_used(self, _now):
        return (_non_negative("swap used", psutil.swap_memory().used),)

    def _read_swapping(self, now):
        moved_bytes = read_swap_moved_bytes()
        base = self._swap_base
        if base is None or moved_bytes < base[1]:
            # No earlier sample, or the counters went back (wrapped): a rate
            # needs two samples, so this one only starts the window.
            self._swap_base = (now, moved_bytes)
            self._swapping = None
            return (None,)
        base_time, base_moved_bytes = base
        elapsed_seconds = now - base_time
        rate_bytes_per_s = (moved_bytes - base_moved_bytes) / max(elapsed_seconds, MIN_SWAP_WINDOW_SECONDS)
        swapping = rate_bytes_per_s > self.swap_rate_threshold_bytes_per_s
        if elapsed_seconds < MIN_SWAP_WINDOW_SECONDS:
            # Too short to say "not swapping"; keep the window open.
            return (True if swapping else self._swapping,)
        self._swap_base = (now, moved_bytes)
        self._swapping = swapping
        return (swapping,)

    def _read_uptime(self, _now):
        return (_non_negative("uptime", time.time() - psutil.boot_time()),)


def server_stats(
    metrics,
    *,
    state,
    weight,
    sample_age_ms,
    session_cpu_mhz=DEFAULT_SESSION_CPU_MHZ,
    session_memory_bytes=DEFAULT_SESSION_MEMORY_BYTES,
    failing=None,
):
    """A collect() dict plus the daemon's settings -> wire.ServerStats, rated.

    state, weight: the admin's STATE and WEIGHT. sample_age_ms: how old the
    metrics are. The budgets are the per-session ones of rating.rate().
    failing: the health checks' reason (health.py), or None; a failing
    server rates 0, so that even a client that predates <failing> ranks it last.
    """
    sessions = metrics.get("sessions")
    rated = rate(
        state=state,
        weight=weight,
        sessions=None if sessions is None else sessions + (metrics.get("closed_logins") or 0),
        cpu_count=metrics.get("cpu_count"),
        cpu_mhz=metrics.get("cpu_mhz"),
        load_1min=metrics.get("load_1min"),
        mem_total_bytes=metrics.get("mem_total_bytes"),
        mem_available_bytes=metrics.get("mem_available_bytes"),
        session_cpu_mhz=session_cpu_mhz,
        session_memory_bytes=session_memory_bytes,
    )
    optional = {key: metrics.get(key) for key in METRIC_KEYS if key != "hostname"}
    return wire.ServerStats(
        hostname=metrics.get("hostname") or FALLBACK_HOSTNAME,
        state=state,
        weight=weight,
        rating=0.0 if failing else rated.rating,
        failing=failing or None,
        capacity=rated.capacity,
        sample_age_ms=max(0, int(sample_age_ms)),
        **optional,
    )
