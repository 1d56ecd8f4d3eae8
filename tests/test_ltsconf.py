"""lts.conf as LTSP reads it: sections, LIKE, globs, NONE, includes, precedence. Real files, no mocks."""

import os
import textwrap
import time

import pytest
from machine import run_python_without_site

from get_hosts.identity import Identity
from get_hosts.ltsconf import LtsConfError, glob_match, read_lts_conf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENT = Identity("ltsp12", "198.18.10.12", "00:1a:2b:3c:4d:5e", "eth0")


def write(directory, name, text):
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def read(tmp_path, text, identity=CLIENT, warnings=None):
    return read_lts_conf(write(tmp_path, "lts.conf", text), identity, warnings)


# (what, lts.conf text, expected dict for CLIENT)
CASES = [
    ("default only", "[Default]\nA = 1\nB = two words\n", {"A": "1", "B": "two words"}),
    ("default any case", "[default]\nA = 1\n", {"A": "1"}),
    ("hostname", "[Default]\nA = d\n[ltsp12]\nA = host\n", {"A": "host"}),
    ("hostname any case", "[Default]\nA = d\n[LTSP12]\nA = host\n", {"A": "host"}),
    ("other host ignored", "[Default]\nA = d\n[ltsp13]\nA = other\n", {"A": "d"}),
    ("ip", "[Default]\nA = d\n[198.18.10.12]\nA = ip\n", {"A": "ip"}),
    ("mac lower", "[Default]\nA = d\n[00:1a:2b:3c:4d:5e]\nA = mac\n", {"A": "mac"}),
    ("mac upper", "[Default]\nA = d\n[00:1A:2B:3C:4D:5E]\nA = mac\n", {"A": "mac"}),
    (
        "hostname is the first exact match: ip and mac sections do not apply",
        "[00:1a:2b:3c:4d:5e]\nA = mac\nM = m\n[198.18.10.12]\nA = ip\nI = i\n[ltsp12]\nA = host\n",
        {"A": "host"},
    ),
    ("ip before mac", "[00:1a:2b:3c:4d:5e]\nA = mac\nM = m\n[198.18.10.12]\nA = ip\n", {"A": "ip"}),
    ("glob on hostname", "[Default]\nA = d\n[ltsp1*]\nA = glob\n", {"A": "glob"}),
    ("glob with ?", "[Default]\nA = d\n[ltsp?2]\nA = glob\n", {"A": "glob"}),
    ("glob on ip", "[Default]\nA = d\n[198.18.10.*]\nA = net\n", {"A": "net"}),
    ("glob on mac, any case", "[Default]\nA = d\n[00:1A:2B:*]\nA = vendor\n", {"A": "vendor"}),
    ("glob not matching", "[Default]\nA = d\n[lab2-*]\nA = glob\n", {"A": "d"}),
    ("first glob in file order wins", "[ltsp*]\nA = first\n[*12]\nA = second\nB = b\n", {"A": "first", "B": "b"}),
    ("exact beats glob", "[ltsp*]\nA = glob\nG = g\n[ltsp12]\nA = host\n", {"A": "host", "G": "g"}),
    (
        "LIKE target below the exact section, above globs and Default",
        "[Default]\nA = d\nB = d\nC = d\nD = d\n[lab*]\n[ltsp*]\nB = glob\nC = glob\n"
        "[lab]\nB = lab\nA = lab\n[ltsp12]\nLIKE = lab\nA = host\n",
        {"A": "host", "B": "lab", "C": "glob", "D": "d"},
    ),
    (
        "LIKE chain is recursive",
        "[a]\nLIKE = b\nA = a\n[b]\nLIKE = c\nA = b\nB = b\n[c]\nA = c\nB = c\nC = c\n[ltsp12]\nLIKE = a\n",
        {"A": "a", "B": "b", "C": "c"},
    ),
    ("LIKE target names any case", "[Lab]\nX = 1\n[ltsp12]\nlike = LAB\n", {"X": "1"}),
    ("LIKE from a glob section", "[lab]\nX = lab\n[ltsp*]\nLIKE = lab\n[Default]\nX = d\n", {"X": "lab"}),
    ("LIKE from Default", "[common]\nX = c\n[Default]\nLIKE = common\nY = d\n", {"X": "c", "Y": "d"}),
    (
        "a section reached twice counts at its first place",
        "[lab]\nX = lab\n[ltsp*]\nLIKE = lab\nX = glob\n[ltsp12]\nLIKE = lab\n",
        {"X": "lab"},
    ),
    ("LIKE = NONE ends the chain", "[ltsp12]\nLIKE = NONE\nX = 1\n", {"X": "1"}),
    ("quoted value keeps #", '[Default]\nTHEME = "a # b"\n', {"THEME": "a # b"}),
    ("unquoted value ends at #", "[Default]\nA = 1 # one\nB = x#y\n", {"A": "1", "B": "x"}),
    ("comments and blank lines", "# head\n\n[Default]  # the default\n  # indented\nA = 1\n", {"A": "1"}),
    ("keys case-insensitive, more specific wins", "[Default]\nlb_port = 1\n[ltsp12]\nLb_Port = 2\n", {"LB_PORT": "2"}),
    ("later line in a section wins", "[Default]\nA = 1\na = 2\n", {"A": "2"}),
    (
        "a section named twice is one",
        "[Default]\nA = 1\n[ltsp12]\nB = 1\n[Default]\nA = 2\nC = 3\n",
        {"A": "2", "B": "1", "C": "3"},
    ),
    ("NONE unsets a Default value", "[Default]\nA = 1\nB = 2\n[ltsp12]\nA = NONE\n", {"B": "2"}),
    ("NONE in Default alone", "[Default]\nA = NONE\n", {}),
    ("NONE through LIKE", "[Default]\nA = 1\n[lab]\nA = NONE\n[ltsp12]\nLIKE = lab\n", {}),
    ("more specific value beats NONE", "[Default]\nA = NONE\n[ltsp12]\nA = 1\n", {"A": "1"}),
    ("lower-case none is a value", "[Default]\nA = none\n", {"A": "none"}),
    ("empty value kept", "[Default]\nA =\n", {"A": ""}),
    ("empty section only warns", "[Default]\nA = 1\n[ltsp12]\n", {"A": "1"}),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sections(tmp_path, text, expected):
    assert read(tmp_path, text) == expected


def test_short_hostname_matches_a_fully_qualified_client(tmp_path):
    client = CLIENT._replace(hostname="ltsp12.school.example")
    assert read(tmp_path, "[Default]\nA = d\n[ltsp12]\nA = short\n", client) == {"A": "short"}
    assert read(tmp_path, "[ltsp12.School.example]\nA = full\n[ltsp12]\nA = short\n", client) == {"A": "full"}


def test_without_identity_only_default_applies(tmp_path):
    text = "[Default]\nA = d\n[ltsp12]\nA = host\n[*]\nB = glob\n"
    assert read(tmp_path, text, identity=None) == {"A": "d"}


def test_unknown_parts_of_identity_do_not_match(tmp_path):
    client = Identity(None, None, None, None)
    assert read(tmp_path, "[Default]\nA = d\n[*]\nA = glob\n", client) == {"A": "d"}


def test_empty_section_is_a_warning_naming_file_and_line(tmp_path):
    warnings = []
    path = write(tmp_path, "lts.conf", "[Default]\nA = 1\n\n[ltsp12]\n# A = 2\n[lab]\nLIKE = x\n[x]\nB = 1\n")
    assert read_lts_conf(path, CLIENT, warnings) == {"A": "1"}
    assert warnings == [f"{path}:4: empty section [ltsp12] (ignored)"]


# (what, text, words the one-line message must contain; {path} is the file)
ERRORS = [
    ("LIKE loop", "[ltsp12]\nLIKE = a\n[a]\nLIKE = b\n[b]\nLIKE = a\n", ["{path}:6:", "LIKE loop: a -> b -> a"]),
    ("LIKE to itself", "[ltsp12]\nLIKE = ltsp12\n", ["{path}:2:", "LIKE loop: ltsp12 -> ltsp12"]),
    (
        "LIKE loop through Default",
        "[Default]\nLIKE = a\n[a]\nLIKE = Default\n",
        ["{path}:4:", "Default -> a -> Default"],
    ),
    ("LIKE to nothing", "[ltsp12]\nLIKE = nolab\n", ["{path}:2:", "LIKE = 'nolab' names no section"]),
]

# What spoils one line spoils only that line (the hardening issue: each of these
# used to stop get_hosts with rc 2 and no host, even when [Default] named the pool).
# (what, text, words of the one warning, {path} is the file; what [Default]'s A still is)
LINE_WARNINGS = [
    (
        "key before any section",
        "A = 1\n[Default]\n",
        ["{path}:1:", "A = '1' is outside any section: read as [Default]'s"],
        "1",
    ),
    (
        "glob class: the first ']' ends the header, and its lines go with it",
        "[Default]\nA = 2\n[ltsp1[0-4]]\nA = 1\n",
        ["{path}:3:", "after section header", "(line skipped, and the lines under it up to the next section)"],
        "2",
    ),
    ("syntax", "[Default]\nA = 1\njust words\n", ["{path}:3:", "expected KEY = VALUE", "'just words'"], "1"),
    (
        "syntax in another client's section",
        "[Default]\nA = 1\n[other-client]\nB = 1\n== oops\n",
        ["{path}:5:", "(line skipped)"],
        "1",
    ),
    ("unterminated quote", '[Default]\nA = 1\nB = "x\n', ["{path}:3:", "unterminated"], "1"),
    ("byte order mark", "\ufeff[Default]\nA = 1\n", None, "1"),
]


@pytest.mark.parametrize(("text", "words", "value"), [e[1:] for e in LINE_WARNINGS], ids=[e[0] for e in LINE_WARNINGS])
def test_a_bad_line_is_one_warning_and_the_rest_still_reads(tmp_path, text, words, value):
    path = write(tmp_path, "lts.conf", text)
    warnings = []
    assert read_lts_conf(path, CLIENT, warnings)["A"] == value
    if words is None:
        assert warnings == []
        return
    [warning] = warnings
    assert "\n" not in warning
    for word in words:
        assert word.format(path=path) in warning


@pytest.mark.parametrize(("text", "words"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_file_line_and_value(tmp_path, text, words):
    path = write(tmp_path, "lts.conf", text)
    with pytest.raises(LtsConfError) as caught:
        read_lts_conf(path, CLIENT)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word.format(path=path) in message


def test_like_loop_in_a_section_that_does_not_apply_is_not_read(tmp_path):
    # Only the sections this client reaches are followed: another lab's mistake is not our error.
    assert read(tmp_path, "[Default]\nA = 1\n[other]\nLIKE = other\n") == {"A": "1"}


def test_missing_file(tmp_path):
    with pytest.raises(LtsConfError, match=r"nothere\.conf: cannot read: No such file"):
        read_lts_conf(str(tmp_path / "nothere.conf"), CLIENT)


def test_include_relative_to_the_including_file(tmp_path):
    write(tmp_path, "site/lab.conf", 'include "../common/base.conf"\n[ltsp12]\nA = lab\n')
    write(tmp_path, "common/base.conf", "[Default]\nA = base\nB = base\n")
    path = write(tmp_path, "lts.conf", "[Default]\nC = main\ninclude site/lab.conf\n")
    assert read_lts_conf(path, CLIENT) == {"A": "lab", "B": "base", "C": "main"}


def test_include_absolute_path(tmp_path):
    other = write(tmp_path, "elsewhere/x.conf", "[Default]\nX = 1\n")
    assert read(tmp_path / "d", f'include "{other}"\n') == {"X": "1"}


def test_include_joins_the_current_section_and_does_not_change_what_follows(tmp_path):
    write(tmp_path, "inc.conf", "INC = in-host-section\n[Default]\nD = from-include\n")
    path = write(tmp_path, "lts.conf", "[ltsp12]\ninclude inc.conf\nAFTER = host\n[Default]\nAFTER = default\n")
    assert read_lts_conf(path, CLIENT) == {"INC": "in-host-section", "D": "from-include", "AFTER": "host"}


def test_same_file_included_twice_is_not_a_loop(tmp_path):
    write(tmp_path, "inc.conf", "X = 1\n")
    assert read(tmp_path, "[Default]\ninclude inc.conf\n[ltsp12]\ninclude inc.conf\n") == {"X": "1"}


def test_missing_include_is_a_warning_naming_it_and_the_line(tmp_path):
    path = write(tmp_path, "lts.conf", '[Default]\nA = 1\ninclude "gone.conf"\n')
    warnings = []
    assert read_lts_conf(path, CLIENT, warnings) == {"A": "1"}
    [warning] = warnings
    assert warning.startswith(f"{path}:3: cannot include 'gone.conf': No such file")
    assert warning.endswith("(include skipped)")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("/dev/zero", "is a character device, not a regular file"), ("fifo", "is a FIFO, not a regular file")],
)
def test_an_include_of_a_device_or_fifo_is_skipped_at_once(tmp_path, kind, reason):
    # The attack: include of /dev/zero ended in MemoryError (rc 2, no host); of a FIFO, a hang.
    target = kind
    if kind == "fifo":
        target = str(tmp_path / "fifo")
        os.mkfifo(target)
    path = write(tmp_path, "lts.conf", f'[Default]\nLB_SERVERS = app1\ninclude "{target}"\n')
    warnings = []
    assert read_lts_conf(path, CLIENT, warnings) == {"LB_SERVERS": "app1"}
    assert reason in warnings[0] and f"{path}:3:" in warnings[0]


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "directory"])
def test_lts_conf_itself_a_device_fifo_or_directory_is_one_error(tmp_path, kind):
    target = {"/dev/zero": "/dev/zero", "directory": str(tmp_path)}.get(kind)
    if kind == "fifo":
        target = str(tmp_path / "fifo")
        os.mkfifo(target)
    with pytest.raises(LtsConfError, match=r"cannot read: is an? .*, not a regular file$"):
        read_lts_conf(target, CLIENT)


