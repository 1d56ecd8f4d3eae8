"""The one config mechanism of the services: a key table drives everything.

Rules (Radicale's Configuration is the model):

- A ``Schema`` is a table of ``Key`` rows (name, default, converter, help).
  It is the only place a key exists: the defaults, the validation, the
  shipped default file (``render_default_file``), the key list of ``--help``
  and the generated parts of the man pages all come from it. Each service
  (ltsp-server-advertise, ltsp-loadbalancer) has one table; a test checks
  that its shipped file is exactly what the table renders.
- Sources are layered, each with a name used in errors: the defaults, then
  the file (``path:line``), then the command line (``--listen`` ...), via
  ``override``.
- The file uses lts.conf's line syntax (``confsyntax``): ``KEY = VALUE``,
  ``#`` comments, ``"quoted values"``, keys in any case. Sections and
  includes are refused by name: silently ignoring a ``[section]`` would apply
  settings the admin meant for something else.
- A missing file means all defaults. Anything else wrong (not a regular
  file, too large, unreadable, not UTF-8, an unknown key, a key given twice,
  a bad value) is a ConfigError whose one-line message names the file, the
  line, the key and the value, e.g. ``/etc/ltsp/x.conf:3: invalid value for
  WEIGHT: 'abc' (expected a whole number >= 0)``.
- Converters take the value's text and return the Python value, or raise
  ValueError whose message says what was expected.
"""

import logging
import shlex
import textwrap
from collections import namedtuple

from ltsp_lbcore import confsyntax
from ltsp_lbcore.errors import ConfigError
from ltsp_lbcore.numbers import is_plain_decimal, is_plain_whole

log = logging.getLogger(__name__)

# A config file is a few KiB; anything far larger is a mistake (or /dev/zero).
MAX_CONFIG_BYTES = 1024 * 1024

Key = namedtuple("Key", "name default converter help")


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
        if not is_plain_whole(text) or int(text) < minimum or (maximum is not None and int(text) > maximum):
            raise ValueError(expected)
        return int(text)

    return convert


def seconds(minimum, maximum):
    def convert(text):
        expected = f"expected a number of seconds from {minimum:g} to {maximum:g}"
        if not is_plain_decimal(text) or not minimum <= float(text) <= maximum:
            raise ValueError(expected)
        return float(text)

    return convert


def networks(text):
    """Space-separated CIDR networks (or single addresses) -> tuple of ip_network."""
    import ipaddress

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
    import ipaddress

    expected = "expected host:port, [v6addr]:port or :port"
    host, colon, port = text.rpartition(":")
    if not colon or not is_plain_whole(port, max_digits=5) or int(port) > 65535:
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


def command_line(text):
    """A command line split as a POSIX shell would split it, but never run by one -> tuple of words.

    Empty means no command. Quotes group words; no expansion, no pipes.
    """
    try:
        return tuple(shlex.split(text, comments=False, posix=True))
    except ValueError as error:  # "No closing quotation"
        raise ValueError(f"expected a command line ({str(error).lower()})") from None


def user_name(text):
    if not text or any(c.isspace() or c == ":" for c in text):
        raise ValueError("expected a user name")
    return text


# A value is quoted whole in an error unless it is longer: a SERVERS line of a
# 1,000-server site is 20 KB, and one error line must stay one readable line.
MAX_SHOWN_CHARS = 200


def _shown(text, quote=True):
    shown = repr(text) if quote else text
    return shown if len(shown) <= MAX_SHOWN_CHARS else shown[: MAX_SHOWN_CHARS - 3] + "..."


# --- the schema ------------------------------------------------------------------


