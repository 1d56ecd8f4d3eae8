"""ltsp.conf as LTSP 20+ reads it: which sections run on this client, and what they set.

LTSP 20+ never parses /etc/ltsp/ltsp.conf itself: ``ini2sh`` (an awk script in
/usr/share/ltsp/common/ltsp/55-config.sh) turns it into shell, and the shell
runs that. This module takes the same two steps, on the file's text (no I/O);
tests/test_ltspconf.py runs LTSP's own code on the same files and compares.

Step 1, ini2sh, line by line, as the awk script does:

- A line that starts (after spaces; a tab does not count) with ``[`` and holds
  a ``]`` opens a section. Its name is the whole line lower-cased (ASCII), cut
  at the first ``#``, keeping only ``a-z 0-9 - * . / : ? @ _ |``: spaces,
  quotes and brackets vanish, so ``[pc[0-9]]`` is the section ``pc0-9`` and a
  ``[...]`` class cannot be written.
- Each section is a shell function, ``section_`` + its name with every other
  character than ``a-z 0-9`` made ``_``. Two sections that make the same
  function (``[a:b]`` and ``[a.b]``, or one name twice) are one function with
  the LAST one's lines (the shell redefines it); each keeps its own place in
  the match order. Lines before the first section are the section ``unnamed``.
- ``INCLUDE=name`` at the very start of a line (any case, spaces around ``=``)
  becomes ``section_call name``, the name cleaned like a section name.
  Indented, it is an ordinary variable called INCLUDE (a warning says so).
- ``KEY = value`` at the very start of a line (KEY of ``A-Za-z0-9_``): the
  spaces around the first ``=`` are removed. Every other line is shell as is.

Step 2, the shell, as LTSP's eval_ini runs it on a client:

- ``section_call unnamed clients common "$MAC_ADDRESS" "$IP_ADDRESS"``, then
  ``section_call "$HOSTNAME"`` with HOSTNAME as the first call left it (a MAC
  or IP section may set it). Later calls win: hostname over IP over MAC over
  [common] over [clients].
- For each argument, section_call runs the FIRST section in file order
  (``unnamed`` before all) whose name matches it as a ``case`` pattern: ``*``,
  ``?``, ``|`` between alternatives, everything else literal and
  case-sensitive. Names are lower case and so are LTSP's MAC (``ip link``)
  and IPv6 addresses, so MAC sections match however they are written; LTSP
  does not lower-case HOSTNAME, so host PC01 never matches [PC01] (a warning
  says so).
- A section runs at most once (a guard variable): an argument whose first
  matching section already ran runs nothing. [server] is never named by a
  client's arguments; a pattern, ``INCLUDE=server`` or a host called
  "server" does run it, in LTSP and here.
- An unknown identity field is an empty argument, as LTSP's unset HOSTNAME
  is: it matches only patterns like ``[*]``. An unknown host name is LTSP's
  unset HOSTNAME (its ``hostname`` said "(none)"), so ``$HOSTNAME`` is empty;
  LTSP always knows MAC and IP, so an unknown one is not evaluated.
- A file without any section is read, with a warning: LTSP 23.02's ini2sh
  turns it into broken shell and LTSP stops.
- The last assignment run wins; ``unset NAME`` unsets.

The shell subset evaluated (the rest is reported, never guessed):

- assignments ``NAME=word`` (several on a line, ``;`` between commands,
  ``#`` comments, backslash-newline); ``export NAME[=word]``, ``unset NAME``,
  ``:``/``true``; ``section_call ARGS`` and calls of a section's function;
- quoting: ``'...'`` literal; ``"..."`` where backslash escapes only
  ``$ ` " \\`` and newline; an unquoted backslash quotes the next character;
  multi-line quoted values;
- ``$NAME`` and ``${NAME}`` when the value is known: set earlier in this run,
  or LTSP's own HOSTNAME, MAC_ADDRESS, IP_ADDRESS, DEVICE from the identity
  (when known), or given by the caller in ``environ``.

Not evaluated, with one warning naming path:line and the text: ``$(...)``,
backquotes, ``$((...))``, ``${NAME...}`` with an operator, ``$1``/``$@``
and other special parameters, ``$'...'``/``$"..."`` (dash and bash differ),
``~``, unknown variables, an assignment before a command, pipes, redirections,
``&&``/``||``, here-documents, compound commands (``if``, ``case``, loops,
``{ }``, functions) and every other command. A variable such a line may set
becomes unknown: it is left out of the result (``Entries.unknown`` names it)
until a later evaluated assignment sets it again. A caller that reads only
some variables passes ``wanted`` (a predicate on names): the warnings about
lines that can only touch other variables are left out (every run of
get_hosts used to warn about an unrelated ``$(...)``); a line that may run
sections or set anything (``section_call``, a section's function, ``eval``,
``.``, ``source``) is always reported. A line with an
unterminated quote is skipped with a warning and the next line read afresh
(LTSP would refuse the whole file; a login screen must still get a host).
Only a NUL byte (not a text file) raises LtspConfError.

Imports: bisect, collections and get_hosts.ltsconf (Entry, LtsConfError,
glob_match); no ``re``, so reading ltsp.conf costs a login next to nothing.
"""