def test_include_loop_names_the_file_and_line(tmp_path):
    inner = write(tmp_path, "b.conf", "[Default]\ninclude a.conf\n")
    path = write(tmp_path, "a.conf", "[Default]\nX = 1\ninclude b.conf\n")
    with pytest.raises(LtsConfError) as caught:
        read_lts_conf(path, CLIENT)
    message = str(caught.value)
    assert message.startswith(f"{inner}:2: include loop on 'a.conf': ")
    assert message.endswith(f"{path} -> {inner} -> {path}")


def test_self_include(tmp_path):
    path = write(tmp_path, "lts.conf", "[Default]\ninclude lts.conf\n")
    with pytest.raises(LtsConfError, match=r"lts\.conf:2: include loop on 'lts\.conf'"):
        read_lts_conf(path, CLIENT)


def test_a_bad_line_inside_an_included_file_names_that_file(tmp_path):
    inner = write(tmp_path, "inc.conf", "\n\n[broken\n")
    warnings = []
    read(tmp_path, "[Default]\nA = 1\ninclude inc.conf\n", warnings=warnings)
    assert warnings == [
        f"{inner}:3: section header without ']': '[broken' "
        "(line skipped, and the lines under it up to the next section)"
    ]


def test_exponential_include_fan_out_is_refused(tmp_path):
    for level in range(8):
        write(tmp_path, f"f{level}.conf", f"include f{level + 1}.conf\ninclude f{level + 1}.conf\n")
    write(tmp_path, "f8.conf", "X = 1\n")
    with pytest.raises(LtsConfError, match="more than 64 files included"):
        read(tmp_path, "[Default]\ninclude f0.conf\n")


