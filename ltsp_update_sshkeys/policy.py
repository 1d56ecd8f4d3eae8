"""Which keys each file gets for each extra server: scanned now, the cache's, or a chroot's own. No I/O.

A server that answered gets the keys ssh-keyscan fetched, everywhere. A
silent one keeps the keys the cache records for it; when the cache has none,
each chroot keeps what its own ssh_known_hosts has for it, for that chroot
only. The cache records scanned keys and its own keys of silent servers,
never a chroot's: one chroot's file must not plant keys anywhere else.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """keys: server -> the keys every file gets (scanned, else the cache's); silent: the servers that
    did not answer, in order; per_chroot: the silent ones the cache has no keys for."""

    keys: dict
    silent: tuple
    per_chroot: frozenset


def plan_keys(servers, scanned, cache):
    """The Plan for SERVERS given SCANNED (server -> keys fetched, empty when silent) and CACHE (name -> keys)."""
    keys, silent, per_chroot = {}, [], set()
    for server in servers:
        keys[server] = set(scanned.get(server) or ())
        if not keys[server]:
            silent.append(server)
            keys[server] = set(cache.get(server.known_hosts_name, ()))
            if not keys[server]:
                per_chroot.add(server)
    return Plan(keys, tuple(silent), frozenset(per_chroot))


def chroot_keys(plan, remembered):
    """(server -> keys for one chroot, server -> how many were kept from its file) given REMEMBERED,
    what that chroot's own ssh_known_hosts has (name -> keys; {} when it has no file)."""
    keys = dict(plan.keys)
    kept = {}
    for server in plan.per_chroot:
        keys[server] = set(remembered.get(server.known_hosts_name, ()))
        kept[server] = len(keys[server])
    return keys, kept


def cache_keys(plan):
    """What the cache records for the next run: every server that has keys in the plan (never a chroot's)."""
    return {server: keys for server, keys in plan.keys.items() if keys}


def silent_warning(plan, server, kept_by_chroot=None):
    """The warning for a server that did not answer; kept_by_chroot: chroot name -> keys kept from its file."""
    name = server.known_hosts_name
    if plan.keys[server]:
        return f"server {name} did not answer: kept its {len(plan.keys[server])} last known keys"
    kept = [f"{chroot} ({count})" for chroot, count in sorted((kept_by_chroot or {}).items()) if count]
    if kept:
        return (
            f"server {name} did not answer: not in the cache; kept the keys each chroot's own file had, "
            f"in {', '.join(kept)}"
        )
    return f"server {name} did not answer: no last known keys"