from bisect import bisect_right
from collections import namedtuple

from get_hosts.ltsconf import Entry, LtsConfError, glob_match

PREFIX = "section_"
CALL = PREFIX + "call"
UNNAMED = "unnamed"
# ini2sh END defines these after the sections: a section with such a function name is overridden.
INI2SH_FUNCTIONS = frozenset((PREFIX + "call", PREFIX + "list"))

LOWER = "abcdefghijklmnopqrstuvwxyz"
UPPER = LOWER.upper()
DIGITS = "0123456789"
ASCII_LOWER = str.maketrans(UPPER, LOWER)  # awk's tolower: str.lower would also fold non-ASCII letters
NAME_KEEP = frozenset("-*./:?@_|" + DIGITS + LOWER)  # what ini2sh keeps of a section or INCLUDE name
ID_KEEP = frozenset(DIGITS + LOWER)  # what it keeps of a function name (the rest becomes _)
KEY_CHARS = frozenset(LOWER + UPPER + DIGITS + "_")  # awk's [a-zA-Z0-9_]
NAME_START = frozenset(LOWER + UPPER + "_")
SPECIAL_PARAMS = frozenset(DIGITS + "@*#?-$!")
METACHARS = frozenset(" \t\n;&|<>()")
WORD_SPECIAL = METACHARS | frozenset("\\'\"$`")  # where an unquoted run of plain characters ends
DQUOTE_SPECIAL = frozenset('"\\$`')  # where a run inside double quotes ends
OPERATORS = ("&&", "||", ";;", "<<<", "<<", ">>", "<&", ">&", "<>", ">|")
GLOB_CHARS = "*?["

LTSP20_SECTIONS = frozenset(("server", "common", "clients"))
LTSP5_SECTION = "default"

# Reserved words that open and close compound commands; what runs inside one is not evaluated.
OPENERS = frozenset(("if", "case", "for", "while", "until", "select", "{"))
CLOSERS = frozenset(("fi", "esac", "done", "}"))
RESERVED = OPENERS | CLOSERS | frozenset(("then", "else", "elif", "do", "in", "!", "function"))
# Commands that set the names given as arguments: when not evaluated, those names become unknown.
SETS_ARGUMENTS = frozenset(("read", "local", "readonly", "export", "unset", "declare", "typeset"))
NO_OPS = frozenset((":", "true"))

LIT, VAR, BAD = "lit", "var", "bad"
UNKNOWN = object()  # a variable set by something not evaluated
UNSET = object()  # a variable `unset` by ltsp.conf: expands to "" whatever LTSP had


class LtspConfError(LtsConfError):
    """ltsp.conf is not text at all; the message names file and line."""


class Entries(dict):
    """NAME -> Entry(value, path, lineno) for every upper-case variable the run set.

    ``warnings``: one-line strings naming path:line, for the caller to show.
    ``unknown``: names a not-evaluated line may have set (left out of the dict).
    When HOSTNAME is among them, no host name section was applied (a warning says so).
    ``why_unknown``: each unknown name -> the warning about the line that made it unknown.
    """

    def __init__(self, entries=(), warnings=(), unknown=(), why_unknown=None):
        super().__init__(entries)
        self.warnings = list(warnings)
        self.unknown = frozenset(unknown)
        self.why_unknown = dict(why_unknown or {})


# A section's function: the name as ini2sh cleaned it, its header line (0: unnamed), [(lineno, shell text)].
Function = namedtuple("Function", "name lineno lines")
# One line of section_call's case list: pattern alternatives -> function name.
Arm = namedtuple("Arm", "name alternatives function lineno")
# A shell command: where it starts, its words (lists of [kind, text, quoted] parts), the operators
# it holds, whether it is a plain simple command outside any compound, and its first source line.
Command = namedtuple("Command", "lineno words ops plain text")
Conf = namedtuple("Conf", "functions arms definitions")


class _Unterminated(Exception):
    """A quote, ${, $( or backquote that the section ends inside of."""


def _quote(text, limit=80):
    """TEXT for a one-line message: repr, cut at LIMIT characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _is_name(text):
    return bool(text) and text[0] in NAME_START and all(c in KEY_CHARS for c in text)


def _lines(text):
    """awk's records: split on \\n only (\\r stays, as LTSP keeps it), no empty record after a final \\n."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


# --- Step 1: ini2sh -----------------------------------------------------------------------


def _is_header(line):
    """awk /^[ ]*\\[[^]]*\\]/: spaces, '[', then a ']' somewhere."""
    stripped = line.lstrip(" ")
    return stripped.startswith("[") and "]" in stripped


