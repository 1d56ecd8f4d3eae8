"""lts.conf as LTSP reads it: which sections apply to this client, and what they say.

Line syntax lives in confsyntax; this module owns files, includes and
sections. Rules (LTSP5 getltscfg, see FIELD-NOTES.md):

- Sections that apply, most specific first: the first section named exactly
  by this client's hostname (or, for a dotted hostname, its first label),
  else its IP, else its MAC (names compared without regard to case); then that section's ``LIKE =`` target, and its
  target, recursively; then every glob section (``*``, ``?``, ``[``) whose
  pattern matches one of those names, in file order, each followed by
  its own LIKE chain; ``[Default]`` (and its LIKE chain) last. For each key
  the first section in that order that sets it wins; a section reached twice
  counts once, at its first place.
- A winning value of ``NONE`` unsets the key: it is left out of the result
  and no less specific section fills it in. ``LIKE`` itself is not a value.
- A section named twice is one section; within it the later line wins.
- ``include "file"``: relative names are taken from the including file's
  directory. The included file's lines belong to the section the include
  stands in until the file opens its own; after the include the including
  file's section continues (an include never changes what follows it).
  A missing or unusable lts.conf itself (not a regular file, larger than
  MAX_FILE_BYTES, unreadable), an include loop, a LIKE loop and a LIKE
  naming no section are errors: LtsConfError, one line, naming file, line
  and the bad value. The caller then falls back to the environment.
- What spoils one line or one include spoils only that: a line that is not
  lts.conf syntax (in any client's section), an include that cannot be
  read (a FIFO, /dev/zero, a missing file) is a warning and is skipped; a
  key before any section header is read as [Default]'s, with a warning; a
  UTF-8 byte order mark is ignored. A login screen must not lose the pool
  that [Default] names because of another client's typo.
- Files are read only when they are regular files, at most MAX_FILE_BYTES,
  never blocking (ltsp_lbcore.files): a FIFO or a device is refused at once.
- An empty section is a warning, not an error (getltscfg refused them): a
  host section whose lines an admin commented out must not stop a whole lab
  from logging in. Warnings go to LtsConf.warnings.

Nothing here imports more than ``os``: glob names are matched by
glob_match, not fnmatch, which would import ``re``.
"""

import os
from collections import namedtuple

from get_hosts.errors import GetHostsError
from ltsp_lbcore.confsyntax import ASSIGN, INCLUDE, SECTION, ConfSyntaxError

# One assignment, kept with where it came from so errors can name file:line.
Entry = namedtuple("Entry", "value path lineno")

# A section: its name as first written, where that was, and KEY -> Entry.
Section = namedtuple("Section", "name path lineno entries")

DEFAULT = "default"
GLOB_CHARS = "*?["
MAX_FILES = 64  # include fan-out cap: a file included many times over is a mistake
MAX_FILE_BYTES = 1024 * 1024  # a real lts.conf is a few KiB
BOM = "\ufeff"


class LtsConfError(GetHostsError):
    """lts.conf cannot be read or makes no sense; the message names file and line."""

    def __init__(self, message, path=None, lineno=None):
        super().__init__(message)
        self.path = path
        self.lineno = lineno


class LtsConf:
    """A parsed lts.conf: sections by lower-case name, in file order."""

    def __init__(self, path):
        self.path = path
        self.sections = {}  # lower-case name -> Section; dicts keep file order
        self.warnings = []  # lines and includes skipped, keys read as [Default]'s

    def has_client_sections(self):
        """True when some section other than [Default] exists (so identity matters)."""
        return any(key != DEFAULT for key in self.sections)

    def default_value(self, key):
        """KEY's value in [Default] alone, or None: for choosing how to find the identity."""
        section = self.sections.get(DEFAULT)
        entry = section.entries.get(key) if section else None
        return entry.value if entry else None


def _where(path, lineno):
    return f"{path}:{lineno}" if lineno else str(path)


def read_text(path, include_from=None):
    """The text of PATH; LtsConfError (naming the include when it is one) when it cannot be used."""
    from ltsp_lbcore.files import read_regular_file

    try:
        data = read_regular_file(path, MAX_FILE_BYTES)
    except OSError as error:
        reason = getattr(error, "reason", None) or error.strerror or str(error)
        if include_from:
            src, lineno, name = include_from
            raise LtsConfError(f"{_where(src, lineno)}: cannot include {name!r}: {reason}", src, lineno) from None
        raise LtsConfError(f"{path}: cannot read: {reason}", path) from None
    # surrogateescape: a stray Latin-1 byte in some other variable must not stop us.
    text = data.decode("utf-8", "surrogateescape")
    return text[1:] if text.startswith(BOM) else text


def _tokens(text, path, warnings):
    """(lineno, token) of every line that parses; each one that does not is a warning.

    A broken section header also takes the lines under it, up to the next
    good header: which section they belong to is unknown, and read as part
    of the section above they would apply to the wrong clients.
    """
    from ltsp_lbcore.confsyntax import parse_line

    tokens = []
    orphaned = False
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            token = parse_line(line, path, lineno)
        except ConfSyntaxError as error:
            header = line.lstrip().startswith("[")
            orphaned = orphaned or header
            under = ", and the lines under it up to the next section" if header else ""
            warnings.append(f"{error} (line skipped{under})")
            continue
        if token is None:
            continue
        if token[0] == SECTION:
            orphaned = False
        elif orphaned:
            continue
        tokens.append((lineno, token))
    return tokens


def parse_lts_conf(path, text=None):
    """Read PATH (TEXT, when the caller has read it already) and its includes -> LtsConf. Raises LtsConfError."""
    conf = LtsConf(path)
    state = {"files": 0}
    _parse_file(conf, path, None, [], state, None, text)
    return conf


