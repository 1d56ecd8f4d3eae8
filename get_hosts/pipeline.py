"""The decision of one login, without printing: settings and probe results in, the order out.

get_hosts' CLI and ltsp-loadbalancer both decide through here, so a login
gets the same answer from the same figures whichever of them decides:

- ``select_algorithm(settings)``: the ordering function for the settings'
  LB_ALGORITHM; an unknown name falls back to the default with a warning
  (a login screen is never left without a host for a typo).
- ``mac_hash_key(settings)``: the client key mac-hash hashes on
  (``mac_hash_identity`` also gives the identity it came from, which a
  balancer is sent to hash on the same key).
- ``decide(settings, algorithm, results, rng, client_key)``: the Choice
  (order, verdicts, fallback) and the explanation lines ``--explain`` shows.

No I/O here apart from ``mac_hash_key``, which asks this machine for its
identity (only when the algorithm is mac-hash).
"""

from collections import namedtuple

from get_hosts import choose
from get_hosts.errors import GetHostsError

Decision = namedtuple("Decision", "choice explain")
Decision.__doc__ = """choice: choose.Choice (order best first, verdicts, fallback). explain: lines, no prefix."""


def select_algorithm(settings):
    """(settings, ordering function, warnings): an unknown LB_ALGORITHM becomes the default, with a warning.

    The warning names where the value came from (the environment, or
    file:line), like every other bad value's.
    """
    try:
        return settings, choose.get_algorithm(settings.algorithm), []
    except GetHostsError:
        from get_hosts.settings import DEFAULT_ALGORITHM

        source = (settings.sources or {}).get("LB_ALGORITHM")
        where = f"LB_ALGORITHM in {source}" if source else "LB_ALGORITHM"
        valid = ", ".join(sorted(choose.ALGORITHMS))
        warning = f"{where}: {settings.algorithm!r} is not an algorithm (valid: {valid}); using the default, "
        settings = settings._replace(algorithm=DEFAULT_ALGORITHM)
        return settings, choose.get_algorithm(DEFAULT_ALGORITHM), [warning + DEFAULT_ALGORITHM]


def summary_line(settings):
    return f"algorithm {settings.algorithm}, pool of {len(settings.servers)}, deadline {settings.timeout_ms} ms"


def mac_hash_key(settings):
    """(key, source, explain line): this client's MAC, else hostname, else IP."""
    return mac_hash_identity(settings)[1:]


def mac_hash_identity(settings):
    """(identity, key, source, explain line): mac_hash_key and the identity.Identity it came from."""
    from get_hosts.identity import client_identity

    identity = client_identity(settings.servers[0].host)
    if identity.mac:
        return identity, identity.mac, "mac", f"mac-hash key: MAC {identity.mac} of {identity.interface}"
    for source, value in (("hostname", identity.hostname), ("ip", identity.ip)):
        if value:
            return identity, value, source, f"mac-hash key: no MAC found, hashing on the {source} {value}"
    return identity, "", None, "mac-hash key: no MAC, hostname or IP found; every such client gets the same order"


def applied_here(settings):
    """--explain, when get_hosts decides itself: the algorithm and the limits it applies."""
    limits = [
        f"LB_MAX_LOAD {settings.max_load:g}" if settings.max_load is not None else None,
        f"LB_MAX_RESPONSE_MS {settings.max_response_ms}" if settings.max_response_ms is not None else None,
        "LB_SKIP_SWAPPING " + ("true" if settings.skip_swapping else "false"),
    ]
    return f"get_hosts applied {settings.algorithm}, " + ", ".join(limit for limit in limits if limit) + " itself"


def decide(settings, algorithm, results, rng, client_key=None):
    """Probe results (pool order) -> Decision. A no-probe algorithm keeps the pool as configured."""
    from get_hosts import report

    choice = choose.choose(results, settings, algorithm, rng, client_key)
    if settings.algorithm in choose.NO_PROBE:
        # A table of a no-probe algorithm: show the probe, keep the pool as configured.
        choice = choose.Choice(list(results), choice.verdicts, choice.fallback)
    return Decision(choice, report.explain_lines(choice, settings.algorithm))
