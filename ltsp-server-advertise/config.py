"""The daemon's configuration: one schema table, and the file that sets it.

Rules:

- ``SCHEMA`` is the only place a key exists. Its rows (name, default,
  converter, help) drive the defaults, the validation, the shipped default
  file (``render_default_file``), the keys listed by ``--help`` and the docs.
  A test checks that the shipped ltsp-server-advertise.conf is exactly what
  the table renders, so the two cannot drift apart.
- The file uses lts.conf's line syntax (``get_hosts.confsyntax``): ``KEY =
  VALUE``, ``#`` comments, ``"quoted values"``, keys in any case. There are no
  sections and no includes here: both are refused by name, because silently
  ignoring a ``[section]`` would apply settings the admin meant for something
  else.
- A missing file means all defaults. Anything else wrong (an unreadable or
  non-UTF-8 file, an unknown key, a key given twice, a bad value) is a
  ConfigError whose message names the file, the line, the key and the value,
  e.g. ``/etc/ltsp/ltsp-server-advertise.conf:3: invalid value for WEIGHT:
  'abc' (expected a whole number >= 0)``.
- Converters take the value's text and return the Python value, or raise
  ValueError whose message says what was expected.

Running this module prints the default file: ``python -m
ltsp_server_advertise.config > ltsp-server-advertise/ltsp-server-advertise.conf``.
"""

from __future__ import annotations

import ipaddress
import logging
import textwrap
from collections import namedtuple

from get_hosts import confsyntax

from .errors import AdvertiseError
from .rating import DEFAULT_SESSION_CPU_MHZ, DEFAULT_SESSION_MEMORY_BYTES

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "/etc/ltsp/ltsp-server-advertise.conf"
DEFAULT_PORT = 377
MIB = 1024 * 1024


class ConfigError(AdvertiseError):
    """The config file (or a command-line override) cannot be used as written."""

    def __init__(self, message, path=None, lineno=None, key=None, value=None):
        super().__init__(message)
        self.path = path
        self.lineno = lineno
        self.key = key
        self.value = value


# --- converters: value text -> Python value, or ValueError("expected ...") ---


def choice(*allowed):
    def convert(text):
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return convert


def whole_number(minimum, maximum=None):
    expected = f"expected a whole number >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def convert(text):
        # Digits only, and not too many: int() would take '+1', ' 1', '1_0' and 10**5000.
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise ValueError(expected)
        if int(text) < minimum or (maximum is not None and int(text) > maximum):
            raise ValueError(expected)
        return int(text)

    return convert


def seconds(minimum, maximum):
    def convert(text):
        expected = f"expected a number of seconds from {minimum:g} to {maximum:g}"
        # float() alone would take 'nan', 'inf', '1e3' and '_': plain decimals only.
        if not (text.isascii() and text.replace(".", "", 1).isdigit()):
            raise ValueError(expected)
        value = float(text)
        if not minimum <= value <= maximum:
            raise ValueError(expected)
        return value

    return convert


def networks(text):
    """Space-separated CIDR networks (or single addresses) -> tuple of ip_network."""
    expected = "expected networks like 192.168.0.0/16 or 2001:db8::/32, separated by spaces"
    words = text.split()
    if not words:
        raise ValueError(expected)
    try:
        # strict=False: 192.168.1.5/24 means the network that address is in.
        return tuple(ipaddress.ip_network(word, strict=False) for word in words)
    except ValueError:
        raise ValueError(expected) from None


def listen_address(text):
    """One listen address -> (host, port); host '' means every address.

    ``host:port``, ``[v6addr]:port`` or ``:port``; a bare IPv6 address must be
    bracketed, since its colons would hide the port.
    """
    expected = "expected host:port, [v6addr]:port or :port"
    host, colon, port = text.rpartition(":")
    if not colon or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(expected)
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(expected)
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(expected) from None
    elif ":" in host or "[" in host or "]" in host or " " in host:
        raise ValueError(expected)
    return (host, int(port))


def listen_addresses(text):
    words = text.split()
    if not words:
        raise ValueError("expected at least one address: host:port, [v6addr]:port or :port")
    return tuple(listen_address(word) for word in words)


def user_name(text):
    if not text or any(c.isspace() or c == ":" for c in text):
        raise ValueError("expected a user name")
    return text


def format_listen_address(address):
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- the schema --------------------------------------------------------------

Key = namedtuple("Key", "name default converter help")

