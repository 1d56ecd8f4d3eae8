"""Hosts and host:port words: the one parser and validator every component uses.

get_hosts' pool, the daemon's and the balancer's config, ltsp-update-sshkeys'
extraservers file and command line all go through here, so a word that one
of them accepts means the same server to all of them, and nothing that is
not a host ever reaches a known_hosts file, a command line or a log line.

Rules:

- A host is exactly one of
  - a host name: ASCII letters, digits, ``-``, ``_`` and ``.``; at most 253
    characters; labels neither empty nor starting with ``-`` (one trailing
    dot is allowed: ``ltsp1.example.org.``); any case. A name whose last
    label is all digits must be an IPv4 address (``127.1`` and
    ``010.0.0.1`` are refused: the C library would read them as
    127.0.0.1 and 8.0.0.1);
  - an IPv4 address: four decimal numbers 0-255 without leading zeros;
  - an IPv6 address as inet_pton(3) reads it (hex digits, ``:`` and ``.``),
    optionally with ``%zone``, the zone a plain interface name: ASCII
    letters, digits, ``_``, ``-`` and ``.``, 1 to 15 characters (IFNAMSIZ-1).
  Nothing else: no spaces, commas, ``*``, ``?``, control bytes, NUL or
  non-ASCII character, so a host is safe in known_hosts (where ``,`` splits
  names and ``*``/``?`` are patterns), on a command line and on a terminal.
- A word is ``host``, ``host:port``, ``[v6addr]``, ``[v6addr]:port`` or a
  bare IPv6 address (which has no port: ``fd00::5``).
- A port is ASCII decimal digits, 1-65535 (leading zeros allowed). No sign,
  space, underscore or other script's digits: ``int()`` would take them.
- Errors are ValueError whose message says what is wrong, on one line: any
  part of the value it quotes is repr()'d and cut at 40 characters. The
  caller adds where the word came from and the whole value.
- Hosts are returned as written (case kept); canonical_host() and
  host_key() give one spelling per server for comparing and for files.

Cheap to import (the thin client imports it at every login): collections
only; socket is imported when an IPv6 address is checked.
"""

from collections import namedtuple

from ltsp_lbcore.oldpython import is_ascii

HostPort = namedtuple("HostPort", "host port")
HostPort.__doc__ = "A server: host (no brackets, case as written) and port (int, or the caller's default)."

MAX_NAME_LENGTH = 253
MAX_ZONE_LENGTH = 15  # IFNAMSIZ - 1
MAX_QUOTED = 40

_LETTERS_DIGITS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
NAME_CHARS = frozenset(_LETTERS_DIGITS + "-_.")
ZONE_CHARS = frozenset(_LETTERS_DIGITS + "_-.")
IPV6_CHARS = frozenset("0123456789abcdefABCDEF:.")
DIGITS = frozenset("0123456789")


def _quote(text):
    """repr(text), cut: a reason stays one short line whatever the value holds."""
    if len(text) > MAX_QUOTED:
        return repr(text[:MAX_QUOTED]) + "..."
    return repr(text)


def _first_outside(text, allowed):
    for char in text:
        if char not in allowed:
            return char
    return None


def _ipv4_problem(host):
    parts = host.split(".")
    if len(parts) == 4 and all(
        part and len(part) <= 3 and set(part) <= DIGITS and (part == "0" or part[0] != "0") and int(part) <= 255
        for part in parts
    ):
        return None
    return "not an IPv4 address (four numbers 0-255, no leading zeros) nor a host name (its last label is all digits)"


def _name_problem(host):
    """Why HOST is not a host name or an IPv4 address, or None."""
    if not host:
        return "no host"
    bad = _first_outside(host, NAME_CHARS)
    if bad is not None:
        return f"{bad!r} is not allowed in a host name"
    if host[0] in "-.":
        return "a host name cannot start with '-' or '.'"
    if len(host) > MAX_NAME_LENGTH:
        return f"host name longer than {MAX_NAME_LENGTH} characters"
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    for label in labels:
        if not label:
            return "empty label in a host name ('..')"
        if label[0] == "-":
            return f"a label of a host name cannot start with '-' ({_quote(label)})"
    if set(labels[-1]) <= DIGITS:
        return _ipv4_problem(host)
    return None


