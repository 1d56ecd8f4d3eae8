"""One line of lts.conf syntax, by table (LTSP5 getltscfg rules)."""

import pytest

from ltsp_lbcore.confsyntax import ASSIGN, INCLUDE, SECTION, ConfSyntaxError, parse_line, parse_text

LINES = [
    ("", None),
    ("   ", None),
    ("# a comment", None),
    ("   # indented comment", None),
    ("[Default]", (SECTION, "Default")),
    ("  [ 00:11:22:AA:bb:cc ]  # lab", (SECTION, "00:11:22:AA:bb:cc")),
    ("[lab*]", (SECTION, "lab*")),
    ("LB_SERVERS = app1 app2", (ASSIGN, "LB_SERVERS", "app1 app2")),
    ("lb_servers=app1", (ASSIGN, "LB_SERVERS", "app1")),
    ("Lb_Port = 377 # the default", (ASSIGN, "LB_PORT", "377")),
    ('LDM_THEME = "a # not a comment"', (ASSIGN, "LDM_THEME", "a # not a comment")),
    ('X = "quoted"   # comment after', (ASSIGN, "X", "quoted")),
    ('X = "  keeps spaces  "', (ASSIGN, "X", "  keeps spaces  ")),
    ("X =", (ASSIGN, "X", "")),
    ("X = #only a comment", (ASSIGN, "X", "")),
    ("X = a=b", (ASSIGN, "X", "a=b")),
    ("X = NONE", (ASSIGN, "X", "NONE")),
    ('include "/etc/ltsp/lab.conf"', (INCLUDE, "/etc/ltsp/lab.conf")),
    ("INCLUDE other.conf # comment", (INCLUDE, "other.conf")),
    ("_UNDER_1 = v", (ASSIGN, "_UNDER_1", "v")),
]


@pytest.mark.parametrize(("line", "expected"), LINES)
def test_line(line, expected):
    assert parse_line(line, "lts.conf", 1) == expected


ERRORS = [
    ("[Default", "without ']'"),
    ("[]", "empty section"),
    ("[a] b", "after section"),
    ("just words", "expected KEY = VALUE"),
    ("1KEY = v", "invalid key '1KEY'"),
    ("MY-KEY = v", "invalid key 'MY-KEY'"),
    ("= v", "invalid key ''"),
    ('X = "unterminated', "unterminated quoted value"),
    ('X = "a" b', "after the closing quote"),
    ("include", "without a file name"),
]


@pytest.mark.parametrize(("line", "message"), ERRORS)
def test_error_names_file_line_and_value(line, message):
    with pytest.raises(ConfSyntaxError) as caught:
        parse_line(line, "/etc/lts.conf", 7)
    assert str(caught.value).startswith("/etc/lts.conf:7: ")
    assert message in str(caught.value)
    assert caught.value.lineno == 7


def test_parse_text_numbers_lines():
    text = "# head\n[Default]\n\nLB_PORT = 377\n"
    assert parse_text(text, "f") == [(2, (SECTION, "Default")), (4, (ASSIGN, "LB_PORT", "377"))]