def test_non_utf8_bytes_elsewhere_do_not_stop_reading(tmp_path):
    path = tmp_path / "lts.conf"
    path.write_bytes(b"[Default]\nLDM_THEME = caf\xe9\nLB_PORT = 377\n")
    assert read_lts_conf(str(path), CLIENT)["LB_PORT"] == "377"


def test_glob_sections_import_neither_fnmatch_nor_re(tmp_path):
    globbed = write(tmp_path, "glob.conf", "[Default]\nA = 1\n[ltsp*]\nA = 2\n")
    code = (
        "import sys; from get_hosts.ltsconf import read_lts_conf; from get_hosts.identity import Identity; "
        f"print(read_lts_conf({globbed!r}, Identity('ltsp12', None, None, None))['A'], "
        "'fnmatch' in sys.modules, 're' in sys.modules)"
    )
    assert run_python_without_site(code) == "2 False False"


GLOB_NAMES = ["", "a", "ab", "abc", "ltsp12", "ltsp1", "198.18.10.12", "00:1a:2b:3c:4d:5e", "a[b", "*", "aaa", "ab*c"]
GLOB_PATTERNS = [
    "",
    "*",
    "?",
    "a*",
    "*c",
    "a?c",
    "*a*",
    "a*b*c",
    "ltsp*",
    "ltsp?2",
    "*12",
    "198.18.*.1?",
    "00:1a:*",
    "a[b",
    "a[*",
    "**",
    "*?*",
    "a*a",
    "ab\\*c",
    "*:*:*:*:*:5?",
]


@pytest.mark.parametrize("pattern", GLOB_PATTERNS)
def test_glob_match_agrees_with_fnmatch(pattern):
    from fnmatch import fnmatchcase

    for name in GLOB_NAMES:
        assert glob_match(name, pattern) == fnmatchcase(name, pattern), (name, pattern)


def test_glob_match_long_names_stay_fast():
    started = time.monotonic()
    assert not glob_match("a" * 2000, "*a*a*a*a*a*b")
    assert time.monotonic() - started < 1