class Schema:
    """A service's key table, and reading, layering and rendering its config.

    ``Config`` is a namedtuple with one attribute per key, named like the key
    in lower case, plus ``path`` (the file it came from).
    """

    def __init__(self, keys, header, logger=log):
        self.keys = tuple(keys)
        self.by_name = {key.name: key for key in self.keys}
        self.header = header
        self.log = logger  # the service's own logger: its name is in every journal line
        self.Config = namedtuple("Config", [key.name.lower() for key in self.keys] + ["path"])

    def __iter__(self):
        return iter(self.keys)

    def defaults(self, path=None):
        """The Config with every key at its default (as if the file were empty)."""
        return self.Config(*(key.converter(key.default) for key in self.keys), path=path)

    def parse_text(self, text, path="<string>"):
        """The text of a config file -> Config. ConfigError names file, line, key, value."""
        try:
            tokens = confsyntax.parse_text(text, path)
        except confsyntax.ConfSyntaxError as error:
            raise ConfigError(str(error), path=path, lineno=error.lineno) from None
        values, set_on_line = {}, {}
        for lineno, token in tokens:
            name, value = self._assignment(token, path, lineno)
            if name in set_on_line:
                raise ConfigError(
                    f"{path}:{lineno}: {name} = {value!r} is set twice (first on line {set_on_line[name]})",
                    path,
                    lineno,
                    name,
                    value,
                )
            values[name] = self._convert(name, value, f"{path}:{lineno}", path, lineno)
            set_on_line[name] = lineno
        return self.defaults(path)._replace(**{name.lower(): value for name, value in values.items()})

    def _assignment(self, token, path, lineno):
        """(KEY, value text) of an assignment token; ConfigError for anything else or an unknown key."""
        where = f"{path}:{lineno}"
        if token[0] == confsyntax.SECTION:
            raise ConfigError(
                f"{where}: sections are not used in this file: [{token[1]}] (write KEY = VALUE lines only)",
                path,
                lineno,
            )
        if token[0] == confsyntax.INCLUDE:
            raise ConfigError(f"{where}: include is not supported in this file: {token[1]!r}", path, lineno)
        _kind, name, value = token
        if name not in self.by_name:
            known = ", ".join(self.by_name)
            raise ConfigError(
                f"{where}: unknown key {name} = {value!r} (known keys: {known})", path, lineno, name, value
            )
        return name, value

    def _convert(self, name, text, where, path=None, lineno=None):
        try:
            return self.by_name[name].converter(text)
        except ValueError as error:
            raise ConfigError(
                f"{where}: invalid value for {name}: {_shown(text)} ({_shown(str(error), quote=False)})",
                path,
                lineno,
                name,
                text,
            ) from None

    def load(self, path):
        """Read the config file at PATH -> Config; a missing file means defaults.

        Only a regular file is read, at most MAX_CONFIG_BYTES: a FIFO or a
        device (a link to /dev/zero) is a ConfigError, never a hang or a
        MemoryError, so a bad reload cannot stop a running service.
        """
        from ltsp_lbcore.files import UnusableFile, read_regular_file

        try:
            data = read_regular_file(path, MAX_CONFIG_BYTES)
        except FileNotFoundError:
            self.log.info("no config file %s: using the defaults", path)
            return self.defaults(path)
        except UnusableFile as error:
            raise ConfigError(f"cannot read the config file: {error}", path) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            lineno = data[: error.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{lineno}: the file is not UTF-8", path, lineno) from None
        return self.parse_text(text, path)

    def override(self, config, name, text, origin):
        """Config with key NAME set from TEXT given elsewhere (ORIGIN, e.g. '--listen')."""
        return config._replace(**{name.lower(): self._convert(name, text, origin)})

    def render_default_file(self):
        """The shipped default config file: every key, its help, commented at its default."""
        parts = [self.header]
        for key in self.keys:
            help_lines = textwrap.wrap(key.help, width=76)
            parts.append(
                "\n" + "".join(f"# {line}\n" for line in help_lines) + f"#{key.name} = {key.default}".rstrip() + "\n"
            )
        return "".join(parts)

    def render_key_list(self, width=78):
        """The keys, their defaults and help, as plain text (for --help)."""
        lines = []
        for key in self.keys:
            lines.append(f"  {key.name} = {key.default}")
            lines.extend(textwrap.wrap(key.help, width=width, initial_indent="      ", subsequent_indent="      "))
        return "\n".join(lines)
