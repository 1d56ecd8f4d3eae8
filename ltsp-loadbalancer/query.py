"""What one /v1/hosts request asks, read from its form fields: pure, no I/O.

Rules (SPEC.md: every setting means the same whichever path answers):

- ``servers`` and ``failed``: words, None when absent or blank.
- ``algorithm``, ``max_load``, ``max_response_ms``, ``skip_swapping``: the
  client's own settings (get_hosts sends those its lts.conf sets), read with
  get_hosts' own converters, so a text means the same on both paths. A
  field the request carries replaces the config's key of the same meaning
  (MAX_LOAD, MAX_RESPONSE_MS, SKIP_SWAPPING) for this answer; one it does
  not carry leaves the config's. An algorithm of pool.ORDERED_BY_REQUEST
  orders the answer; ``loadbalancer`` (or none) is the balancer's own
  least-full order; ``fixed`` and unknown names are not applied. A value
  that does not convert is not applied either.
- ``mac``, ``ip``, ``hostname``: the client's identity, used only as
  mac-hash's key, in get_hosts' order (MAC, else hostname, else IP; none
  of them: the connection's address). Never logged, never kept.
- ``peek`` (1, true, yes): a look at the answer that is not a login: it
  counts nothing (pool.Ask.peek).
- ``applied(query)``: what the answer applied of the request, for the
  ``X-LTSP-Applied`` header get_hosts' --explain reads: space-separated
  ``field=value`` words, always starting with ``algorithm=`` (``least-full``
  for the balancer's own order), ``key=`` (mac, hostname, ip or peer) for
  mac-hash, then each limit taken from the request.
"""

from __future__ import annotations

import contextlib
from collections import namedtuple

from get_hosts import settings as client_settings
from get_hosts.identity import normalize_mac

from .pool import NO_ASK, ORDERED_BY_REQUEST, Ask

OWN_ORDER = "least-full"
MAX_IDENTITY_CHARS = 253  # a host name's longest; longer text is no identity
TRUE_WORDS = frozenset({"1", "true", "yes", "y"})

# (field, Limits field, converter): get_hosts' converters for LB_MAX_LOAD, LB_MAX_RESPONSE_MS, LB_SKIP_SWAPPING.
LIMIT_FIELDS = (
    ("max_load", "max_load", client_settings.to_optional_load),
    ("max_response_ms", "max_response_ms", client_settings.to_optional_milliseconds),
    ("skip_swapping", "skip_swapping", client_settings.to_boolean),
)
# mac-hash's key, in get_hosts' order (pipeline.mac_hash_key).
KEY_FIELDS = ("mac", "hostname", "ip")

HostsQuery = namedtuple("HostsQuery", "servers failed ask overrides key_source")
HostsQuery.__doc__ = """servers, failed: words or None. ask: a pool.Ask (limits filled in by with_limits).
overrides: {Limits field: value} the request set. key_source: where mac-hash's key came from, or None."""


def _first(fields, name):
    values = fields.get(name)
    return values[0] if values else None


def _words(fields, name):
    text = " ".join(fields.get(name, ()))
    return text.split() if text.strip() else None


def _identity(fields, name):
    value = (_first(fields, name) or "").strip()
    if not value or len(value) > MAX_IDENTITY_CHARS or not value.isprintable():
        return None
    return normalize_mac(value) if name == "mac" else value


def from_fields(fields, peer=None):
    """FIELDS (name -> list of text, as urllib.parse.parse_qs gives them) of a request from PEER -> HostsQuery."""
    overrides = {}
    for field, limit, convert in LIMIT_FIELDS:
        text = _first(fields, field)
        if text is None:
            continue
        with contextlib.suppress(ValueError):  # not applied: the X-LTSP-Applied header leaves it out
            overrides[limit] = convert(text)
    algorithm = (_first(fields, "algorithm") or "").strip().lower()
    algorithm = algorithm if algorithm in ORDERED_BY_REQUEST else None
    client_key = key_source = None
    if algorithm == "mac-hash":
        for name in KEY_FIELDS:
            client_key = _identity(fields, name)
            if client_key:
                key_source = name
                break
        else:
            client_key, key_source = peer or "", "peer"
    peek = (_first(fields, "peek") or "").strip().lower() in TRUE_WORDS
    ask = NO_ASK if not (algorithm or peek) else Ask(None, algorithm, client_key, peek)
    return HostsQuery(_words(fields, "servers"), _words(fields, "failed"), ask, overrides, key_source)


def with_limits(query, config_limits):
    """QUERY's Ask with its limits: CONFIG_LIMITS with the request's overrides, or None (the config's) without any."""
    if not query.overrides:
        return query.ask
    return query.ask._replace(limits=config_limits._replace(**query.overrides))


def _shown(value):
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def applied(query):
    """The X-LTSP-Applied header's value: what this answer took from the request (see the rules)."""
    words = [f"algorithm={query.ask.algorithm or OWN_ORDER}"]
    if query.key_source:
        words.append(f"key={query.key_source}")
    for field, limit, _convert in LIMIT_FIELDS:
        if limit in query.overrides:
            words.append(f"{field}={_shown(query.overrides[limit])}")
    return " ".join(words)
