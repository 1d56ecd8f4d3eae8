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


def _halves(
    *,
    sessions,
    cpu_count,
    cpu_mhz,
    load_1min,
    mem_total_bytes,
    mem_available_bytes,
    session_cpu_mhz,
    session_memory_bytes,
):
    """The (capacity, used) pairs, in sessions, of the halves that can be known.

    A half is left out when its capacity (cpu_count or cpu_mhz, resp.
    mem_total_bytes) or its use (sessions and load_1min, resp. sessions and
    mem_available_bytes) is unknown.
    """
    halves = []
    if cpu_count is not None and cpu_mhz is not None:
        load_sessions = None if load_1min is None else load_1min * cpu_mhz / session_cpu_mhz
        cpu_used = _used(sessions, load_sessions)
        if cpu_used is not None:
            halves.append((cpu_count * cpu_mhz / session_cpu_mhz, cpu_used))
    if mem_total_bytes is not None:
        # MemAvailable above MemTotal would be a kernel bug; clamping keeps a
        # garbled figure from inventing capacity when sessions is unknown.
        used_bytes = None if mem_available_bytes is None else max(0, mem_total_bytes - mem_available_bytes)
        mem_used = _used(sessions, None if used_bytes is None else used_bytes / session_memory_bytes)
        if mem_used is not None:
            halves.append((mem_total_bytes / session_memory_bytes, mem_used))
    return halves


def _checked_halves(arguments):
    """Validate everything (also while draining), then return (state, weight, halves)."""
    state, weight = arguments.pop("state"), arguments.pop("weight")
    if state not in KNOWN_STATES:
        raise ValueError(f"state is not one of {', '.join(KNOWN_STATES)} (got {state!r})")
    _check_budget("session_cpu_mhz", arguments["session_cpu_mhz"])
    _check_budget("session_memory_bytes", arguments["session_memory_bytes"])
    _check_metric("weight", weight)
    for name in ("sessions", "cpu_count", "cpu_mhz", "load_1min", "mem_total_bytes", "mem_available_bytes"):
        _check_metric(name, arguments[name])
    return state, weight, _halves(**arguments)


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
    """Spare capacity in "sessions this server can still take", WEIGHT applied.

    state: "ready", "drain" or "maint"; anything but "ready" rates 0.
    weight: the admin's relative capacity, 100 is normal: it scales what the
    hardware can hold (50: take half as many sessions as the CPU and memory
    would allow). sessions: user sessions open now (count). cpu_count: logical
    CPUs. cpu_mhz: CPU speed, MHz. load_1min: kernel 1-minute load average
    (not per CPU). mem_total_bytes, mem_available_bytes: the kernel's MemTotal
    and MemAvailable, bytes. Any metric may be None (unknown).
    session_cpu_mhz, session_memory_bytes: the per-session budgets.

    Returns a float >= 0:

        cpu_capacity = cpu_count * cpu_mhz / session_cpu_mhz
        cpu_used     = max(sessions, load_1min * cpu_mhz / session_cpu_mhz)
        mem_capacity = mem_total_bytes / session_memory_bytes
        mem_used     = max(sessions, (mem_total_bytes - mem_available_bytes) / session_memory_bytes)
        rating       = max(0, min(cpu_capacity * weight / 100 - cpu_used,
                                  mem_capacity * weight / 100 - mem_used))

    A half drops out of the min() when its capacity is unknown (cpu_count or
    cpu_mhz, mem_total_bytes missing) or its use is (sessions missing and
    load_1min, resp. mem_available_bytes, missing too). Both gone: 0.
    """
    state, weight, halves = _checked_halves(dict(locals()))
    # Checked after validation so a bad budget is reported even while
    # draining, not only once the admin sets the server back to ready.
    if state != READY_STATE or not halves:
        return 0.0
    return max(0.0, min(capacity * weight / 100 - used for capacity, used in halves))


def capacity_sessions(
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
    """Sessions this server can hold in all, WEIGHT applied, or None if unknown.

    The smaller capacity of the same halves spare_sessions() uses, times
    weight/100, whatever the state: so rating <= capacity always, and
    1 - rating/capacity is how full the server is. Clients use it to compare
    servers of different sizes (docs/PROTOCOL.md).
    """
    _state, weight, halves = _checked_halves(dict(locals()))
    if not halves:
        return None
    return min(capacity for capacity, _used in halves) * weight / 100