def _clean_name(text):
    """ini2sh's section and INCLUDE names: ASCII lower case, cut at '#', only NAME_KEEP characters."""
    return "".join(c for c in text.translate(ASCII_LOWER).split("#", 1)[0] if c in NAME_KEEP)


def _function_name(name):
    return PREFIX + "".join(c if c in ID_KEEP else "_" for c in name)


def _include_target(line):
    """The cleaned name of an ``INCLUDE =`` line as ini2sh sees it, else None."""
    if line[:7].translate(ASCII_LOWER) != "include":
        return None
    lower = line.translate(ASCII_LOWER)
    if not lower[7:].lstrip(" ").startswith("="):
        return None
    return _clean_name(lower[7:].lstrip(" ")[1:])


def _shell_line(line):
    """One non-header line as ini2sh prints it."""
    target = _include_target(line)
    if target is not None:
        return f'{CALL} "{target}"'  # target holds no quote, $, ` or \, so this quoting is safe
    end = 0
    while end < len(line) and line[end] in KEY_CHARS:
        end += 1
    equals = end
    while equals < len(line) and line[equals] == " ":
        equals += 1
    if equals < len(line) and line[equals] == "=":
        return line[:end] + "=" + line[equals + 1 :].lstrip(" ")
    return line


def _pattern_problem(name):
    """Why a section name cannot be a case pattern (LTSP fails on the whole file), or None."""
    if not name:
        return "an empty section name"
    if "" in name.split("|"):
        return "an empty | alternative"
    if _function_name(name) in INI2SH_FUNCTIONS:
        return f"a name whose function {_function_name(name)} is ini2sh's own"
    return None


def _ini2sh(text, path, warnings):
    """ltsp.conf TEXT -> Conf(functions, arms, definitions), as LTSP's ini2sh would define them.

    ``functions``: function name -> its last Function; ``arms``: section_call's case list,
    ``unnamed`` first; ``definitions``: every Function in file order (for syntax warnings).
    """
    unnamed = Function(UNNAMED, 0, [])
    functions = {PREFIX + UNNAMED: unnamed}
    arms = [Arm(UNNAMED, (UNNAMED,), PREFIX + UNNAMED, 0)]
    definitions = [unnamed]
    current = unnamed
    for lineno, line in enumerate(_lines(text), 1):
        if _is_header(line):
            name = _clean_name(line)
            current = Function(name, lineno, [])
            definitions.append(current)
            problem = _pattern_problem(name)
            if problem:
                warnings.append(f"{path}:{lineno}: section {_quote(line.strip())} has {problem}: ignored")
                continue
            function = _function_name(name)
            earlier = functions.get(function)
            if earlier is not None:
                same = f"[{earlier.name}]" if earlier.name != name else "the same name"
                where = f" at line {earlier.lineno}" if earlier.lineno else " (lines before any section)"
                warnings.append(
                    f"{path}:{lineno}: [{name}] is the same shell function as {same}{where}: "
                    "LTSP keeps only the last one's lines"
                )
            functions[function] = current
            arms.append(Arm(name, tuple(name.split("|")), function, lineno))
            continue
        if line[:1] in (" ", "\t") and _include_target(line.lstrip(" \t")) is not None:
            warnings.append(
                f"{path}:{lineno}: {_quote(line.strip())} is indented: LTSP sees INCLUDE= only at the start "
                "of a line, so this only sets a variable called INCLUDE"
            )
        current.lines.append((lineno, _shell_line(line)))
    if len(definitions) == 1:
        # ini2sh's section_list is then `echo "\` + `"`: broken shell, and LTSP stops on it.
        warnings.append(f"{path}: no [section] at all: LTSP cannot evaluate such a file; put the lines under [clients]")
    return Conf(functions, arms, definitions)


# --- Step 2a: reading shell -----------------------------------------------------------------


def _add(parts, kind, text, quoted):
    """Append to the last part when it is the same kind of literal (keeps quoted and unquoted apart)."""
    if kind == LIT and parts and parts[-1][0] == LIT and parts[-1][2] == quoted:
        parts[-1][1] += text
    else:
        parts.append([kind, text, quoted])


