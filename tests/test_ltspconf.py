"""ltsp.conf (LTSP 20+) as LTSP reads it: tables for the pure reader, then LTSP's own code as the oracle.

The oracle runs Debian's ltsp package's real ini2sh, section_call and eval_ini
(usr/share/ltsp/common/ltsp/55-config.sh) in dash and in bash on the same file
and identity, and the reader must give exactly the values the shell has.
"""

import os
import random
import re
import shutil
import subprocess
import textwrap
from collections import namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from machine import run_python_without_site

from get_hosts.errors import GetHostsError
from get_hosts.identity import Identity
from get_hosts.ltsconf import Entry, LtsConfError
from get_hosts.ltspconf import (
    Entries,
    LtspConfError,
    looks_like_ltsp_conf,
    ltsp_conf_entries,
    ltsp_conf_server_entries,
)
from get_hosts.settings import VARIABLES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "ltsp.conf.example")

CLIENT = Identity("pc12", "10.160.0.12", "00:1a:2b:3c:4d:5e", "eth0")
NOBODY = Identity(None, None, None, None)


def read(text, identity=CLIENT, **kwargs):
    return ltsp_conf_entries(textwrap.dedent(text), "ltsp.conf", identity, **kwargs)


def values(text, identity=CLIENT, **kwargs):
    return {name: entry.value for name, entry in read(text, identity, **kwargs).items()}


# (what, ltsp.conf text, expected variables for CLIENT)
CASES = [
    ("clients", "[clients]\nA=1\nB=two\n", {"A": "1", "B": "two"}),
    (
        "lines before any section run first",
        "A=unnamed\nB=unnamed\n[clients]\nA=clients\n",
        {"A": "clients", "B": "unnamed"},
    ),
    ("common over clients, whatever the file order", "[common]\nA=common\n[clients]\nA=clients\n", {"A": "common"}),
    ("server never applies", "[server]\nA=server\nS=1\n[clients]\nA=clients\n", {"A": "clients"}),
    ("section names any case", "[CLIENTS]\nA=1\n[Common]\nB=2\n", {"A": "1", "B": "2"}),
    ("mac over common", "[common]\nA=common\n[00:1a:2b:3c:4d:5e]\nA=mac\n", {"A": "mac"}),
    ("mac section in upper case", "[clients]\nA=c\n[00:1A:2B:3C:4D:5E]\nA=mac\n", {"A": "mac"}),
    ("ip over mac", "[10.160.0.12]\nA=ip\n[00:1a:2b:3c:4d:5e]\nA=mac\nM=m\n", {"A": "ip", "M": "m"}),
    (
        "hostname over ip over mac over common over clients",
        "[pc12]\nA=host\n[10.160.0.12]\nA=ip\nB=ip\n[00:1a:2b:3c:4d:5e]\nA=mac\nB=mac\nC=mac\n"
        "[common]\nA=common\nB=common\nC=common\nD=common\n[clients]\nA=clients\nB=clients\nC=clients\nD=clients\nE=c\n",
        {"A": "host", "B": "ip", "C": "mac", "D": "common", "E": "c"},
    ),
    ("other clients' sections do not apply", "[pc13]\nA=1\n[10.160.0.13]\nB=1\n[00:1a:2b:3c:4d:5f]\nC=1\n", {}),
    ("* pattern", "[10.160.*]\nA=net\n", {"A": "net"}),
    ("? pattern", "[pc1?]\nA=host\n", {"A": "host"}),
    ("| alternatives", "[aa:bb:*|00:1a:2b:*|cc:*]\nA=vendor\n", {"A": "vendor"}),
    ("| with an ip and a host", "[pc99|10.160.0.12]\nA=ip\n", {"A": "ip"}),
    ("patterns are whole-name", "[pc1]\nA=1\n[c12]\nB=1\n[10.160.0]\nC=1\n", {}),
    (
        "only the first matching section in file order runs",
        "[00:1a:*]\nA=first\n[00:1a:2b:*]\nA=second\nB=second\n",
        {"A": "first"},
    ),
    (
        "a section matched again is not run again, and later sections are not tried",
        "[00:1a:2b:3c:4d:5e|pc12]\nA=mac\n[10.160.0.12]\nA=ip\n[pc*]\nA=host\nH=1\n",
        {"A": "ip"},
    ),
    ("brackets vanish from names: [pc1[2]] is [pc12]", "[pc1[2]]\nA=host\n", {"A": "host"}),
    ("spaces vanish from names", "[ pc 12 ]  # comment\nA=host\n", {"A": "host"}),
    ("[*] before [common] runs in its place", "[*]\nA=star\n[common]\nA=common\nC=1\n", {"A": "star"}),
    (
        "INCLUDE runs a named section at that point",
        "[clients]\nA=1\nINCLUDE=lab\nB=after\n[lab]\nA=lab\nB=lab\n",
        {"A": "lab", "B": "after"},
    ),
    ("INCLUDE any case, spaces, quotes", '[clients]\ninclude = "Lab"\n[lab]\nA=lab\n', {"A": "lab"}),
    (
        "INCLUDE of a section that already ran does nothing",
        "[clients]\nINCLUDE=lab\nA=clients\n[common]\nINCLUDE=lab\n[lab]\nA=lab\n",
        {"A": "clients"},
    ),
    (
        "INCLUDE loop runs each once",
        "[clients]\nINCLUDE=a\n[a]\nA=a\nINCLUDE=b\n[b]\nB=b\nINCLUDE=a\n",
        {"A": "a", "B": "b"},
    ),
    ("INCLUDE of nothing", "[clients]\nINCLUDE=missing\nA=1\n", {"A": "1"}),
    ("INCLUDE=server runs [server]", "[server]\nS=server\n[clients]\nINCLUDE=server\n", {"S": "server"}),
    (
        "a MAC section sets HOSTNAME, which picks the host section",
        "[00:1a:2b:3c:4d:5e]\nHOSTNAME=pc01\n[pc01]\nA=pc01\n[pc12]\nA=pc12\n",
        {"HOSTNAME": "pc01", "A": "pc01"},
    ),
    ("set twice in a section: the last wins", "[clients]\nA=1\nA=2\n", {"A": "2"}),
    ("set in two sections: the last run wins", "[00:1a:2b:3c:4d:5e]\nA=mac\n[clients]\nA=clients\n", {"A": "mac"}),
    (
        "spaces around the first = go",
        '[clients]\nA = 1\nB =2\nC= 3\nD = "a = b"\n',
        {"A": "1", "B": "2", "C": "3", "D": "a = b"},
    ),
    ("indented assignment without spaces", "[clients]\n    A=1\n\tB=2\n", {"A": "1", "B": "2"}),
    ("double quotes", '[clients]\nA="a  b"\nB="x \\"y\\" \\$z \\\\ \\q"\n', {"A": "a  b", "B": 'x "y" $z \\ \\q'}),
    (
        "single quotes are literal",
        "[clients]\nA='$HOME \\n \"'\nB='it''s'\nC=\"it's\"\n",
        {"A": '$HOME \\n "', "B": "its", "C": "it's"},
    ),
    ("backslashes", "[clients]\nA=a\\ b\\$c\\\\d\n", {"A": "a b$c\\d"}),
    ("concatenated quotes", "[clients]\nA=a\"b c\"'d e'f\n", {"A": "ab cd ef"}),
    ("empty values", "[clients]\nA=\nB=\"\"\nC=''\n", {"A": "", "B": "", "C": ""}),
    ("multi-line value", '[clients]\nA="one\ntwo"\nB=3\n', {"A": "one\ntwo", "B": "3"}),
    ("backslash-newline", "[clients]\nA=one\\\ntwo\n", {"A": "onetwo"}),
    ("comments", '[clients]\nA=1 # one\nB=x#y\nC="#"\n# D=4\n', {"A": "1", "B": "x#y", "C": "#"}),
    ("several on a line and ;", "[clients]\nA=1 B=$A; C=3;D=4\n", {"A": "1", "B": "1", "C": "3", "D": "4"}),
    ("$VAR and ${VAR} set earlier", '[clients]\nX=a\nA="$X-${X}"$X\n', {"X": "a", "A": "a-aa"}),
    (
        "no splitting or globbing in assignments",
        '[clients]\nX="a  *"\nA=$X\nB=*\n',
        {"X": "a  *", "A": "a  *", "B": "*"},
    ),
    ("$ alone is literal", '[clients]\nA=$\nB="a$ b$"\nC=a$%\n', {"A": "$", "B": "a$ b$", "C": "a$%"}),
    (
        "LTSP's own identity variables",
        '[clients]\nA="$HOSTNAME $MAC_ADDRESS $IP_ADDRESS $DEVICE"\n',
        {"A": "pc12 00:1a:2b:3c:4d:5e 10.160.0.12 eth0"},
    ),
    ("HOSTNAME with %{IP} is literal", "[clients]\nHOSTNAME=pc%{IP}\n[pc%{ip}]\nA=literal\n", {"HOSTNAME": "pc%{IP}"}),
    ("unset", "[clients]\nA=1\nB=2\n[common]\nunset A\nunset -v B\nC=${A}x\n", {"C": "x"}),
    ("export", '[clients]\nexport A=1 B\nexport C="x y"\n', {"A": "1", "C": "x y"}),
    ("no-op commands", "[clients]\n:\ntrue\nA=1\n", {"A": "1"}),
    ("section_call written out", "[clients]\nsection_call lab\n[lab]\nA=lab\n", {"A": "lab"}),
    ("a section's function called", "[clients]\nsection_lab\n[lab]\nA=lab\n", {"A": "lab"}),
    (
        "a section named twice: only the last one's lines",
        "[clients]\nA=first\nB=first\n[lab]\n[clients]\nA=second\n",
        {"A": "second"},
    ),
    (
        "[a.b] and [a:b] are one function: the last one's lines",
        "[clients]\nINCLUDE=a.b\n[a.b]\nA=dot\n[a:b]\nA=colon\n",
        {"A": "colon"},
    ),
    ("lower-case names are not returned", "[clients]\nx=1\nA=$x\n", {"A": "1"}),
    ("here-document bodies are data", "[clients]\ncat >/dev/null <<EOF\nA=1\nEOF\nB=2\n", {"B": "2"}),
    ("tab-indented header is a command, not a section", "[clients]\nA=1\n\t[pc99]\nA=2\n", {"A": "2"}),
]