SCHEMA = (
    Key(
        "STATE",
        "ready",
        choice("ready", "drain", "maint"),
        "Whether this server takes new sessions: ready; drain (keep the running sessions, "
        "take no new ones: the rating becomes 0); or maint (under maintenance). "
        "Clients log in only to servers that are ready. Change it and send SIGHUP "
        "(systemctl reload ltsp-server-advertise) to drain a server before a reboot.",
    ),
    Key(
        "WEIGHT",
        "100",
        whole_number(0),
        "Relative capacity of this server next to the others in the pool: 50 next to 100 "
        "takes half the share. It scales the capacity the rating is computed from (docs/PROTOCOL.md); "
        "0 takes no new sessions.",
    ),
    Key(
        "SAMPLE_SECONDS",
        "1",
        seconds(0.1, 3600),
        "How long one sample of the statistics is reused, in seconds. A storm of logins "
        "costs one sample per this interval, not one per client; shorter is fresher "
        "(docs/placement.md: 1 s keeps a 10 s burst of 1,400 logins even). While nobody asks, "
        "the daemon samples once a minute and is otherwise idle.",
    ),
    Key(
        "MAX_CLIENTS",
        "1024",
        whole_number(1, 65536),
        "How many clients are served at once at most. A client normally takes a few "
        "microseconds (the document is written and the connection closed at once); only "
        "a client that does not take the document holds a place, until WRITE_TIMEOUT_SECONDS.",
    ),
    Key(
        "WRITE_TIMEOUT_SECONDS",
        "5",
        seconds(0.1, 300),
        "A client that has not taken the whole document after this many seconds is disconnected.",
    ),
    Key(
        "ALLOW",
        "0.0.0.0/0 ::/0",
        networks,
        "Client networks that may ask, separated by spaces (CIDR, e.g. 192.168.67.0/24 "
        "fd00::/8; a single address is a /32 or /128). Other clients have the "
        "connection closed without a document. The default lets everyone ask.",
    ),
    Key(
        "LISTEN",
        "[::]:377 0.0.0.0:377",
        listen_addresses,
        "Addresses to listen on, separated by spaces: host:port, [v6addr]:port, or :port "
        "for every address. --listen on the command line overrides this. A change needs "
        "a restart, not a reload: the daemon no longer has the privilege to bind port 377. "
        "Ignored under systemd socket activation (the .socket unit says where).",
    ),
    Key(
        "USER",
        "nobody",
        user_name,
        "When started as root: the user to become once the sockets are bound (its "
        "primary group too; supplementary groups are dropped). nobody owns no files and "
        "exists everywhere; a dedicated system user is better still if your packaging "
        "creates one. The systemd unit does not start as root (DynamicUser) and ignores it.",
    ),
    Key(
        "SESSION_CPU_MHZ",
        str(DEFAULT_SESSION_CPU_MHZ),
        whole_number(1, 1_000_000),
        "CPU one user session needs, in MHz: the rating's CPU budget per session (see docs/PROTOCOL.md).",
    ),
    Key(
        "SESSION_MEMORY_MB",
        str(DEFAULT_SESSION_MEMORY_BYTES // MIB),
        whole_number(1, 1_000_000),
        "Memory one user session needs, in MiB: the rating's memory budget per session.",
    ),
)
SCHEMA_BY_NAME = {key.name: key for key in SCHEMA}

# The values, one attribute per key, named like the key in lower case.
Config = namedtuple("Config", [key.name.lower() for key in SCHEMA] + ["path"])


def defaults(path=None):
    """The Config with every key at its default (as if the file were empty)."""
    return Config(*(key.converter(key.default) for key in SCHEMA), path=path)


def parse_text(text, path="<string>"):
    """The text of a config file -> Config. ConfigError names file, line, key, value."""
    try:
        tokens = confsyntax.parse_text(text, path)
    except confsyntax.ConfSyntaxError as error:
        raise ConfigError(str(error), path=path, lineno=error.lineno) from None
    values = {}
    set_on_line = {}
    for lineno, token in tokens:
        where = f"{path}:{lineno}"
        if token[0] == confsyntax.SECTION:
            raise ConfigError(
                f"{where}: sections are not used in this file: [{token[1]}] (write KEY = VALUE lines only)",
                path=path,
                lineno=lineno,
            )
        if token[0] == confsyntax.INCLUDE:
            raise ConfigError(f"{where}: include is not supported in this file: {token[1]!r}", path, lineno)
        _kind, name, value = token
        key = SCHEMA_BY_NAME.get(name)
        if key is None:
            known = ", ".join(k.name for k in SCHEMA)
            raise ConfigError(
                f"{where}: unknown key {name} = {value!r} (known keys: {known})", path, lineno, name, value
            )
        if name in set_on_line:
            raise ConfigError(
                f"{where}: {name} = {value!r} is set twice (first on line {set_on_line[name]})",
                path,
                lineno,
                name,
                value,
            )
        try:
            values[name] = key.converter(value)
        except ValueError as error:
            raise ConfigError(
                f"{where}: invalid value for {name}: {value!r} ({error})", path, lineno, name, value
            ) from None
        set_on_line[name] = lineno
    base = defaults(path)
    return base._replace(**{name.lower(): value for name, value in values.items()})


def load(path=DEFAULT_CONFIG_PATH):
    """Read the config file at path -> Config; a missing file means defaults."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        log.info("no config file %s: using the defaults", path)
        return defaults(path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror}", path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        lineno = data[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{lineno}: the file is not UTF-8", path, lineno) from None
    return parse_text(text, path)


def override(config, name, text, origin):
    """Config with key `name` set from text given elsewhere (origin, e.g. '--listen')."""
    key = SCHEMA_BY_NAME[name]
    try:
        value = key.converter(text)
    except ValueError as error:
        raise ConfigError(f"{origin}: invalid value for {name}: {text!r} ({error})", key=name, value=text) from None
    return config._replace(**{name.lower(): value})


# --- rendering: the default file and the docs ---------------------------------

_HEADER = """\
# ltsp-server-advertise configuration.
#
# KEY = VALUE lines, as in lts.conf; # starts a comment. Every key is shown
# below, commented out, at its default. After a change:
#     systemctl reload ltsp-server-advertise    (or send SIGHUP)
# A file with an error on reload is refused and the running settings stay;
# the log says which line.
#
# This file is generated from the schema in config.py:
#     python3 -m ltsp_server_advertise.config
"""


def render_default_file():
    """The shipped default config file: every key, its help, commented at its default."""
    parts = [_HEADER]
    for key in SCHEMA:
        help_lines = textwrap.wrap(key.help, width=76)
        parts.append("\n" + "".join(f"# {line}\n" for line in help_lines) + f"#{key.name} = {key.default}\n")
    return "".join(parts)


def render_key_list(width=78):
    """The keys, their defaults and help, as plain text (for --help)."""
    lines = []
    for key in SCHEMA:
        lines.append(f"  {key.name} = {key.default}")
        lines.extend(textwrap.wrap(key.help, width=width, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_default_file(), end="")