class _Lexer:
    """One function body -> Commands. Knows words, quotes and expansions well enough to tell
    an assignment we can evaluate from everything else, and to skip the rest correctly."""

    def __init__(self, lines):
        self.linenos = [lineno for lineno, _ in lines]
        self.starts = []
        offset = 0
        for _, line in lines:
            self.starts.append(offset)
            offset += len(line) + 1
        self.src = "".join(line + "\n" for _, line in lines)
        self.pending = []  # here-document delimiters waiting for the next newline
        self.begin = 0  # where the command being read began, for skipping its line on an error

    def lineno_at(self, pos):
        return self.linenos[bisect_right(self.starts, pos) - 1]

    def line_text(self, pos):
        index = bisect_right(self.starts, pos) - 1
        return self.src[self.starts[index] : self.src.index("\n", self.starts[index])]

    def commands(self, path, warnings):
        result = []
        pos = 0
        while pos < len(self.src):
            try:
                command, pos = self._command(pos)
            except _Unterminated as error:
                # Skip the line the command began on and read the next one afresh.
                index = bisect_right(self.starts, self.begin) - 1
                text = _quote(self.line_text(self.begin).strip())
                warnings.append(f"{path}:{self.linenos[index]}: {error} in {text}: line skipped")
                self.pending = []
                pos = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.src)
                continue
            if command is not None:
                result.append(command)
        return _mark_compounds(result)

    def _command(self, pos):
        src = self.src
        words, ops, start = [], [], None
        self.begin = pos
        while pos < len(src):
            c = src[pos]
            if c in " \t":
                pos += 1
            elif src.startswith("\\\n", pos):
                pos += 2
            elif c == "\n":
                pos = self._skip_heredocs(pos + 1)
                if words or ops:
                    break
            elif c == "#":
                pos = src.index("\n", pos)
            elif c == ";" and not src.startswith(";;", pos):
                pos += 1
                if words or ops:
                    break
            elif c in METACHARS:
                if start is None:
                    start = self.begin = pos
                op = next((o for o in OPERATORS if src.startswith(o, pos)), c)
                ops.append(op)
                pos += len(op)
                if op == "<<":  # not <<<, a bash here-string: no body follows
                    pos = self._heredoc_word(pos)
            else:
                if start is None:
                    start = self.begin = pos
                word, pos = self._word(pos)
                words.append(word)
        if not words and not ops:
            return None, pos
        text = self.line_text(start).strip()
        return Command(self.lineno_at(start), words, tuple(ops), True, text), pos

    def _heredoc_word(self, pos):
        strip_tabs = self.src.startswith("-", pos)
        pos += strip_tabs
        while self.src[pos] in " \t":
            pos += 1
        word, pos = self._word(pos)
        self.pending.append(("".join(p[1] for p in word), strip_tabs))
        return pos

    def _skip_heredocs(self, pos):
        """Past the bodies of the here-documents opened on the line that just ended."""
        for delimiter, strip_tabs in self.pending:
            while pos < len(self.src):
                end = self.src.index("\n", pos)
                line = self.src[pos:end]
                pos = end + 1
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
        self.pending = []
        return pos

    def _word(self, pos):
        src, parts = self.src, []
        while pos < len(src) and src[pos] not in METACHARS:
            c = src[pos]
            if c == "\\":
                if src[pos + 1] != "\n":  # backslash-newline joins lines and is removed
                    _add(parts, LIT, src[pos + 1], True)
                pos += 2
            elif c == "'":
                end = src.find("'", pos + 1)
                if end < 0:
                    raise _Unterminated("unterminated ' quote")
                _add(parts, LIT, src[pos + 1 : end], True)
                pos = end + 1
            elif c == '"':
                _add(parts, LIT, "", True)  # "" is still a word
                pos = self._double_quoted(pos + 1, parts)
            elif c == "$":
                pos = self._dollar(pos, parts, False)
            elif c == "`":
                pos = self._skip_backquote(pos + 1)
                parts.append([BAD, "`...` command substitution", False])
            else:
                end = pos + 1
                while src[end] not in WORD_SPECIAL:  # src ends with a newline, a metacharacter
                    end += 1
                _add(parts, LIT, src[pos:end], False)
                pos = end
        return parts, pos

    def _double_quoted(self, pos, parts):
        src = self.src
        while pos < len(src):
            c = src[pos]
            if c == '"':
                return pos + 1
            if c == "\\" and src[pos + 1] in '$`"\\\n':
                if src[pos + 1] != "\n":
                    _add(parts, LIT, src[pos + 1], True)
                pos += 2
            elif c == "$":
                pos = self._dollar(pos, parts, True)
            elif c == "`":
                pos = self._skip_backquote(pos + 1)
                parts.append([BAD, "`...` command substitution", True])
            else:
                end = pos + 1
                while end < len(src) and src[end] not in DQUOTE_SPECIAL:
                    end += 1
                _add(parts, LIT, src[pos:end], True)
                pos = end
        raise _Unterminated('unterminated " quote')

    def _dollar(self, pos, parts, quoted):
        src = self.src
        after = src[pos + 1]
        if after == "{":
            end = self._skip_braces(pos + 2)
            inner = src[pos + 2 : end - 1]
            if _is_name(inner):
                parts.append([VAR, inner, quoted])
            else:
                parts.append([BAD, "${" + inner + "} (only ${NAME} is evaluated)", quoted])
            return end
        if after == "(":
            end = self._skip_parens(pos + 2)
            what = "$((...)) arithmetic" if src.startswith("((", pos + 1) else "$(...) command substitution"
            parts.append([BAD, what, quoted])
            return end
        if after in NAME_START:
            end = pos + 1
            while src[end] in KEY_CHARS:
                end += 1
            parts.append([VAR, src[pos + 1 : end], quoted])
            return end
        if after in SPECIAL_PARAMS:
            parts.append([BAD, f"${after} special parameter", quoted])
            return pos + 2
        if after in "'\"" and not quoted:
            parts.append([BAD, f"${after}...{after} quoting (dash and bash differ)", quoted])
            return pos + 1
        _add(parts, LIT, "$", quoted)
        return pos + 1

    def _skip_backquote(self, pos):
        src = self.src
        while pos < len(src):
            if src[pos] == "\\":
                pos += 2
            elif src[pos] == "`":
                return pos + 1
            else:
                pos += 1
        raise _Unterminated("unterminated ` command substitution")

    def _skip_quoted(self, pos):
        """Past a quote at POS inside ${...} or $(...)."""
        if self.src[pos] == "'":
            end = self.src.find("'", pos + 1)
            if end < 0:
                raise _Unterminated("unterminated ' quote")
            return end + 1
        return self._double_quoted(pos + 1, [])

    def _skip_braces(self, pos):
        """Past the '}' that closes a '${' (POS is just after it)."""
        return self._skip_nested(pos, "${", "}", "unterminated ${")

    def _skip_parens(self, pos):
        """Past the ')' that closes a '$(' (POS is just after it); $(( )) nests the same way."""
        return self._skip_nested(pos, "(", ")", "unterminated $(")

    def _skip_nested(self, pos, opening, closing, unterminated):
        """Past the CLOSING that ends a nesting (POS is just inside it), over quotes, backquotes and $( )."""
        src, depth = self.src, 1
        while pos < len(src):
            c = src[pos]
            if c == "\\":
                pos += 2
                continue
            if c in "'\"":
                pos = self._skip_quoted(pos)
                continue
            if c == "`":
                pos = self._skip_backquote(pos + 1)
                continue
            if src.startswith(opening, pos):
                depth += 1
                pos += len(opening)
                continue
            if opening != "(" and src.startswith("$(", pos):
                pos = self._skip_parens(pos + 2)
                continue
            if c == closing:
                depth -= 1
                if depth == 0:
                    return pos + 1
            pos += 1
        raise _Unterminated(unterminated)