@pytest.mark.parametrize(("what", "text", "expected"), CASES, ids=[case[0] for case in CASES])
def test_client_variables(what, text, expected):
    assert values(text) == expected


def test_entries_name_file_and_line():
    result = read("[clients]\nA=1\n[00:1a:2b:3c:4d:5e]\nB='x\ny'\nA=2\n")
    assert isinstance(result, Entries)
    assert isinstance(result, dict)
    assert result["A"] == Entry("2", "ltsp.conf", 6)
    assert result["B"] == Entry("x\ny", "ltsp.conf", 4)
    assert result.warnings == []
    assert result.unknown == frozenset()


# (what, identity, ltsp.conf text, expected variables)
IDENTITY_CASES = [
    (
        "unknown identity: [*] matches the empty arguments",
        NOBODY,
        "[clients]\nA=c\n[00:*]\nA=mac\n[*]\nB=star\n",
        {"A": "c", "B": "star"},
    ),
    ("unknown identity: no $HOSTNAME", NOBODY, "[clients]\nA=1\n", {"A": "1"}),
    ("no identity at all", None, "[clients]\nA=1\n[pc12]\nA=2\n", {"A": "1"}),
    (
        "an upper-case MAC is LTSP's lower case",
        Identity(None, None, "00:1A:2B:3C:4D:5E", None),
        "[00:1a:2b:3c:4d:5e]\nA=mac\n",
        {"A": "mac"},
    ),
    ("host names are not lower-cased", Identity("PC12", None, None, None), "[pc12]\nA=host\n", {}),
    (
        "an upper-case host name matches a wildcard",
        Identity("PC12", None, None, None),
        "[*12]\nA=host\n",
        {"A": "host"},
    ),
    ("IPv6 address", Identity(None, "2001:DB8::5", None, None), "[2001:db8::*]\nA=v6\n", {"A": "v6"}),
]


@pytest.mark.parametrize(("what", "identity", "text", "expected"), IDENTITY_CASES, ids=[c[0] for c in IDENTITY_CASES])
def test_identities(what, identity, text, expected):
    assert values(text, identity) == expected


def test_environ_expands_ltsp_variables():
    text = '[clients]\nLB_SERVERS="$SERVER app2"\n'
    assert values(text, environ={"SERVER": "10.0.0.1"}) == {"LB_SERVERS": "10.0.0.1 app2"}
    # The identity is what LTSP computed: it wins over the caller's environment.
    assert values('[clients]\nA="$HOSTNAME"\n', environ={"HOSTNAME": "other"}) == {"A": "pc12"}