def _parse_file(conf, path, current, stack, state, include_from, text=None):
    """Add PATH's sections to CONF; CURRENT is the section the include stands in."""
    real = os.path.realpath(path)
    if real in stack:
        src, lineno, name = include_from
        chain = " -> ".join([*stack[stack.index(real) :], real])
        raise LtsConfError(f"{_where(src, lineno)}: include loop on {name!r}: {chain}", src, lineno)
    state["files"] += 1
    if state["files"] > MAX_FILES:
        src, lineno, name = include_from
        raise LtsConfError(f"{_where(src, lineno)}: more than {MAX_FILES} files included, at {name!r}", src, lineno)
    if text is None:
        text = read_text(path, include_from)
    stack = [*stack, real]
    for lineno, token in _tokens(text, path, conf.warnings):
        kind = token[0]
        if kind == SECTION:
            current = _open_section(conf, token[1], path, lineno)
        elif kind == INCLUDE:
            _include(conf, token[1], path, lineno, current, stack, state)
        elif kind == ASSIGN:
            if current is None:
                conf.warnings.append(
                    f"{path}:{lineno}: {token[1]} = {token[2]!r} is outside any section: read as [Default]'s"
                )
                current = _open_section(conf, "Default", path, lineno)
            current.entries[token[1]] = Entry(token[2], path, lineno)


def _include(conf, name, path, lineno, current, stack, state):
    """Read an included file into CONF; one that cannot be read is a warning, a loop an error."""
    target = os.path.join(os.path.dirname(path), name)
    try:
        _parse_file(conf, target, current, stack, state, (path, lineno, name))
    except LtsConfError as error:
        if "include loop" in str(error) or "files included" in str(error):
            raise
        conf.warnings.append(f"{error} (include skipped)")


def _open_section(conf, name, path, lineno):
    key = name.lower()
    section = conf.sections.get(key)
    if section is None:
        section = conf.sections[key] = Section(name, path, lineno, {})
    return section


def empty_section_warnings(conf):
    """One warning per section that sets nothing."""
    return [
        f"{_where(s.path, s.lineno)}: empty section [{s.name}] (ignored)"
        for s in conf.sections.values()
        if not s.entries
    ]


def _client_names(identity):
    """Lower-case names this client answers to, in exact-match order: hostname, IP, MAC."""
    if identity is None:
        return []
    names = []
    hostname = getattr(identity, "hostname", None)
    if hostname:
        names.append(hostname.lower())
        short = hostname.split(".", 1)[0]
        if short != hostname:
            names.append(short.lower())
    for value in (getattr(identity, "ip", None), getattr(identity, "mac", None)):
        if value:
            names.append(value.lower())
    return names


def _like_chain(conf, section, order, seen):
    """Append SECTION then its LIKE targets to ORDER; a loop or unknown target is an error."""
    chain = [section.name.lower()]
    while True:
        if chain[-1] not in seen:
            seen.add(chain[-1])
            order.append(section)
        like = section.entries.get("LIKE")
        if like is None or like.value in ("", "NONE"):
            return
        where = _where(like.path, like.lineno)
        target = conf.sections.get(like.value.lower())
        if target is None:
            raise LtsConfError(f"{where}: LIKE = {like.value!r} names no section", like.path, like.lineno)
        key = like.value.lower()
        if key in chain:
            names = " -> ".join(conf.sections[k].name for k in [*chain[chain.index(key) :], key])
            raise LtsConfError(f"{where}: LIKE loop: {names}", like.path, like.lineno)
        chain.append(key)
        section = target


def glob_match(name, pattern):
    """fnmatchcase for section names: '*' any run, '?' one character, all else literal.

    A section header ends at its first ']', so a '[...]' class cannot be
    written and '[' is literal, as fnmatch treats an unclosed one. Written
    here so that a glob section does not cost the import of re.
    """
    n = p = 0
    star = mark = -1
    while n < len(name):
        if p < len(pattern) and pattern[p] in ("?", name[n]) and pattern[p] != "*":
            n += 1
            p += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, n
            p += 1
        elif star >= 0:  # let the last '*' take one more character
            mark += 1
            n, p = mark, star + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def applying_sections(conf, identity):
    """The sections that apply to IDENTITY, most specific first (see module rules)."""
    order, seen = [], set()
    names = _client_names(identity)
    globs = [s for key, s in conf.sections.items() if any(c in key for c in GLOB_CHARS)]
    for name in names:
        section = conf.sections.get(name)
        if section is not None:
            _like_chain(conf, section, order, seen)
            break
    for section in globs if names else ():
        pattern = section.name.lower()
        if any(glob_match(name, pattern) for name in names):
            _like_chain(conf, section, order, seen)
    default = conf.sections.get(DEFAULT)
    if default is not None:
        _like_chain(conf, default, order, seen)
    return order


def lts_conf_entries(conf, identity):
    """KEY -> Entry for the client IDENTITY (Identity, or None: [Default] only); NONE removed."""
    result = {}
    decided = set()
    for section in applying_sections(conf, identity):
        for key, entry in section.entries.items():
            if key in decided or key == "LIKE":
                continue
            decided.add(key)
            if entry.value != "NONE":
                result[key] = entry
    return result


def read_lts_conf(path, identity, warnings=None):
    """lts.conf at PATH as it applies to IDENTITY -> {KEY: value}.

    IDENTITY is an identity.Identity (hostname, ip, mac) or None (only
    [Default] applies). Warnings (empty sections) are appended to WARNINGS
    when a list is given. Raises LtsConfError, also for a missing file.
    """
    conf = parse_lts_conf(path)
    if warnings is not None:
        warnings.extend(conf.warnings + empty_section_warnings(conf))
    return {key: entry.value for key, entry in lts_conf_entries(conf, identity).items()}