def _literal(word):
    """The text of a word that is one unquoted literal, else None (a quoted 'if' is no keyword)."""
    if len(word) == 1 and word[0][0] == LIT and not word[0][2]:
        return word[0][1]
    return None


def _mark_compounds(commands):
    """plain=False for commands that hold operators or reserved words, or sit inside a compound.

    Reserved words are counted wherever they stand, so a one-line ``case ... esac`` closes
    itself; a miscount only makes more lines not evaluated, and ends with the section.
    """
    depth, result = 0, []
    for command in commands:
        words = [_literal(word) for word in command.words]
        opened = sum(word in OPENERS for word in words)
        closed = sum(word in CLOSERS for word in words)
        plain = depth == 0 and not command.ops and not any(word in RESERVED for word in words)
        depth = max(0, depth + opened - closed)
        result.append(command._replace(plain=plain))
    return result


def _assignment(word):
    """(NAME, value parts) when WORD is NAME=..., its name unquoted and literal; else None."""
    if not word or word[0][0] != LIT or word[0][2]:
        return None
    name, equals, rest = word[0][1].partition("=")
    if not equals or not _is_name(name):
        return None
    return name, [[LIT, rest, False], *word[1:]]


# --- Step 2b: running it ----------------------------------------------------------------------


class _Shell:
    """Runs section functions over a variable table; never recursive (INCLUDE chains can be long)."""

    def __init__(self, conf, path, preset, warnings):
        self.conf = conf
        self.path = path
        self.preset = preset  # what LTSP had set before reading ltsp.conf, where we know it
        self.warnings = warnings
        self.vars = {}  # NAME -> Entry, UNKNOWN or UNSET
        self.unknown_at = {}  # NAME -> index in warnings of the one saying why it is UNKNOWN
        self.touches = {}  # index in warnings -> the names that line may set; None: anything (sections, eval)
        self.reported = {}  # (lineno, text, reason) -> (index in warnings, names): `a; b` is one warning
        # section_call's case, fast for long files: names without * or ? by dict, the rest in order.
        self.literal_arms = {}
        self.wild_arms = []
        for index, arm in enumerate(conf.arms):
            for pattern in arm.alternatives:
                if "*" in pattern or "?" in pattern:
                    if not self.wild_arms or self.wild_arms[-1][0] != index:
                        self.wild_arms.append((index, arm))
                else:
                    self.literal_arms.setdefault(pattern, index)
        self.bodies = {}
        for function in conf.definitions:  # every body, so syntax problems show whatever applies
            commands = _Lexer(function.lines).commands(path, warnings)
            if conf.functions.get(_function_name(function.name)) is function:
                self.bodies[_function_name(function.name)] = commands

    def warn(self, lineno, message, touches=None):
        if touches is not None:
            self.touches[len(self.warnings)] = frozenset(touches)
        self.warnings.append(f"{self.path}:{lineno}: {message}")

    def may_touch_anything(self, command):
        """A command that may run sections or set any variable: its warning always matters."""
        for word in command.words:
            name = _literal(word)
            if name in (CALL, "eval", ".", "source") or (name in self.conf.functions and name != UNNAMED):
                return True
        return False

    def value(self, name):
        """NAME's value now: a string, or None when not known."""
        state = self.vars.get(name)
        if state is UNSET:
            return ""
        if isinstance(state, Entry):
            return state.value
        if state is None:
            return self.preset.get(name)
        return None

    def section_call(self, args):
        """Run ``section_call ARGS`` to its end."""
        stack = [["call", list(args), 0]]
        while stack:
            frame = stack[-1]
            kind, items, index = frame
            if index >= len(items):
                stack.pop()
                continue
            frame[2] += 1
            if kind == "call":
                function = self.match(items[index])
                if function is not None:
                    self.enter(function, stack)
            else:
                self.execute(items[index], stack)

    def match(self, arg):
        """The function of the first arm (file order) with a pattern matching ARG, like the case in section_call."""
        best = self.literal_arms.get(arg)
        for index, arm in self.wild_arms:
            if best is not None and index > best:
                break
            if any(glob_match(arg, pattern) for pattern in arm.alternatives):
                best = index
                break
        return None if best is None else self.conf.arms[best].function

    def enter(self, function, stack):
        """Push FUNCTION's body unless its guard says it ran (``test "$section_x" = 1 && return 0``)."""
        if self.value(function) == "1":
            return
        self.vars[function] = Entry("1", self.path, 0)
        stack.append(["run", self.bodies.get(function, []), 0])

    def execute(self, command, stack):
        if not command.plain:
            reason = "operator " + " ".join(command.ops) if command.ops else "compound command"
            self.not_evaluated(command, reason)
            return
        words = command.words
        count = 0
        while count < len(words) and _assignment(words[count]):
            count += 1
        if count == len(words):
            for word in words:
                self.assign(command, *_assignment(word))
            return
        name = _literal(words[count])
        args = words[count + 1 :]
        if count:
            hint = ""
            if count == 1 and name is not None:
                hint = ": runs a command with the variable in its environment, quote the value if it has spaces"
            self.not_evaluated(command, "assignment before a command" + hint)
        elif name in NO_OPS:
            pass
        elif name == "export" and args:
            self.export(command, args)
        elif name == "unset" and args:
            self.unset(command, args)
        elif name == CALL:
            values = [self.argument(word) for word in args]
            bad = next((why for value, why in values if value is None), None)
            if bad:
                self.not_evaluated(command, f"{bad}; the sections it would run are not applied")
            else:
                stack.append(["call", [value for value, _ in values], 0])
        elif name in self.conf.functions and name not in INI2SH_FUNCTIONS:
            self.enter(name, stack)
        else:
            note = ": it may set any variable" if name in ("eval", ".", "source") else ""
            spaced = _literal(args[0]) if args else None
            if _is_name(name or "") and spaced is not None and spaced.startswith("="):
                note = ": LTSP removes the spaces around = only when KEY starts the line"
            self.not_evaluated(command, "get_hosts evaluates assignments only" + note)

    def assign(self, command, name, parts):
        value, why = self.expand(parts)
        if value is None:
            self.vars[name] = UNKNOWN
            self.unknown_at[name] = len(self.warnings)
            self.warn(command.lineno, f"not evaluated: {_quote(command.text)} ({why}), so {name} is unknown", [name])
        else:
            self.vars[name] = Entry(value, self.path, command.lineno)

    def export(self, command, args):
        for word in args:
            assignment = _assignment(word)
            if assignment is not None:
                name, parts = assignment
                if any(kind == LIT and not quoted and "{" in text for kind, text, quoted in parts):
                    self.vars[name] = UNKNOWN
                    self.unknown_at[name] = len(self.warnings)
                    why = "{ in export: bash expands braces there, dash does not"
                    message = f"not evaluated: {_quote(command.text)} ({why}), so {name} is unknown"
                    self.warn(command.lineno, message, [name])
                else:
                    self.assign(command, name, parts)
            elif not _is_name(_literal(word) or ""):
                self.not_evaluated(command, "export option or odd argument")
                return

    def unset(self, command, args):
        names = [_literal(word) for word in args]
        if names[0] == "-v":
            names = names[1:]
        if not names or not all(_is_name(name or "") for name in names):
            self.not_evaluated(command, "unset of functions or of something not a name")
            return
        for name in names:
            self.vars[name] = UNSET

    def expand(self, parts):
        """An assignment's value parts -> (value, None) or (None, why not): no splitting, no globbing."""
        out = []
        tilde_here = True  # at the start of the value or after an unquoted ':' (the shell expands ~ there)
        for kind, text, quoted in parts:
            if kind == BAD:
                return None, text
            if kind == VAR:
                value = self.value(text)
                if value is None:
                    if text in self.vars:
                        return None, f"${text} is unknown here"
                    return None, f"${text} is not set by ltsp.conf before this, and LTSP's own value is not known here"
                out.append(value)
                tilde_here = False
                continue
            if not quoted:
                for char in text:
                    if char == "~" and tilde_here:
                        return None, "~ home directory expansion"
                    tilde_here = char == ":"
            else:
                tilde_here = False
            out.append(text)
        return "".join(out), None

    def argument(self, word):
        """A command argument -> (value, None) or (None, why): only where no splitting or globbing happens."""
        out = []
        for kind, text, quoted in word:
            if kind == BAD:
                return None, text
            if kind == VAR:
                value = self.value(text)
                if not quoted:
                    return None, f"unquoted ${text} in an argument (split into words)"
                if value is None:
                    return None, f"${text} is unknown here"
                out.append(value)
            elif not quoted and (any(c in text for c in GLOB_CHARS) or text.startswith("~")):
                return None, f"unquoted {text!r} in an argument"
            else:
                out.append(text)
        return "".join(out), None

    def not_evaluated(self, command, reason):
        names = _names_set(command.words)
        for name in names:
            self.vars[name] = UNKNOWN
        if not names and all(_literal(word) in RESERVED for word in command.words) and not command.ops:
            return  # a bare 'fi' or 'done': its block was reported where it opened
        key = (command.lineno, command.text, reason)
        if key in self.reported:  # another command of the same line: one warning, all the names
            index, earlier = self.reported[key]
            names = list(dict.fromkeys(earlier + names))
        else:
            index = len(self.warnings)
            self.warnings.append(None)
        self.reported[key] = (index, names)
        self.unknown_at.update(dict.fromkeys(names, index))
        if self.touches.get(index, ()) is not None:  # once anything, always anything
            self.touches[index] = None if self.may_touch_anything(command) else frozenset(names)
        unknown = f", so {', '.join(names)} {'is' if len(names) == 1 else 'are'} unknown" if names else ""
        self.warnings[index] = (
            f"{self.path}:{command.lineno}: not evaluated: {_quote(command.text)} ({reason}){unknown}"
        )


