"""The rating: how many more sessions this server can take.

Rules of this module:
- One pure function, spare_sessions(), no I/O, no clock, no psutil: the same
  arguments always give the same rating, so tests are tables.
- It implements docs/PROTOCOL.md "The rating" exactly. A change here is a
  change of the protocol's meaning and must change that page too.
- Unknown is not zero: a metric given as None drops out; it is never read as
  "nothing used". A half (CPU or memory) whose capacity or use cannot be
  known drops out of the min(); with both halves gone the rating is 0,
  because a server that cannot say what it has left must not attract logins.
- Budgets and metrics are checked, and errors carry the bad value, as psutil
  does: `session_cpu_mhz is not positive (got -1)`.
"""

from __future__ import annotations

import math

# Per-session budgets (docs/PROTOCOL.md): a desktop session of a thin-client
# user needs about this much of one CPU and of RAM. The daemon's config
# overrides them; these defaults suit a school's office/browser desktop.
DEFAULT_SESSION_CPU_MHZ = 300
DEFAULT_SESSION_MEMORY_BYTES = 400 * 2**20

# The states of wire.STATES; only "ready" takes new sessions.
READY_STATE = "ready"
KNOWN_STATES = ("ready", "drain", "maint")


def _check_budget(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is not a number (got {value!r})")
    # `not value > 0` is also true for NaN.
    if not value > 0:
        raise ValueError(f"{name} is not positive (got {value!r})")
    if math.isinf(value):
        raise ValueError(f"{name} is not finite (got {value!r})")


def _check_metric(name, value):
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} is not a number (got {value!r})")
    if not 0 <= value < math.inf:  # also false for NaN
        raise ValueError(f"{name} is not a finite non-negative number (got {value!r})")


def _used(sessions, measured):
    """The larger of the session count and the measured use, ignoring unknowns.

    The session count is the floor because it does not lag a login; the
    measured figure catches load that is not sessions. None when neither is
    known: we cannot tell how much is used, so this half must drop out.
    """
    known = [value for value in (sessions, measured) if value is not None]
    return max(known) if known else None


def spare_sessions(
    *,
    state,
    weight,
    sessions,
    cpu_count,
    cpu_mhz,
    load_1min,
    mem_total_bytes,
    mem_available_bytes,
    session_cpu_mhz=DEFAULT_SESSION_CPU_MHZ,
    session_memory_bytes=DEFAULT_SESSION_MEMORY_BYTES,
):
    """Spare capacity in "sessions this server can still take", scaled by weight.

    state: "ready", "drain" or "maint"; anything but "ready" rates 0.
    weight: the admin's relative capacity, 100 is normal (50 halves the rating).
    sessions: user sessions open now (count). cpu_count: logical CPUs.
    cpu_mhz: CPU speed, MHz. load_1min: kernel 1-minute load average (not per
    CPU). mem_total_bytes, mem_available_bytes: the kernel's MemTotal and
    MemAvailable, bytes. Any metric may be None (unknown).
    session_cpu_mhz, session_memory_bytes: the per-session budgets.

    Returns a float >= 0:

        cpu_capacity = cpu_count * cpu_mhz / session_cpu_mhz
        cpu_used     = max(sessions, load_1min * cpu_mhz / session_cpu_mhz)
        mem_capacity = mem_total_bytes / session_memory_bytes
        mem_used     = max(sessions, (mem_total_bytes - mem_available_bytes) / session_memory_bytes)
        rating       = max(0, min(cpu_capacity - cpu_used, mem_capacity - mem_used)) * weight / 100

    A half drops out of the min() when its capacity is unknown (cpu_count or
    cpu_mhz, mem_total_bytes missing) or its use is (sessions missing and
    load_1min, resp. mem_available_bytes, missing too). Both gone: 0.
    """
    if state not in KNOWN_STATES:
        raise ValueError(f"state is not one of {', '.join(KNOWN_STATES)} (got {state!r})")
    _check_budget("session_cpu_mhz", session_cpu_mhz)
    _check_budget("session_memory_bytes", session_memory_bytes)
    _check_metric("weight", weight)
    metrics = {
        "sessions": sessions,
        "cpu_count": cpu_count,
        "cpu_mhz": cpu_mhz,
        "load_1min": load_1min,
        "mem_total_bytes": mem_total_bytes,
        "mem_available_bytes": mem_available_bytes,
    }
    for name, value in metrics.items():
        _check_metric(name, value)
    if state != READY_STATE:
        # Checked after validation so a bad budget is reported even while
        # draining, not only once the admin sets the server back to ready.
        return 0.0

    spares = []
    if cpu_count is not None and cpu_mhz is not None:
        cpu_capacity = cpu_count * cpu_mhz / session_cpu_mhz
        load_sessions = None if load_1min is None else load_1min * cpu_mhz / session_cpu_mhz
        cpu_used = _used(sessions, load_sessions)
        if cpu_used is not None:
            spares.append(cpu_capacity - cpu_used)
    if mem_total_bytes is not None:
        mem_capacity = mem_total_bytes / session_memory_bytes
        # MemAvailable above MemTotal would be a kernel bug; clamping keeps a
        # garbled figure from inventing capacity when sessions is unknown.
        used_bytes = None if mem_available_bytes is None else max(0, mem_total_bytes - mem_available_bytes)
        mem_used = _used(sessions, None if used_bytes is None else used_bytes / session_memory_bytes)
        if mem_used is not None:
            spares.append(mem_capacity - mem_used)
    if not spares:
        return 0.0
    return max(0.0, min(spares)) * weight / 100
