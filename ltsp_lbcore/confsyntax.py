"""Line syntax of lts.conf-style files, shared by lts.conf and the daemon's config.

Only how one line reads lives here (LTSP5 getltscfg rules); what sections
apply, includes and variable meanings belong to the readers. Rules:

- blank lines and lines starting with ``#`` are nothing;
- ``[name]`` starts a section;
- ``include "file"`` (or unquoted) names another file;
- ``KEY = VALUE``: keys are case-insensitive and returned upper case; an
  unquoted value ends at ``#`` and is trimmed; a ``"double quoted"`` value is
  taken as written, ``#`` included; after the closing quote only a comment
  may follow. There are no single quotes and no escapes.
"""

from ltsp_lbcore.oldpython import is_ascii


class ConfSyntaxError(ValueError):
    """A line that is not lts.conf syntax; the message names file and line."""

    def __init__(self, path, lineno, message):
        super().__init__(f"{path}:{lineno}: {message}")
        self.path = path
        self.lineno = lineno


SECTION = "section"
INCLUDE = "include"
ASSIGN = "assign"


def is_key(text):
    """True for a shell-style variable name: letters, digits, _, no leading digit."""
    return bool(text) and is_ascii(text) and text.replace("_", "a").isalnum() and not text[0].isdigit()


def _value(rest, path, lineno):
    """The value part of a line, after '=' or 'include', per the rules above."""
    rest = rest.strip()
    if not rest.startswith('"'):
        return rest.split("#", 1)[0].strip()
    end = rest.find('"', 1)
    if end < 0:
        raise ConfSyntaxError(path, lineno, f"unterminated quoted value {rest!r}")
    after = rest[end + 1 :].strip()
    if after and not after.startswith("#"):
        raise ConfSyntaxError(path, lineno, f"text after the closing quote: {after!r}")
    return rest[1:end]


def parse_line(line, path="<string>", lineno=0):
    """One line -> None, (SECTION, name), (INCLUDE, file) or (ASSIGN, KEY, value)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfSyntaxError(path, lineno, f"section header without ']': {text!r}")
        after = text[end + 1 :].strip()
        if after and not after.startswith("#"):
            raise ConfSyntaxError(path, lineno, f"text after section header: {after!r}")
        name = text[1:end].strip()
        if not name:
            raise ConfSyntaxError(path, lineno, "empty section name")
        return (SECTION, name)
    word = text.split(None, 1)[0]
    if word.lower() == "include" and "=" not in text:
        name = _value(text[len(word) :], path, lineno)
        if not name:
            raise ConfSyntaxError(path, lineno, "include without a file name")
        return (INCLUDE, name)
    key, equals, rest = text.partition("=")
    key = key.strip()
    if not equals:
        raise ConfSyntaxError(path, lineno, f"expected KEY = VALUE, got {text[:60]!r}")
    if not is_key(key):
        raise ConfSyntaxError(path, lineno, f"invalid key {key[:60]!r}")
    return (ASSIGN, key.upper(), _value(rest, path, lineno))


def parse_text(text, path="<string>"):
    """All lines of a file's text -> list of (lineno, token) for non-empty lines."""
    tokens = []
    for lineno, line in enumerate(text.splitlines(), 1):
        token = parse_line(line, path, lineno)
        if token is not None:
            tokens.append((lineno, token))
    return tokens