def _names_set(words):
    """Names a command we do not run may set: NAME=... anywhere, read/local/export/... arguments, for NAME."""
    names = []
    previous = setter = None
    for word in words:
        literal = _literal(word)
        assignment = _assignment(word)
        if assignment is not None:
            names.append(assignment[0])
        elif _is_name(literal or "") and (setter or previous == "for"):
            names.append(literal)
        if literal in SETS_ARGUMENTS:
            setter = True
        previous = literal
    return list(dict.fromkeys(names))


# --- Public API -------------------------------------------------------------------------------


def looks_like_ltsp_conf(text, default=False):
    """True when TEXT is an LTSP 20+ ltsp.conf, False when an LTSP 5 lts.conf.

    The rule, on section headers and INCLUDE lines as ini2sh reads them:
    a [server], [common] or [clients] section, or an ``INCLUDE=`` line, means
    LTSP 20+ (True), even when a [Default] section is there too, because an
    ltsp.conf may have a named section called "default" (LTSP 5's lts.conf
    has ``include "file"``, without '='); otherwise a [Default] section means
    LTSP 5 (False). A file with neither (only MAC, IP or host sections, or no
    sections at all) cannot be told by its text: the answer is DEFAULT, so
    pass what the file's path says (True for /etc/ltsp/ltsp.conf).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    ltsp5 = False
    for line in _lines(text):
        if _is_header(line):
            name = _clean_name(line)
            if name in LTSP20_SECTIONS:
                return True
            ltsp5 = ltsp5 or name == LTSP5_SECTION
        elif _include_target(line) is not None:
            return True
    return False if ltsp5 else default


def ltsp_conf_entries(text, path, identity, environ=None, wanted=None):
    """The variables ltsp.conf TEXT sets on the client IDENTITY, as LTSP's own shell would -> Entries.

    TEXT is the file's content (str, or bytes read as UTF-8), PATH its name for
    messages. IDENTITY is an identity.Identity (hostname, ip, mac, interface;
    any may be None) or None. ENVIRON maps names to values LTSP had set before
    reading ltsp.conf (SERVER, say), for ``$NAME`` in values; identity fields
    win over it. Returns Entries: a dict NAME -> Entry(value, path, lineno) of
    the upper-case variables set, the last assignment run winning, with
    ``.warnings`` and ``.unknown``. Raises LtspConfError (an LtsConfError) only
    for a file that holds a NUL byte. WANTED(name) -> bool, when given, leaves
    out the warnings about lines that touch none of the wanted variables.
    """
    text, warnings = _text(text, path)
    # No host name is LTSP's unset HOSTNAME ("(none)"): it expands to "" and matches only [*].
    hostname = getattr(identity, "hostname", None) or ""
    mac = (getattr(identity, "mac", None) or "").lower()  # LTSP's MAC_ADDRESS comes from `ip link`: lower case
    ip = (getattr(identity, "ip", None) or "").lower()
    preset = dict(environ or {}, HOSTNAME=hostname)
    for name, value in (
        ("MAC_ADDRESS", mac),
        ("IP_ADDRESS", ip),
        ("DEVICE", getattr(identity, "interface", None)),
    ):
        if value:
            preset[name] = value
    conf = _ini2sh(text, path, warnings)
    shell = _Shell(conf, path, preset, warnings)
    shell.section_call([UNNAMED, "clients", "common", mac, ip])
    host = shell.value("HOSTNAME")
    if host is None:
        warnings.append(f"{path}: HOSTNAME is unknown after the MAC and IP sections: no host name section applied")
    else:
        _warn_case(conf, path, host, warnings)
        shell.section_call([host])
    return _entries(shell, warnings, wanted)


def ltsp_conf_server_entries(text, path, environ=None):
    """The variables ltsp.conf TEXT sets on the LTSP server itself, as its ltsp command sees them -> Entries.

    LTSP's eval_ini runs ``section_call unnamed common server "$MAC_ADDRESS"
    "$IP_ADDRESS"`` then ``section_call "$HOSTNAME"`` there: lines before any
    section, [common], [server] (the last assignment winning), each with the
    sections its INCLUDE= lines name, then the server's own sections. The
    server's MAC and IP are not known here and its HOSTNAME is unset (dash
    sets none): they are evaluated as empty, so a pattern matching any value
    ([*]) runs, as it would for the real ones, and one naming this server
    does not. TEXT, PATH, ENVIRON, the result and LtspConfError as for
    ltsp_conf_entries; ``.why_unknown`` says why each of ``.unknown`` is.
    """
    text, warnings = _text(text, path)
    shell = _Shell(_ini2sh(text, path, warnings), path, dict(environ or {}, HOSTNAME=""), warnings)
    shell.section_call([UNNAMED, "common", "server", ""])  # one "" for MAC and IP: the second would match the same
    host = shell.value("HOSTNAME")
    if host is None:
        warnings.append(f"{path}: HOSTNAME is unknown after [server]: no host name section applied")
    else:
        shell.section_call([host])
    return _entries(shell, warnings)


def _text(text, path):
    """(TEXT as str, [warnings about it]); LtspConfError when it holds a NUL byte."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    if "\0" in text:
        lineno = text.count("\n", 0, text.index("\0")) + 1
        raise LtspConfError(f"{path}:{lineno}: NUL byte: not a text file", path, lineno)
    warnings = []
    if "\r\n" in text:
        warnings.append(
            f"{path}: CRLF line ends: LTSP keeps the \\r at the end of each value (save it with Unix line ends)"
        )
    return text, warnings