# (what, ltsp.conf text, expected variables, expected unknown, a part of the one warning)
WARNING_CASES = [
    ("command substitution", "[clients]\nA=1\nA=$(hostname)\nB=2\n", {"B": "2"}, {"A"}, "$(...) command substitution"),
    ("backquotes", "[clients]\nA=`hostname`\n", {}, {"A"}, "`...` command substitution"),
    ("arithmetic", "[clients]\nA=$((1+2))\n", {}, {"A"}, "$((...)) arithmetic"),
    ("${X:-default}", "[clients]\nA=${X:-d}\n", {}, {"A"}, "only ${NAME} is evaluated"),
    ("special parameter", "[clients]\nA=$1\n", {}, {"A"}, "$1 special parameter"),
    ("$'...' quoting", "[clients]\nA=$'a\\tb'\n", {}, {"A"}, "dash and bash differ"),
    ("tilde", "[clients]\nA=~/x\nB=x~\n", {"B": "x~"}, {"A"}, "~ home directory"),
    ("tilde after : in an assignment", "[clients]\nA=x:~/y\n", {}, {"A"}, "~ home directory"),
    (
        "a variable LTSP sets that we do not know",
        '[clients]\nA="$SERVER x"\n',
        {},
        {"A"},
        "$SERVER is not set by ltsp.conf",
    ),
    (
        "a variable from an unknown one",
        "[clients]\nA=$(x)\nB=$A\n",
        {},
        {"A", "B"},
        ("command substitution", "$A is unknown here"),
    ),
    ("unknown, then set again", "[clients]\nA=$(x)\nA=2\n", {"A": "2"}, set(), "command substitution"),
    (
        "unquoted spaces run a command",
        "[clients]\nLB_SERVERS=app1 app2\n",
        {},
        {"LB_SERVERS"},
        "quote the value if it has spaces",
    ),
    (
        "indented KEY = value is a command",
        "[clients]\n  LB_PORT = 5\n",
        {},
        set(),
        "removes the spaces around = only when KEY starts the line",
    ),
    (
        "if block: the opening line, then each line inside",
        "[clients]\nA=1\nif [ -e /x ]; then\n  A=2\nfi\nB=3\n",
        {"B": "3"},
        {"A"},
        ("'if [ -e /x ]; then' (compound command)", "'A=2' (compound command), so A is unknown"),
    ),
    ("one-line case", "[clients]\ncase $X in a) A=1;; esac\nB=2\n", {"B": "2"}, {"A"}, "operator"),
    ("pipe", "[clients]\necho x | read A\n", {}, {"A"}, "operator |"),
    ("read", "[clients]\nread -r A B </dev/null\n", {}, {"A", "B"}, "operator <"),
    ("for loop", "[clients]\nfor A in 1 2; do B=$A; done\n", {}, {"A", "B"}, "(compound command), so A, B are unknown"),
    ("function definition", "[clients]\nf() { A=1; }\nB=2\n", {"B": "2"}, {"A"}, "operator ( )"),
    ("eval", "[clients]\neval A=1\n", {}, {"A"}, "it may set any variable"),
    ("other commands", "[clients]\nmodprobe x\nA=1\n", {"A": "1"}, set(), "'modprobe x'"),
    (
        "unterminated double quote: that line skipped",
        '[clients]\nA="x\nB=2\n',
        {"B": "2"},
        set(),
        'unterminated " quote',
    ),
    ("unterminated single quote", "[clients]\nA='x\nB=2\n", {"B": "2"}, set(), "unterminated ' quote"),
    ("unterminated $(", "[clients]\nA=$(x\nB=2\n", {"B": "2"}, set(), "unterminated $("),
    ("unterminated ${", "[clients]\nA=${x\nB=2\n", {"B": "2"}, set(), "unterminated ${"),
    ("unterminated backquote", "[clients]\nA=`x\nB=2\n", {"B": "2"}, set(), "unterminated `"),
    ("export with braces", "[clients]\nexport A={a,b}\n", {}, {"A"}, "bash expands braces"),
    ("section_call with an unknown argument", "[clients]\nsection_call $X\n", {}, set(), "unquoted $X"),
    (
        "indented INCLUDE is a variable",
        "[clients]\n  INCLUDE=lab\n[lab]\nA=1\n",
        {"INCLUDE": "lab"},
        set(),
        "is indented",
    ),
    ("empty section name", "[clients]\nA=1\n[]\nA=2\n", {"A": "1"}, set(), "an empty section name"),
    ("empty | alternative", "[clients]\nA=1\n[a|]\nA=2\n", {"A": "1"}, set(), "an empty | alternative"),
    ("a section named call", "[clients]\nA=1\n[call]\nA=2\n", {"A": "1"}, set(), "ini2sh's own"),
    ("a section named twice", "[clients]\nA=1\n[clients]\nB=2\n", {"B": "2"}, set(), "keeps only the last"),
    ("lower-case lb_ name", "[clients]\nlb_servers=a\n", {}, set(), "lb_servers is not LB_SERVERS"),
    ("no section at all", "A=1\n", {"A": "1"}, set(), "no [section] at all"),
    ("CRLF line ends", "[clients]\r\nA=1\r\n", {"A": "1\r"}, set(), "CRLF line ends"),
]


@pytest.mark.parametrize(
    ("what", "text", "expected", "unknown", "warning"), WARNING_CASES, ids=[c[0] for c in WARNING_CASES]
)
def test_warnings(what, text, expected, unknown, warning):
    """Each case: the values, the unknown names, and one warning per expected part, in order."""
    result = read(text)
    assert {name: entry.value for name, entry in result.items()} == expected
    assert result.unknown == unknown
    parts = (warning,) if isinstance(warning, str) else warning
    assert len(result.warnings) == len(parts), result.warnings
    for part, got in zip(parts, result.warnings):
        assert part in got
        assert got.startswith("ltsp.conf:")
        assert "\n" not in got


def test_warning_names_line_and_text():
    (warning,) = read("[clients]\nA=1\n\nLB_SERVERS=$(cat /etc/pool)\n").warnings
    assert warning == (
        "ltsp.conf:4: not evaluated: 'LB_SERVERS=$(cat /etc/pool)' ($(...) command substitution), "
        "so LB_SERVERS is unknown"
    )


def lb_or_server(name):
    return name.startswith("LB_") or name == "SERVER"


# (what, a [clients] line, whether a caller reading only LB_* and SERVER is told about it)
WANTED_CASES = [
    ("$(...) of another variable", "TIMEZONE=$(cat /etc/timezone)", False),
    ("backquotes of another variable", "X=`date`", False),
    ("a command that sets nothing", "mkdir -p /srv/x", False),
    ("an unknown $VAR in another variable", 'A="$NOPE"', False),
    ("export with a brace", "export X={a,b}", False),
    ("$(...) of LB_SERVERS", "LB_SERVERS=$(cat /p)", True),
    ("$(...) of SERVER", "SERVER=$(cat /s)", True),
    ("a compound setting LB_MAX_LOAD", "if true; then LB_MAX_LOAD=2; fi", True),
    ("a compound setting others only", "if true; then A=2; fi", False),
    ("a line of two commands, one of them LB_", "true; LB_PORT=$(y)", True),
    ("eval may set anything", 'eval "$X"', True),
    ("source may set anything", ". /etc/pool.sh", True),
    ("a section call not evaluated", 'section_call "$NOPE"', True),
    ("a syntax error is always said", "B='unterminated", True),
]


@pytest.mark.parametrize(("what", "line", "told"), WANTED_CASES, ids=[c[0] for c in WANTED_CASES])
def test_wanted_leaves_out_warnings_about_lines_touching_other_variables(what, line, told):
    text = f"[clients]\n{line}\n"
    everything = read(text).warnings
    assert len(everything) == 1, everything  # without WANTED every line is said
    assert read(text, wanted=lb_or_server).warnings == (everything if told else [])


def test_wanted_keeps_the_warning_about_the_wanted_variable_of_a_line():
    text = "[clients]\nA=$(x); LB_PORT=$(y)\n"
    assert len(read(text).warnings) == 2
    assert read(text, wanted=lb_or_server).warnings == [
        "ltsp.conf:2: not evaluated: 'A=$(x); LB_PORT=$(y)' ($(...) command substitution), so LB_PORT is unknown"
    ]