def _zone_problem(zone):
    if not zone:
        return "bad IPv6 zone: empty after '%'"
    bad = _first_outside(zone, ZONE_CHARS)
    if bad is not None:
        return f"bad IPv6 zone {_quote(zone)}: {bad!r} is not allowed (an interface name: letters, digits, _ - .)"
    if len(zone) > MAX_ZONE_LENGTH:
        return f"bad IPv6 zone {_quote(zone)}: longer than {MAX_ZONE_LENGTH} characters"
    return None


def _ipv6_problem(address):
    """Why ADDRESS (optionally with %zone) is not an IPv6 address, or None."""
    bare, percent, zone = address.partition("%")
    if percent:
        problem = _zone_problem(zone)
        if problem is not None:
            return problem
    bad = _first_outside(bare, IPV6_CHARS)
    if bad is not None:
        return f"not an IPv6 address ({bad!r} is not allowed)"
    import socket

    try:
        socket.inet_pton(socket.AF_INET6, bare)
    except (OSError, ValueError):
        return "not an IPv6 address"
    return None


def host_problem(host):
    """Why HOST (no brackets, no port) is not a host name, IPv4 or IPv6 address; None when it is one."""
    if ":" in host:
        return _ipv6_problem(host)
    return _name_problem(host)


def port_problem(text):
    """Why TEXT is not a port (ASCII digits, 1-65535), or None."""
    if not (is_ascii(text) and text.isdigit()):
        return f"port {_quote(text)} is not a number"
    significant = text.lstrip("0") or "0"
    if len(significant) > 5:  # int() of thousands of digits is slow, and refused past 4300
        return f"port {_quote(text)} is out of range (1-65535)"
    if not 1 <= int(significant) <= 65535:
        return f"port {int(significant)} is out of range (1-65535)"
    return None


def parse_port(text):
    """TEXT as a port number; ValueError saying why it is not one."""
    problem = port_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return int(text.lstrip("0"))


def parse_host_port(word, default_port=None):
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address -> HostPort.

    The port is default_port when the word has none. Raises ValueError
    whose message says what is wrong (see the module rules).
    """
    port_text = None
    if word.startswith("["):
        close = word.find("]")
        if close < 0:
            raise ValueError("'[' without ']'")
        host, after = word[1:close], word[close + 1 :]
        if not host:
            raise ValueError("empty brackets")
        if after:
            if not after.startswith(":"):
                raise ValueError(f"{_quote(after)} after ']'")
            port_text = after[1:]
        problem = _ipv6_problem(host) if ":" in host else "brackets are for IPv6 addresses"
    elif word.count(":") > 1:
        host = word
        problem = _ipv6_problem(host)
        if problem is not None and problem.startswith("not an IPv6 address"):
            problem += "; an IPv6 address with a port is written [address]:port"
    else:
        host, colon, rest = word.partition(":")
        port_text = rest if colon else None
        problem = _name_problem(host)
    if problem is not None:
        raise ValueError(problem)
    if port_text is None:
        return HostPort(host, default_port)
    return HostPort(host, parse_port(port_text))


def format_host_port(host, port=None, default_port=None):
    """The word for host and port: ``host:port``, ``[v6]:port`` for IPv6.

    The host alone when PORT is None or DEFAULT_PORT (a pool's word for a server on the usual port).
    The one formatter: config words, log lines, labels and the status page all write servers with it.
    """
    if port is None or port == default_port:
        return host
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def canonical_host(host):
    """One spelling per server: names lower-cased, IPv6 as inet_ntop(3) writes it (zone kept).

    ValueError (the reason) when host is not a host.
    """
    problem = host_problem(host)
    if problem is not None:
        raise ValueError(problem)
    if ":" not in host:
        return host.lower()
    import socket

    bare, percent, zone = host.partition("%")
    return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, bare)) + percent + zone


def host_key(host):
    """Equal for the same server written two ways (case of names, spellings of one IPv6 address).

    A dict key; today canonical_host's text. ValueError when host is not a host.
    """
    return canonical_host(host)