def _entries(shell, warnings, wanted=None):
    """The Entries a finished run leaves: upper-case variables set, unknown ones and why, the warnings.

    WANTED: see ltsp_conf_entries.
    """
    result = {}
    for name, state in shell.vars.items():
        if not isinstance(state, Entry) or name.startswith(PREFIX):
            continue
        if name == name.upper():
            result[name] = state
        elif name.upper().startswith("LB_"):
            warnings.append(
                f"{state.path}:{state.lineno}: {name} is not {name.upper()}: shell variable names are case-sensitive"
            )
    unknown = [name for name, state in shell.vars.items() if state is UNKNOWN and name == name.upper()]
    why = {name: warnings[shell.unknown_at[name]] for name in unknown if name in shell.unknown_at}
    if wanted is not None:
        touches = shell.touches
        warnings = [
            warning
            for index, warning in enumerate(warnings)
            if touches.get(index) is None or any(wanted(name) for name in touches[index])
        ]
    # `a; b` on one line are two commands, each reported: say it once.
    return Entries(result, dict.fromkeys(warnings), unknown, why)


def _warn_case(conf, path, host, warnings):
    """LTSP lower-cases section names but not HOSTNAME: say so when that is why a section does not apply."""
    lower = host.translate(ASCII_LOWER)
    if lower == host:
        return
    for arm in conf.arms:
        if lower in arm.alternatives:
            warnings.append(
                f"{path}:{arm.lineno}: section [{arm.name}] does not apply to host {host!r}: "
                "LTSP compares host names case-sensitively with lower-cased section names"
            )
