"""Retry elsewhere: a login that did not last sends the next one to another server.

LDM's screen script runs get_hosts again when ldm exits, and LDM exits when
its ssh login fails (a wrong password is asked again inside the same ldm).
So a run soon after the last one means the last login did not last. Rules:

- Each run that prints hosts remembers, in LB_STATE_DIR/get_hosts.last,
  when it ran, the host it put first, and the hosts that failed before it
  in the same chain of quick re-runs (at most MAX_CHAIN).
- A run within LB_RETRY_SECONDS of the last one puts the host chosen last
  time, and the earlier failures of the chain, last (the most recent
  failure at the very end): two broken servers cost a person at most two
  failed logins, never the same server twice. Nothing is removed: a login
  screen still gets every usable host.
- The file belongs to this client and lives on a tmpfs (/run/ltsp). It is
  read only when it is a regular file of our own, not a link, and small;
  anything else (a FIFO, garbage, someone else's) counts as no memory.
  Where it cannot be written, nothing is remembered: silently, never an
  error, never slower (no fsync, no retries).

``failed_hosts`` and ``demote`` are pure; ``read_state``/``write_state`` are
the file's edges. Imports os only.
"""

import os

STATE_FILE = "get_hosts.last"
MAX_STATE_BYTES = 4096
MAX_CHAIN = 8
MAX_HOST_CHARS = 255


def parse_state(text):
    """'TIME HOST [FAILED...]' -> (time, host, failed tuple), or None for anything else."""
    words = text.split()
    if len(words) < 2 or len(words) > MAX_CHAIN + 2:
        return None
    try:
        when = float(words[0])
    except ValueError:
        return None
    if when != when or any(len(word) > MAX_HOST_CHARS or not word.isprintable() for word in words[1:]):
        return None
    return when, words[1], tuple(words[2:])


def format_state(when, host, failed):
    return " ".join([f"{when:.3f}", host, *failed]) + "\n"


def failed_hosts(state, now, retry_seconds):
    """The hosts to put last, oldest failure first (most recent last), from the state read at NOW."""
    if state is None or retry_seconds <= 0:
        return ()
    when, host, failed = state
    if not 0 <= now - when <= retry_seconds:
        return ()
    chain = [name for name in failed if name != host]
    return (*chain, host)[-MAX_CHAIN:]


def demote(items, failed, host_of):
    """ITEMS with those whose host_of(item) is in FAILED moved to the end, in FAILED's order (a stable move)."""
    if not failed:
        return list(items)
    rank = {host: i for i, host in enumerate(failed)}
    kept = [item for item in items if host_of(item) not in rank]
    moved = sorted((item for item in items if host_of(item) in rank), key=lambda item: rank[host_of(item)])
    return kept + moved


def read_state(state_dir):
    """The state in STATE_DIR, or None when there is none we can trust."""
    path = os.path.join(state_dir, STATE_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        status = os.fstat(fd)
        # A regular file of our own: not a FIFO or device swapped in, not planted by another user.
        if not (status.st_mode & 0o170000 == 0o100000 and status.st_uid == os.getuid()):
            return None
        data = os.read(fd, MAX_STATE_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_STATE_BYTES:
        return None
    return parse_state(data.decode("utf-8", "replace"))


def write_state(state_dir, when, host, failed):
    """Remember this run; any failure means nothing is remembered, silently."""
    temporary = os.path.join(state_dir, f".{STATE_FILE}.{os.getpid()}")
    try:
        os.makedirs(state_dir, mode=0o755, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, format_state(when, host, failed).encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(temporary, os.path.join(state_dir, STATE_FILE))
    except (OSError, ValueError):
        try:  # noqa: SIM105 (contextlib is one more import at every login)
            os.unlink(temporary)
        except OSError:
            pass
