"""The rating: how many more sessions this server can take.

Rules of this module:
- One pure function, rate(), no I/O, no clock, no psutil: the same
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
from collections import namedtuple

from ltsp_lbcore.states import ADMIN_STATES, READY

# Per-session budgets (docs/PROTOCOL.md): a desktop session of a thin-client
# user needs about this much of one CPU and of RAM. The daemon's config
# overrides them; these defaults suit a school's office/browser desktop.
DEFAULT_SESSION_CPU_MHZ = 300
DEFAULT_SESSION_MEMORY_BYTES = 400 * 2**20


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


def _halves(metrics, session_cpu_mhz, session_memory_bytes):
    """The (capacity, used) pairs, in sessions, of the halves that can be known.

    METRICS: rate()'s metric arguments by name. A half is left out when its
    capacity (cpu_count or cpu_mhz, resp. mem_total_bytes) or its use
    (sessions and load_1min, resp. sessions and mem_available_bytes) is unknown.
    """
    sessions, cpu_count, cpu_mhz, load_1min = (metrics[k] for k in ("sessions", "cpu_count", "cpu_mhz", "load_1min"))
    mem_total_bytes, mem_available_bytes = metrics["mem_total_bytes"], metrics["mem_available_bytes"]
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


Rated = namedtuple("Rated", "rating capacity")
Rated.__doc__ = "rating: spare sessions, >= 0. capacity: sessions held in all, or None. Both WEIGHT applied."


def _check_arguments(state, weight, metrics, session_cpu_mhz, session_memory_bytes):
    """ValueError or TypeError naming the first bad argument and its value.

    Everything is checked, whatever the state, so a bad budget is reported
    even while draining, not only once the admin sets the server back to ready.
    """
    if state not in ADMIN_STATES:
        raise ValueError(f"state is not one of {', '.join(ADMIN_STATES)} (got {state!r})")
    _check_budget("session_cpu_mhz", session_cpu_mhz)
    _check_budget("session_memory_bytes", session_memory_bytes)
    for name, value in (("weight", weight), *metrics.items()):
        _check_metric(name, value)


def rate(
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
    """One server's Rated(rating, capacity), in sessions, WEIGHT applied.

    state: "ready", "drain" or "maint"; anything but "ready" rates 0.
    weight: the admin's relative capacity, 100 is normal: it scales what the
    hardware can hold (50: take half as many sessions as the CPU and memory
    would allow). sessions: user sessions open now (count). cpu_count: logical
    CPUs. cpu_mhz: CPU speed, MHz. load_1min: kernel 1-minute load average
    (not per CPU). mem_total_bytes, mem_available_bytes: the kernel's MemTotal
    and MemAvailable, bytes. Any metric may be None (unknown).
    session_cpu_mhz, session_memory_bytes: the per-session budgets.

        cpu_capacity = cpu_count * cpu_mhz / session_cpu_mhz * weight / 100
        cpu_used     = max(sessions, load_1min * cpu_mhz / session_cpu_mhz)
        mem_capacity = mem_total_bytes / session_memory_bytes * weight / 100
        mem_used     = max(sessions, (mem_total_bytes - mem_available_bytes) / session_memory_bytes)
        capacity     = min(cpu_capacity, mem_capacity)
        rating       = max(0, min(cpu_capacity - cpu_used, mem_capacity - mem_used))

    A half drops out of both min()s when its capacity is unknown (cpu_count
    or cpu_mhz, mem_total_bytes missing) or its use is (sessions missing and
    load_1min, resp. mem_available_bytes, missing too). Both gone: rating 0,
    capacity None. The rating is 0 unless state is "ready"; the capacity is
    what it is whatever the state. So rating <= capacity always, and
    1 - rating/capacity is how full the server is (clients compare servers of
    different sizes by it, docs/PROTOCOL.md).
    """
    metrics = dict(
        sessions=sessions,
        cpu_count=cpu_count,
        cpu_mhz=cpu_mhz,
        load_1min=load_1min,
        mem_total_bytes=mem_total_bytes,
        mem_available_bytes=mem_available_bytes,
    )
    _check_arguments(state, weight, metrics, session_cpu_mhz, session_memory_bytes)
    halves = _halves(metrics, session_cpu_mhz, session_memory_bytes)
    if not halves:
        return Rated(0.0, None)
    capacity = min(half_capacity for half_capacity, _used in halves) * weight / 100
    if state != READY:
        return Rated(0.0, capacity)
    spare = min(half_capacity * weight / 100 - used for half_capacity, used in halves)
    return Rated(max(0.0, spare), capacity)