def test_host_name_case_warning():
    result = read("[pc12]\nA=1\n", Identity("PC12", None, None, None))
    assert dict(result) == {}
    assert result.warnings == [
        "ltsp.conf:1: section [pc12] does not apply to host 'PC12': "
        "LTSP compares host names case-sensitively with lower-cased section names"
    ]


def test_unknown_hostname_after_mac_sections():
    result = read("[00:1a:2b:3c:4d:5e]\nHOSTNAME=$(x)\n[pc12]\nA=1\n")
    assert dict(result) == {}
    assert any("no host name section applied" in w for w in result.warnings)


def test_sections_that_do_not_run_are_not_reported_but_bad_syntax_is():
    result = read("[pc99]\nmodprobe x\nA=$(y)\nB='unterminated\n")
    assert dict(result) == {}
    assert result.warnings == ["ltsp.conf:4: unterminated ' quote in \"B='unterminated\": line skipped"]


def test_nul_byte_is_the_one_error():
    with pytest.raises(LtspConfError) as caught:
        read("[clients]\nA=1\nB=\0\n")
    assert str(caught.value) == "ltsp.conf:3: NUL byte: not a text file"
    assert isinstance(caught.value, LtsConfError)
    assert isinstance(caught.value, GetHostsError)
    assert (caught.value.path, caught.value.lineno) == ("ltsp.conf", 3)


def test_bytes_are_read_as_utf8():
    assert ltsp_conf_entries("[clients]\nA=é\n".encode(), "x", CLIENT)["A"].value == "é"
    assert looks_like_ltsp_conf(b"[clients]\n")


def test_long_include_chains_do_not_recurse():
    count = 3000  # deeper than Python's recursion limit
    text = "[clients]\nINCLUDE=s0\n" + "".join(f"[s{i}]\nINCLUDE=s{i + 1}\nV{i}={i}\n" for i in range(count))
    result = ltsp_conf_entries(text, "x", CLIENT)
    assert len(result) == count
    assert result["V0"].value == "0"


# (what, text, default, expected)
DETECTION_CASES = [
    ("[clients]", "[clients]\nLB_SERVERS=a\n", False, True),
    ("[common]", "# x\n[common]\n", False, True),
    ("[server]", "[Server]\n", False, True),
    ("INCLUDE=", "[pc01]\nINCLUDE=lab\n[lab]\n", False, True),
    ("include = any case", "[pc01]\ninclude = lab\n", False, True),
    ("[Default]", "[Default]\nLB_SERVERS = a\n", True, False),
    ("[default] with spaces", "  [ default ]  # LTSP 5\n", True, False),
    ("LTSP 5 include", '[Default]\ninclude "more.conf"\n', True, False),
    ("LTSP 20+ markers win over a section called default", "[default]\n[clients]\n", False, True),
    ("neither: the default", "[00:11:22:33:44:55]\nA=1\n", False, False),
    ("neither: the default, True", "[00:11:22:33:44:55]\nA=1\n", True, True),
    ("empty", "", True, True),
    ("tab-indented [clients] is no section", "\t[clients]\n", False, False),
    ("# [clients] is a comment", "# [clients]\n[Default]\n", True, False),
]


@pytest.mark.parametrize(("what", "text", "default", "expected"), DETECTION_CASES, ids=[c[0] for c in DETECTION_CASES])
def test_looks_like_ltsp_conf(what, text, default, expected):
    assert looks_like_ltsp_conf(text, default=default) is expected


def test_lts_conf_example_is_ltsp5_and_ltsp_conf_example_is_ltsp20():
    with open(os.path.join(ROOT, "lts.conf.example"), encoding="utf-8") as handle:
        assert looks_like_ltsp_conf(handle.read()) is False
    with open(EXAMPLE, encoding="utf-8") as handle:
        assert looks_like_ltsp_conf(handle.read()) is True


SAMPLE = (
    "A=unnamed\n"
    "[clients]\n"
    'LB_SERVERS = "app1 app2"\n'
    'X=\'a b\' Y="$X \\"c\\" ${X}"; Z=`x`\n'
    'M="multi\nline" # comment\n'
    "INCLUDE=lab\n"
    "if true; then A=1; fi\n"
    "cat <<-EOF\n\tA=2\n\tEOF\n"
    "[lab|lab2]\n"
    "LB_PORT=$((1+1)) ${A:-x} $'y'\n"
    "[00:1a:*]\n"
)


def test_every_truncation_reads_or_raises_the_one_error():
    for end in range(len(SAMPLE) + 1):
        for text in (SAMPLE[:end], SAMPLE[end:], SAMPLE[:end] + "\0" * (end % 2)):
            try:
                result = ltsp_conf_entries(text, "x", CLIENT)
            except LtspConfError:
                continue
            assert all(isinstance(e, Entry) and isinstance(e.value, str) for e in result.values())


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]|*?=#'\"\\$`(){};&<>~: \t\nabcAB01-_.")), max_size=200))
def test_anything_reads_or_raises_the_one_error(text):
    try:
        result = ltsp_conf_entries(text, "x", CLIENT)
    except LtspConfError:
        return
    assert all(isinstance(e, Entry) for e in result.values())
    assert all("\n" not in warning for warning in result.warnings)


def test_import_stays_light():
    code = "import sys, get_hosts.ltspconf; print('re' in sys.modules, 'subprocess' in sys.modules)"
    assert run_python_without_site(code) == "False False"


# --- ltsp.conf.example -------------------------------------------------------------------------


def example_text():
    with open(EXAMPLE, encoding="utf-8") as handle:
        return handle.read()


POOL = "app1 app2 app3 app4:3377 [2001:db8::10]:377"
# LB_ALGORITHM is left unset in [clients]: a set one would be sent to the balancer too (the default is two-choice).
SITE = {
    "LB_SERVERS": POOL,
    "LB_PORT": "377",
    "LB_TIMEOUT": "1000",
    "LB_MAX_LOAD": "3.0",
    "LB_SKIP_SWAPPING": "true",
}
LAB2 = {**SITE, "LB_SERVERS": "lab2-app1 lab2-app2", "LB_ALGORITHM": "mac-hash"}
del LAB2["LB_MAX_LOAD"]

# (what, identity, expected)
EXAMPLE_CASES = [
    ("any client", Identity("pc1", "10.0.0.5", "00:11:22:33:44:55", "eth0"), SITE),
    ("unknown identity", NOBODY, SITE),
    ("lab 2 by MAC", Identity("pc1", "10.0.0.5", "00:1A:2B:3C:4D:02", "eth0"), LAB2),
    ("lab 2 by a MAC pattern", Identity("pc1", "10.0.0.5", "00:1a:2b:3c:4e:77", "eth0"), LAB2),
    ("lab 2 by host name", Identity("lab2-ws7", "10.0.0.5", "00:11:22:33:44:55", "eth0"), LAB2),
    (
        "old room",
        Identity("oldroom-3", "10.0.0.5", None, None),
        {**SITE, "LB_MAX_RESPONSE_MS": "150", "LB_MAX_LOAD": "1.5"},
    ),
    (
        "balancer building",
        Identity("pc1", "10.20.3.4", None, None),
        {
            **SITE,
            "LB_ALGORITHM": "loadbalancer",
            "LB_BALANCER": "balancer1 balancer2:8377",
            "LB_BALANCER_TIMEOUT": "300",
        },
    ),
    (
        "lab 2 host in the balancer building: the host name section wins",
        Identity("lab2-ws1", "10.20.3.4", None, None),
        {**LAB2, "LB_BALANCER": "balancer1 balancer2:8377", "LB_BALANCER_TIMEOUT": "300"},
    ),
    (
        "pinned client",
        Identity("pc1", "198.18.0.77", None, None),
        {**SITE, "LB_SERVERS": "app4:3377", "LB_ALGORITHM": "fixed"},
    ),
]


@pytest.mark.parametrize(("what", "identity", "expected"), EXAMPLE_CASES, ids=[c[0] for c in EXAMPLE_CASES])
def test_ltsp_conf_example(what, identity, expected):
    result = ltsp_conf_entries(example_text(), EXAMPLE, identity)
    assert {name: entry.value for name, entry in result.items()} == expected
    assert result.warnings == []


def test_ltsp_conf_example_documents_every_variable():
    text = example_text()
    for name in LB_VARIABLES:
        assert f"# {name}:" in text, name
    for recipe in ("X :0 vt7 -once -query", "xdmcp-manager=", "xfreerdp /v:", "pyhoca-cli --server", "INCLUDE=lab2"):
        assert recipe in text, recipe


def test_ltsp_conf_example_is_shell_as_ltsp_initrd_checks():
    # `ltsp initrd` refuses an ltsp.conf that `sh -n` rejects.
    done = subprocess.run(["sh", "-n", EXAMPLE], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


# --- The oracle: LTSP's own ini2sh, section_call and eval_ini ------------------------------------

LB_VARIABLES = [variable.name for variable in VARIABLES]  # get_hosts' own table of LB_* variables
CONFIG_SH = "usr/share/ltsp/common/ltsp/55-config.sh"
EXAMPLE_IN_PACKAGE = "usr/share/ltsp/common/ltsp/ltsp.conf"
# eval_ini picks the client's sections when this holds; the test machine is no LTSP client.
CLIENT_TEST = '[ -d /run/ltsp/client ] || [ "$$" = "1" ]'
PRESET = ("HOSTNAME", "MAC_ADDRESS", "IP_ADDRESS", "DEVICE")
SHELLS = ("sh", "bash")

Ltsp = namedtuple("Ltsp", "config_sh example deb")

# Sourcing 55-config.sh only defines functions (it runs nothing at top level),
# so this sources LTSP's file as is, with eval_ini's client test made true in a
# copy: eval_ini then runs exactly what it runs on a client,
#     section_call unnamed clients common "$MAC_ADDRESS" "$IP_ADDRESS"
#     section_call "$HOSTNAME"
# over LTSP's own ini2sh output. re, rw, die and warn live in LTSP's main
# script (which would run all of LTSP): these stubs do what they do for this.
HARNESS = r"""
die() { printf 'die: %s\n' "$*" >&2; exit 97; }
warn() { printf 'warn: %s\n' "$*" >&2; }
re() { "$@" || die "failed: $*"; }
rw() { "$@" || true; }
. "$1"
conf=$2
shift 2
@IDENTITY@
eval_ini "$conf" ltsp >&2  # what ltsp.conf's own commands print must not mix with the values
for oracle_name in "$@"; do
    eval "oracle_set=\${$oracle_name+set}"
    if [ "$oracle_set" = set ]; then
        eval "oracle_value=\$$oracle_name"
        printf '%s=%s\0' "$oracle_name" "$oracle_value"
    fi
done
"""


def _run(command, cwd=None):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def _fetch_ltsp_deb(directory):
    """Download Debian's ltsp .deb into DIRECTORY -> its path; pytest.skip with apt's words when it cannot."""
    local = os.environ.get("LTSP_DEB")  # an ltsp_*.deb already at hand (offline machines)
    for tool in ("dpkg-deb", "awk", *SHELLS, *(() if local else ("apt-get",))):
        if shutil.which(tool) is None:
            pytest.skip(f"the ltsp oracle needs {tool}, which this machine lacks (not Debian?)")
    if local:
        return local
    done = _run(["apt-get", "download", "ltsp"], cwd=directory)
    if done.returncode != 0 and os.geteuid() == 0:
        _run(["apt-get", "update"])  # a fresh CI image may have no package lists yet
        done = _run(["apt-get", "download", "ltsp"], cwd=directory)
    if done.returncode != 0:
        said = " / ".join(line for line in done.stderr.splitlines() if line.startswith("E:")) or done.stderr.strip()
        why = "" if os.geteuid() == 0 else " (not root, so no apt-get update was tried; CI runs as root)"
        pytest.skip(f"apt-get download ltsp failed{why}: {said}")
    debs = [name for name in os.listdir(directory) if name.startswith("ltsp_") and name.endswith(".deb")]
    assert len(debs) == 1, debs
    return os.path.join(directory, debs[0])


@pytest.fixture(scope="session")
def ltsp(tmp_path_factory):
    """Debian's ltsp package, extracted (not installed) once per test session."""
    directory = tmp_path_factory.mktemp("ltsp-package")
    deb = _fetch_ltsp_deb(str(directory))
    root = directory / "root"
    done = _run(["dpkg-deb", "-x", deb, str(root)])
    assert done.returncode == 0, done.stderr
    config_sh = root / CONFIG_SH
    assert config_sh.is_file(), f"{deb} has no {CONFIG_SH}: the oracle must be updated to this ltsp"
    original = config_sh.read_text()
    assert original.count(CLIENT_TEST) == 1, f"eval_ini in {deb} changed: the oracle must be updated"
    patched = directory / "55-config-client.sh"
    patched.write_text(original.replace(CLIENT_TEST, "true"))
    example = root / EXAMPLE_IN_PACKAGE
    if not example.is_file():
        found = sorted(p for p in root.rglob("ltsp.conf") if p.is_file())
        assert found, f"{deb} ships no example ltsp.conf"
        example = found[0]
    return Ltsp(str(patched), str(example), deb)


def _preset(identity, environ):
    """What LTSP had set before eval_ini, as ltsp_conf_entries assumes it: identity over environ."""
    preset = dict(environ or {})
    fields = {
        "HOSTNAME": identity.hostname,
        "MAC_ADDRESS": identity.mac and identity.mac.lower(),
        "IP_ADDRESS": identity.ip and identity.ip.lower(),
        "DEVICE": identity.interface,
    }
    preset.update((name, value) for name, value in fields.items() if value)
    return preset


def _shell_quote(value):
    return "'" + value.replace("'", "'\\''") + "'"


def run_oracle(ltsp, shell, tmp_path, text, identity, names, environ=None):
    """Run LTSP's eval_ini on ltsp.conf TEXT for IDENTITY in SHELL, printing NAMES -> CompletedProcess."""
    conf = tmp_path / "ltsp.conf"
    conf.write_text(text)
    preset = _preset(identity, environ)
    lines = [f"{name}={_shell_quote(value)}" for name, value in preset.items()]
    lines += [f"unset {name}" for name in PRESET if name not in preset]  # LTSP unsets a HOSTNAME of "(none)"
    script = tmp_path / "harness.sh"
    script.write_text(HARNESS.replace("@IDENTITY@", "\n".join(lines)))
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]
    return subprocess.run(
        [*env, shell, str(script), ltsp.config_sh, str(conf), *names], capture_output=True, timeout=60
    )


def oracle(ltsp, shell, tmp_path, text, identity, names, environ=None):
    """NAME -> value for the NAMES set after LTSP's eval_ini runs ltsp.conf TEXT for IDENTITY in SHELL."""
    done = run_oracle(ltsp, shell, tmp_path, text, identity, names, environ)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    fields = done.stdout.decode("utf-8", "surrogateescape").split("\0")[:-1]
    return dict(field.split("=", 1) for field in fields)


def ours(text, identity, names, environ=None):
    """The same NAMES from ltsp_conf_entries; LTSP's preset values where ltsp.conf does not set them."""
    result = ltsp_conf_entries(text, "ltsp.conf", identity, environ)
    assert not result.unknown, result.warnings
    merged = _preset(identity, environ)
    merged.update((name, entry.value) for name, entry in result.items())
    return {name: merged[name] for name in names if name in merged}


def names_in(text):
    """Every variable the text might set, and every LB_ variable: what to compare."""
    return sorted(set(LB_VARIABLES) | set(re.findall(r"\b([A-Z][A-Z0-9_]*) *=", text)) | {"HOSTNAME"})


ORACLE_MAIN = """\
# Before any section: the unnamed section, run first.
LB_UNNAMED="before any section"
LB_TIMEOUT=9999

[server]
LB_SERVERS="server-only"
LB_SERVER_ONLY=1

[common]
LB_PORT = 3377
LB_COMMON='common $NOT_EXPANDED'

[clients]
LB_SERVERS = "app1 app2 app3"
LB_ALGORITHM=two-choice
LB_PORT=377
LB_TIMEOUT=1000
LB_TIMEOUT = 1500
LB_QUOTES="a \\"b\\" \\$c \\\\ d \\q"'  e'\\ f
LB_MULTI="line one
line two"
LB_EXPAND="$LB_SERVERS app4"
LB_BRACED="${LB_ALGORITHM}-x"
LB_IDENTITY="host:$HOSTNAME"
X=1; LB_SEMI=two LB_SEMI2=$X   # a comment
LB_HASH=a#b
LB_EMPTY=
LB_DOLLAR=a$
export LB_EXPORTED="exported value"
INCLUDE=defaults
LB_AFTER_INCLUDE=clients

[defaults]
LB_MAX_LOAD=3.0
LB_SKIP_SWAPPING=true
LB_ALGORITHM=weighted
LB_AFTER_INCLUDE=defaults

[b8:27:eb:*|dc:a6:32:*|e4:5f:01:*]
LB_SERVERS="pi1 pi2"
INCLUDE = Lab
LB_BALANCER=balancer1

[00:1A:2B:3C:4D:5E]
LB_ALGORITHM=mac-hash
HOSTNAME=renamed
LB_MAC_SET=yes

[10.160.0.*|192.168.67.2?]
LB_BALANCER_TIMEOUT=200
LB_ALGORITHM=random

[lab]
LB_MAX_RESPONSE_MS=150
LB_ALGORITHM=best-rated
LB_ALGORITHM=fixed
LB_LAB=lab

[renamed]
LB_HOST=renamed

[pc1?|pc2*]
LB_HOST=pc-pattern
LB_TIMEOUT=800
unset LB_EMPTY
INCLUDE=lab

[*]
LB_STAR=star
"""

ORACLE_ODD = """\
[clients]
LB_SERVERS="first clients"
[common]
LB_PORT=2
[clients]
LB_SERVERS="second clients"
LB_ALGORITHM=random
\t[pc12]
  LB_TIMEOUT = 5
  INCLUDE=a:b
LB_MAX_LOAD=1
[a.b]
LB_DOT=dot
[a:b]
LB_COLON=colon
[pc1[2]]
LB_BRACKETS=pc12
section_call a.b
[00:1a:2b:3c:4d:5e]
LB_MAX_LOAD=2
LB_MAX_LOAD=3
section_pc12
"""

ORACLE_CRLF = '[clients]\r\nLB_SERVERS="a b"\r\nLB_PORT=377\r\n[pc12]\r\nLB_TIMEOUT=5\r\n'

# [*] before [common] and [clients]: it runs in their place.
ORACLE_STAR = "[common]\nLB_PORT=2\n[*]\nLB_STAR=star\nLB_PORT=1\n[clients]\nLB_SERVERS=c\n[00:1a:*]\nLB_MAC=1\n"

ORACLE_ENVIRON = (
    '[clients]\nLB_SERVERS="$SERVER app2"\nLB_BALANCER=${SERVER}:8377\n'
    'LB_IDENTITY="$HOSTNAME/$MAC_ADDRESS/$IP_ADDRESS/$DEVICE"\n'
)

ORACLE_TEXTS = {"main": ORACLE_MAIN, "odd": ORACLE_ODD, "star": ORACLE_STAR, "crlf": ORACLE_CRLF}

ORACLE_IDENTITIES = {
    "mac section sets HOSTNAME": Identity("pc12", "10.160.0.12", "00:1a:2b:3c:4d:5e", "eth0"),
    "raspberry pi, host pattern": Identity("pc15", "192.168.67.20", "b8:27:eb:12:34:56", "eth0"),
    "ip pattern, no host name": Identity(None, "10.160.0.99", "00:11:22:33:44:55", "enp3s0"),
    "nothing matches but [*]": Identity("other", "172.16.0.1", "00:11:22:33:44:66", "eth0"),
    "upper-case host name": Identity("PC12", "172.16.0.1", "00:11:22:33:44:66", "eth0"),
    "unknown identity": NOBODY,
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("identity_name", list(ORACLE_IDENTITIES))
@pytest.mark.parametrize("text_name", list(ORACLE_TEXTS))
def test_oracle(ltsp, tmp_path, shell, text_name, identity_name):
    text, identity = ORACLE_TEXTS[text_name], ORACLE_IDENTITIES[identity_name]
    names = names_in(text)
    assert ours(text, identity, names) == oracle(ltsp, shell, tmp_path, text, identity, names)


def test_oracle_sees_what_the_tables_say(ltsp, tmp_path):
    """The oracle runs for real: a few values spelled out, so a harness printing nothing cannot pass."""
    identity = ORACLE_IDENTITIES["mac section sets HOSTNAME"]
    got = oracle(ltsp, "sh", tmp_path, ORACLE_MAIN, identity, names_in(ORACLE_MAIN))
    assert got["LB_SERVERS"] == "app1 app2 app3"
    assert got["LB_ALGORITHM"] == "random"  # IP section after the MAC section
    assert got["LB_HOST"] == "renamed"  # HOSTNAME set by the MAC section picks [renamed]
    assert got["LB_PORT"] == "3377"  # [common] after [clients]
    assert got["LB_TIMEOUT"] == "1500"  # set twice: the last
    assert got["LB_QUOTES"] == 'a "b" $c \\ d \\q  e f'
    assert got["LB_MULTI"] == "line one\nline two"
    assert got["LB_AFTER_INCLUDE"] == "clients"
    assert got["LB_COMMON"] == "common $NOT_EXPANDED"
    assert "LB_SERVER_ONLY" not in got
    assert "LB_STAR" not in got


@pytest.mark.parametrize("shell", SHELLS)
def test_oracle_environ(ltsp, tmp_path, shell):
    identity, environ = ORACLE_IDENTITIES["mac section sets HOSTNAME"], {"SERVER": "10.0.0.1"}
    names = names_in(ORACLE_ENVIRON)
    expected = oracle(ltsp, shell, tmp_path, ORACLE_ENVIRON, identity, names, environ)
    assert expected["LB_SERVERS"] == "10.0.0.1 app2"
    assert expected["LB_IDENTITY"] == "pc12/00:1a:2b:3c:4d:5e/10.160.0.12/eth0"
    assert ours(ORACLE_ENVIRON, identity, names, environ) == expected


# Pieces of random ltsp.conf files: sections, patterns, INCLUDEs, quoting, and shell the reader leaves alone.
RANDOM_SECTIONS = [
    *("clients", "common", "server", "00:1a:2b:3c:4d:5e", "00:1A:*", "00:1a:2b:*|aa:*", "10.160.0.12", "10.160.*"),
    *("pc12", "pc1?", "pc*|lab*", "*", "lab", "Lab", "a.b", "a:b", "renamed", "pc1[2]", " pc 12 ", "unnamed", "x|pc12"),
]
RANDOM_NAMES = ["LB_SERVERS", "LB_PORT", "LB_ALGORITHM", "HOSTNAME"]
RANDOM_VALUES = [
    *("1", '"a b"', "'x y'", "a\\ b", '"$LB_SERVERS-x"', "${LB_PORT}", '"q\\"r"', "''", "", 'a"b"c'),
    *('"multi\nline"', "$HOSTNAME", '"$MAC_ADDRESS"', "pc%{IP}", "renamed", "lab", "a#b", '"#x"', "$", '"a$"'),
]
RANDOM_SHELL = [
    *("\t[pc12]", "  LB_PORT = 5", "  INCLUDE=lab", "LB_PORT=1 \\\n2", 'export LB_PORT="e x" LB_ALGORITHM'),
    *("echo hi", "if false; then\nLB_PORT=never\nfi", "cat >/dev/null <<EOF\nLB_PORT=heredoc\nEOF", "true; LB_PORT=t"),
    *("[ pc 12 ] # sp", "[Clients]", "[PC12]", "LB_PORT='it'\\''s'", "\tLB_PORT=tab", "lb_port=low", "section_pc12"),
    *("[pc1[2]]", "section_lab", "LB_SERVERS=x echo", ":", "LB_PORT=x~", "LB_SERVERS=$(echo x)"),
]
RANDOM_IDENTITIES = [
    Identity("pc12", "10.160.0.12", "00:1a:2b:3c:4d:5e", "eth0"),
    Identity("lab3", "10.160.0.7", "aa:00:00:00:00:01", "eth0"),
    Identity("other", "1.2.3.4", "00:11:22:33:44:55", "eth1"),
    Identity("renamed", "10.9.9.9", "00:1a:ff:ff:ff:ff", "eth0"),
    NOBODY,
]


def random_file(seed):
    """A random ltsp.conf (it starts with [clients]: LTSP cannot read a file without sections) and identity."""
    rnd = random.Random(seed)
    lines = ["[clients]"]
    for _ in range(rnd.randint(1, 30)):
        draw = rnd.random()
        if draw < 0.12:
            lines.append(rnd.choice(RANDOM_SHELL))
        elif draw < 0.27:
            lines.append(f"[{rnd.choice(RANDOM_SECTIONS)}]")
        elif draw < 0.37:
            lines.append(f"INCLUDE{rnd.choice(['=', ' = '])}{rnd.choice(['lab', 'a.b', 'a:b', 'pc12', 'LAB', 'none'])}")
        elif draw < 0.42:
            lines.append(f"unset {rnd.choice(RANDOM_NAMES[:3])}")
        else:
            spaced = rnd.choice(["=", " = ", " =", "= "])
            more = f"; {rnd.choice(RANDOM_NAMES[:3])}={rnd.choice(RANDOM_VALUES[:5])}" if draw > 0.95 else ""
            lines.append(f"{rnd.choice(RANDOM_NAMES)}{spaced}{rnd.choice(RANDOM_VALUES)}{more}")
    return "\n".join(lines) + "\n", rnd.choice(RANDOM_IDENTITIES)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("seed", range(25))
def test_oracle_on_random_files(ltsp, tmp_path, shell, seed):
    """Random files: wherever the reader says it knows every value, LTSP agrees."""
    text, identity = random_file(seed)
    result = ltsp_conf_entries(text, "ltsp.conf", identity)
    names = names_in(text)
    got = oracle(ltsp, shell, tmp_path, text, identity, names)
    if result.unknown:  # the reader said which values it leaves out: the others must still agree
        got = {name: value for name, value in got.items() if name not in result.unknown}
        names = [name for name in names if name not in result.unknown]
        merged = _preset(identity, None)
        merged.update((name, entry.value) for name, entry in result.items())
        assert {name: merged[name] for name in names if name in merged} == got
    else:
        assert ours(text, identity, names) == got


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("text", ["", "# comments only\n", "LB_SERVERS=a\n"])
def test_oracle_fails_without_sections(ltsp, tmp_path, shell, text):
    """Why a file without sections gets a warning: LTSP's own ini2sh output is broken shell then."""
    done = run_oracle(ltsp, shell, tmp_path, text, CLIENT, ["LB_SERVERS"])
    assert done.returncode != 0
    assert b"nterminated" in done.stderr or b"unexpected EOF" in done.stderr, done.stderr
    warnings = ltsp_conf_entries(text, "ltsp.conf", CLIENT).warnings
    assert warnings == [
        "ltsp.conf: no [section] at all: LTSP cannot evaluate such a file; put the lines under [clients]"
    ]


# The example Debian ships (sections [server], [common], [clients], a MAC, a | pattern, a host name,
# [crt_monitor] with quoted X_ values) with LB_ lines appended: the first lands in [crt_monitor],
# then a second [clients] replaces the first, as LTSP does.
APPENDED = """
LB_MAX_LOAD=2.5
[clients]
LB_SERVERS="app1 app2"
LB_ALGORITHM=two-choice
[61:6c:6b:69:73:67]
LB_ALGORITHM=mac-hash
INCLUDE=crt_monitor
[b8:27:eb:*|dc:a6:32:*|e4:5f:01:*]
LB_SERVERS='pi-app1 pi-app2'
[administrator-pc]
LB_ALGORITHM=fixed
LB_SERVERS=admin-app
"""

PACKAGE_EXAMPLE_IDENTITIES = {
    "the example's MAC": Identity("pc01", "192.168.67.20", "61:6c:6b:69:73:67", "eth0"),
    "raspberry pi": Identity("pi7", "192.168.67.21", "dc:a6:32:01:02:03", "eth0"),
    "administrator-pc": Identity("administrator-pc", "192.168.67.22", "00:11:22:33:44:55", "eth0"),
    "any client": Identity("pc02", "192.168.67.23", "00:11:22:33:44:56", "eth0"),
    "unknown identity": NOBODY,
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("identity_name", list(PACKAGE_EXAMPLE_IDENTITIES))
def test_oracle_on_the_packages_example(ltsp, tmp_path, shell, identity_name):
    with open(ltsp.example, encoding="utf-8") as handle:
        text = handle.read() + APPENDED
    assert looks_like_ltsp_conf(text)
    identity = PACKAGE_EXAMPLE_IDENTITIES[identity_name]
    names = [*names_in(text), "X_HORIZSYNC", "X_VERTREFRESH", "X_MODES"]
    expected = oracle(ltsp, shell, tmp_path, text, identity, names)
    assert ours(text, identity, names) == expected
    if identity_name == "the example's MAC":
        assert expected["X_MODES"] == '"1024x768" "800x600" "640x480"'
        assert expected["LB_MAX_LOAD"] == "2.5"


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("what", [case[0] for case in EXAMPLE_CASES])
def test_oracle_on_ltsp_conf_example(ltsp, tmp_path, shell, what):
    identity = next(case[1] for case in EXAMPLE_CASES if case[0] == what)
    text = example_text()
    names = names_in(text)
    assert ours(text, identity, names) == oracle(ltsp, shell, tmp_path, text, identity, names)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_oracle_on_the_tables(ltsp, tmp_path, shell, case):
    """Every table case above, run by LTSP too: the tables say nothing LTSP would not."""
    _, text, expected = case
    names = sorted(set(names_in(text)) | set(expected))
    assert ours(text, CLIENT, names) == oracle(ltsp, shell, tmp_path, text, CLIENT, names)


# --- The server's view: what the ltsp command sets on the LTSP server (ltsp-update-sshkeys' BASE_DIR) ---

# (what, ltsp.conf text, the variables set on the server)
SERVER_CASES = [
    (
        "server over common over unnamed",
        "A=u\nB=u\nC=u\n[server]\nA=s\n[common]\nA=c\nB=c\n",
        {"A": "s", "B": "c", "C": "u"},
    ),
    ("clients and host sections never", "[clients]\nA=c\n[pc01]\nA=p\n[00:11:22:33:44:55]\nA=m\n", {}),
    ("INCLUDE from server", "[server]\nINCLUDE=paths\n[paths]\nBASE_DIR=/data/ltsp\n", {"BASE_DIR": "/data/ltsp"}),
    ("INCLUDE chain from common", "[common]\nINCLUDE = A\n[a]\nINCLUDE=b\n[b]\nX='a b'\n", {"X": "a b"}),
    ("INCLUDE from clients only", "[clients]\nINCLUDE=paths\n[paths]\nBASE_DIR=/p\n", {}),
    ("[*] runs for common, then never again", "[*]\nA=star\n[server]\nA=s\n", {"A": "star"}),
    ("[*] after them runs for the MAC", "[common]\nC=1\n[server]\nA=s\n[*]\nA=star\n", {"C": "1", "A": "star"}),
    ("a MAC pattern naming the server does not", "[server]\nA=s\n[00:11:*]\nA=mac\n", {"A": "s"}),
    ("[server] sets HOSTNAME: its section", "[server]\nHOSTNAME=srv\n[srv]\nA=h\n", {"HOSTNAME": "srv", "A": "h"}),
    ("unset", "[common]\nA=c\n[server]\nunset A\n", {}),
    ("expansion of what it set", '[server]\nD=/data\nBASE_DIR="$D/ltsp"\n', {"D": "/data", "BASE_DIR": "/data/ltsp"}),
]


@pytest.mark.parametrize(("what", "text", "expected"), SERVER_CASES, ids=[case[0] for case in SERVER_CASES])
def test_server_variables(what, text, expected):
    result = ltsp_conf_server_entries(text, "ltsp.conf")
    assert {name: entry.value for name, entry in result.items()} == expected
    assert not result.unknown


def test_server_entries_name_the_line_and_why_a_variable_is_unknown():
    text = "[server]\nINCLUDE=paths\n[paths]\nBASE_DIR=/a\nBASE_DIR=$(cat /b)\nX=1; read Y Z\n"
    result = ltsp_conf_server_entries(text, "ltsp.conf")

    assert result["X"] == Entry("1", "ltsp.conf", 6)
    assert result.unknown == {"BASE_DIR", "Y", "Z"}
    assert result.why_unknown == {
        "BASE_DIR": "ltsp.conf:5: not evaluated: 'BASE_DIR=$(cat /b)' ($(...) command substitution), "
        "so BASE_DIR is unknown",
        "Y": "ltsp.conf:6: not evaluated: 'X=1; read Y Z' (get_hosts evaluates assignments only), so Y, Z are unknown",
        "Z": "ltsp.conf:6: not evaluated: 'X=1; read Y Z' (get_hosts evaluates assignments only), so Y, Z are unknown",
    }
    with pytest.raises(LtspConfError):
        ltsp_conf_server_entries(b"[server]\nA=\0\n", "ltsp.conf")


@pytest.fixture(scope="session")
def ltsp_on_the_server(ltsp, tmp_path_factory):
    """LTSP's 55-config.sh with eval_ini's client test made false: it runs what it runs on the server."""
    original = os.path.join(os.path.dirname(ltsp.config_sh), "root", CONFIG_SH)
    with open(original, encoding="utf-8") as handle:
        text = handle.read()
    patched = tmp_path_factory.mktemp("ltsp-server") / "55-config-server.sh"
    patched.write_text(text.replace(CLIENT_TEST, "false"))
    return ltsp._replace(config_sh=str(patched))


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "text",
    [case[1] for case in SERVER_CASES] + [ORACLE_MAIN, ORACLE_ODD, ORACLE_STAR],
    ids=[case[0] for case in SERVER_CASES] + ["main", "odd", "star"],
)
def test_oracle_on_the_server(ltsp_on_the_server, tmp_path, shell, text):
    """LTSP with the server's MAC, IP and HOSTNAME unset: what ltsp_conf_server_entries assumes."""
    names = sorted(set(names_in(text)) | {"BASE_DIR"})
    result = ltsp_conf_server_entries(text, "ltsp.conf")
    ours_ = {name: result[name].value for name in names if name in result}
    assert ours_ == oracle(ltsp_on_the_server, shell, tmp_path, text, NOBODY, names)
