"""ltsp_lbcore.hostport: tables of good and bad words, then the families, exhaustively or with hypothesis.

The contract, as h11 states its own: either a word parses into a host made
of the allowed characters and a port 1-65535, or it raises ValueError with
a one-line reason, never anything else.
"""

import contextlib
import glob
import os
import shutil
import string
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from machine import ROOT, run_python_without_site

from ltsp_lbcore.hostport import (
    IPV6_CHARS,
    NAME_CHARS,
    ZONE_CHARS,
    HostPort,
    canonical_host,
    format_host_port,
    host_key,
    host_problem,
    parse_host_port,
    parse_port,
)

H = HostPort

# Everything get_hosts' pool accepted before hostport (tests/test_settings.py), and more.
GOOD = [
    ("app1", H("app1", 377)),
    ("app1:3377", H("app1", 3377)),
    ("App-1.school.example_x", H("App-1.school.example_x", 377)),
    ("ltsp1.example.org.", H("ltsp1.example.org.", 377)),
    ("a-b--c.d", H("a-b--c.d", 377)),
    ("1.2.3.x", H("1.2.3.x", 377)),
    ("198.18.0.1:1", H("198.18.0.1", 1)),
    ("0.0.0.0", H("0.0.0.0", 377)),
    ("255.255.255.255", H("255.255.255.255", 377)),
    ("a:65535", H("a", 65535)),
    ("a:022", H("a", 22)),
    ("a:" + "0" * 5000 + "22", H("a", 22)),
    ("a" * 253, H("a" * 253, 377)),
    ("[2001:db8::10]:3377", H("2001:db8::10", 3377)),
    ("[2001:db8::10]", H("2001:db8::10", 377)),
    ("2001:db8::10", H("2001:db8::10", 377)),
    ("::1", H("::1", 377)),
    ("::", H("::", 377)),
    ("fe80::1%eth0", H("fe80::1%eth0", 377)),
    ("[fe80::1%eth0]:9", H("fe80::1%eth0", 9)),
    ("fe80::1%1", H("fe80::1%1", 377)),
    ("fe80::1%enp0s31f6", H("fe80::1%enp0s31f6", 377)),
    ("fe80::1%br-lan_2.10", H("fe80::1%br-lan_2.10", 377)),
    ("fe80::1%" + "a" * 15, H("fe80::1%" + "a" * 15, 377)),
    ("::ffff:198.18.0.1", H("::ffff:198.18.0.1", 377)),
    ("[FD00:0::2]", H("FD00:0::2", 377)),
    ("1:2:3:4:5:6:7:8", H("1:2:3:4:5:6:7:8", 377)),
]

BAD = [
    ("", "no host"),
    (":377", "no host"),
    ("a:0", "port 0 is out of range (1-65535)"),
    ("a:65536", "port 65536 is out of range (1-65535)"),
    ("a:" + "9" * 5000, "port '9999999999999999999999999999999999999999'... is out of range (1-65535)"),
    ("a:", "port '' is not a number"),
    ("a:x1", "port 'x1' is not a number"),
    ("a:-1", "port '-1' is not a number"),
    ("a:+1", "port '+1' is not a number"),
    ("a: 1", "port ' 1' is not a number"),
    ("a:1 ", "port '1 ' is not a number"),
    ("a:1_0", "port '1_0' is not a number"),
    ("a:0x16", "port '0x16' is not a number"),
    ("a:٣٧٧", "port '٣٧٧' is not a number"),
    ("a:²", "port '²' is not a number"),
    ("a:1:2", "not an IPv6 address; an IPv6 address with a port is written [address]:port"),
    ("[]:377", "empty brackets"),
    ("[]", "empty brackets"),
    ("[::1", "'[' without ']'"),
    ("[::1]377", "'377' after ']'"),
    ("[::1]:0", "port 0 is out of range (1-65535)"),
    ("[::1]:", "port '' is not a number"),
    ("[app1]:377", "brackets are for IPv6 addresses"),
    ("[1.2.3.4]:22", "brackets are for IPv6 addresses"),
    ("2001:db8::zz", "not an IPv6 address ('z' is not allowed); an IPv6 address with a port is written"),
    ("1:2:3", "not an IPv6 address; an IPv6 address with a port is written [address]:port"),
    ("fd00::2:x:2222:", "not an IPv6 address ('x' is not allowed)"),
    ("1:2:3:4:5:6:7:8:9", "not an IPv6 address"),
    ("::1::2", "not an IPv6 address"),
    ("[::1.2.3.04]", "not an IPv6 address"),
    ("fe80::1%", "bad IPv6 zone: empty after '%'"),
    ("fe80::1%" + "a" * 16, "bad IPv6 zone 'aaaaaaaaaaaaaaaa': longer than 15 characters"),
    ("::1%1,127.0.0.2", "bad IPv6 zone '1,127.0.0.2': ',' is not allowed (an interface name: letters, digits, _ - .)"),
    ("fe80::3%\x1b[31m", "bad IPv6 zone '\\x1b[31m': '\\x1b' is not allowed"),
    ("::1%a\0b", "bad IPv6 zone 'a\\x00b': '\\x00' is not allowed"),
    ("fe80::1%eth0%1", "bad IPv6 zone 'eth0%1': '%' is not allowed"),
    ("fe80::1%eth0:22", "bad IPv6 zone 'eth0:22': ':' is not allowed"),
    ("-oProxyCommand=x", "'=' is not allowed in a host name"),
    ("-app", "a host name cannot start with '-' or '.'"),
    (".app", "a host name cannot start with '-' or '.'"),
    ("a.-b", "a label of a host name cannot start with '-' ('-b')"),
    ("a..b", "empty label in a host name ('..')"),
    ("a.b..", "empty label in a host name ('..')"),
    ("app;rm", "';' is not allowed in a host name"),
    ("app,app2", "',' is not allowed in a host name"),
    ("*", "'*' is not allowed in a host name"),
    ("app?", "'?' is not allowed in a host name"),
    ("!app", "'!' is not allowed in a host name"),
    ("a b", "' ' is not allowed in a host name"),
    ("a\tb", "'\\t' is not allowed in a host name"),
    ("a\0b", "'\\x00' is not allowed in a host name"),
    ("sérveur", "'é' is not allowed in a host name"),
    ("app\u202e", "'\\u202e' is not allowed in a host name"),
    ("a" * 254, "host name longer than 253 characters"),
    ("127.1", "not an IPv4 address (four numbers 0-255, no leading zeros)"),
    ("010.0.0.1", "not an IPv4 address"),
    ("1.2.3.256", "not an IPv4 address"),
    ("1.2.3.4.5", "not an IPv4 address"),
    ("1.2.3.4.", "not an IPv4 address"),
    ("1234", "not an IPv4 address"),
    ("1.2.3.٣", "'٣' is not allowed in a host name"),
    ("x1.2", "not an IPv4 address"),  # the last label of a name is never all digits
]


@pytest.mark.parametrize(("word", "expected"), GOOD, ids=[word[:30] for word, _ in GOOD])
def test_good_words(word, expected):
    assert parse_host_port(word, 377) == expected
    assert host_problem(expected.host) is None


@pytest.mark.parametrize(("word", "reason"), BAD, ids=[repr(word[:30]) for word, _ in BAD])
def test_bad_words_say_why_on_one_line(word, reason):
    with pytest.raises(ValueError) as raised:
        parse_host_port(word, 377)
    message = str(raised.value)
    assert message.startswith(reason)
    assert message.isprintable() and len(message) < 200


def test_no_port_and_no_default_gives_none():
    assert parse_host_port("app1") == H("app1", None)
    assert parse_host_port("[::1]") == H("::1", None)


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("app1", None),
        ("10.0.0.1", None),
        ("fe80::1%eth0", None),
        ("", "no host"),
        ("app1:22", "not an IPv6 address"),  # a host has no port: the colon makes it an IPv6 attempt
        ("[::1]", "not an IPv6 address ('[' is not allowed)"),
        ("a,b", "',' is not allowed in a host name"),
    ],
)
def test_host_problem(host, problem):
    if problem is None:
        assert host_problem(host) is None
    else:
        assert host_problem(host).startswith(problem)


@pytest.mark.parametrize(
    ("host", "port", "word"),
    [
        ("app1", 22, "app1:22"),
        ("10.0.0.1", 377, "10.0.0.1:377"),
        ("2001:db8::1", 377, "[2001:db8::1]:377"),
        ("fe80::1%eth0", 9, "[fe80::1%eth0]:9"),
        ("app1", None, "app1"),
        ("2001:db8::1", None, "2001:db8::1"),
    ],
)
def test_format_host_port_round_trips(host, port, word):
    assert format_host_port(host, port) == word
    assert parse_host_port(word) == H(host, port)


SAME_SERVER = [
    ("app1", "APP1"),
    ("Ltsp.Example.ORG", "ltsp.example.org"),
    ("::1", "0::1"),
    ("::1", "0000:0000:0000:0000:0000:0000:0000:0001"),
    ("FD00::2", "fd00:0::2"),
    ("fe80::1%eth0", "FE80:0::1%eth0"),
    ("::ffff:198.18.0.1", "::FFFF:198.18.0.1"),
]
OTHER_SERVER = [
    ("app1", "app2"),
    ("fe80::1%eth0", "fe80::1%eth1"),
    ("fe80::1%eth0", "fe80::1%ETH0"),  # interface names are case-sensitive
    ("fe80::1", "fe80::1%eth0"),
    ("198.18.0.1", "::ffff:198.18.0.1"),
    ("app1", "app1."),  # a relative name may be completed by the search domains
]


@pytest.mark.parametrize(("one", "other"), SAME_SERVER)
def test_host_key_is_equal_for_one_server_written_two_ways(one, other):
    assert host_key(one) == host_key(other) == canonical_host(other)


@pytest.mark.parametrize(("one", "other"), OTHER_SERVER)
def test_host_key_differs_for_different_servers(one, other):
    assert host_key(one) != host_key(other)


def test_canonical_host_refuses_what_is_not_a_host():
    with pytest.raises(ValueError, match=r"^',' is not allowed in a host name$"):
        canonical_host("a,b")


# ---------------------------------------------------------------- families, exhaustively

ASCII = [chr(code) for code in range(128)]
NOT_IN_ZONES = [char for char in ASCII if char not in ZONE_CHARS]


@pytest.mark.parametrize("char", NOT_IN_ZONES, ids=[f"{ord(char):#04x}" for char in NOT_IN_ZONES])
def test_every_ascii_char_outside_interface_names_is_refused_in_a_zone(char):
    """Punctuation, space, control bytes, NUL, DEL: in the middle, at the ends, bracketed or bare."""
    for word in (f"fe80::1%eth{char}0", f"::1%{char}", f"::1%{char}eth0", f"[fe80::1%eth{char}0]:22"):
        with pytest.raises(ValueError) as raised:
            parse_host_port(word)
        # ']' ends the brackets early: the reason is then what follows them.
        assert str(raised.value).startswith("bad IPv6 zone" if "[" not in word or char != "]" else "'0]:22' after")
        assert str(raised.value).isprintable()


@pytest.mark.parametrize("char", sorted(ZONE_CHARS))
def test_every_interface_name_char_is_allowed_in_a_zone(char):
    assert parse_host_port(f"fe80::1%x{char}") == H(f"fe80::1%x{char}", None)


@pytest.mark.parametrize("char", [c for c in ASCII if c not in NAME_CHARS and c != ":"])
def test_every_other_ascii_char_is_refused_in_a_host_name(char):
    for word in (f"app{char}1", f"app{char}1:22", f"{char}app"):
        with pytest.raises(ValueError):
            parse_host_port(word)


UNICODE_DIGITS = [chr(code) for code in range(0x110000) if chr(code).isdigit() and not chr(code).isascii()]


def test_no_unicode_digit_is_a_port_digit():
    """int() reads '٣٧٧' as 377 and str.isdigit() says yes to '²': each of the hundreds of them is refused."""
    assert len(UNICODE_DIGITS) > 500
    for digit in UNICODE_DIGITS:
        for text in (digit, f"3{digit}7", f"37{digit}"):
            with pytest.raises(ValueError, match=r"is not a number$"):
                parse_port(text)
            with pytest.raises(ValueError, match=r"is not a number$"):
                parse_host_port(f"app1:{text}")


# ---------------------------------------------------------------- families, with hypothesis

ALLOWED_IN_HOSTS = NAME_CHARS | IPV6_CHARS | ZONE_CHARS | {"%"}


def check_contract(word):
    """Parses into a safe host and a port, or raises ValueError with a one-line reason."""
    try:
        host, port = parse_host_port(word, 22)
    except ValueError as error:
        assert str(error).isprintable()
        return None
    assert host and set(host) <= ALLOWED_IN_HOSTS
    assert "," not in host and "*" not in host and "?" not in host
    assert host_problem(host) is None
    assert isinstance(port, int) and 1 <= port <= 65535
    assert parse_host_port(format_host_port(host, port)) == (host, port)
    assert canonical_host(host) == canonical_host(canonical_host(host))
    return host, port


@given(st.text())
@example("::1%1,127.0.0.2")
@example("\x00")
@example("[")
@example("[:")
@example("[::1]:")
def test_any_text_parses_safely_or_raises_value_error(word):
    check_contract(word)


NEAR_WORDS = st.text(alphabet="ab19:.[]%-_,*? \t\x00\x1bé٣", max_size=24)


@given(NEAR_WORDS)
def test_near_valid_text_parses_safely_or_raises_value_error(word):
    check_contract(word)


@given(st.text(alphabet=string.printable + "\x00\x7f\x1b", min_size=1, max_size=20))
def test_a_zone_is_accepted_exactly_when_it_is_an_interface_name(zone):
    accepted = set(zone) <= ZONE_CHARS and len(zone) <= 15
    result = check_contract(f"fe80::1%{zone}")
    assert (result is not None) == accepted, zone


@given(st.text(max_size=8))
@example("+1")
@example(" 1")
@example("1_0")
@example("١")
def test_a_port_is_ascii_digits_in_range_only(text):
    expected = text.isascii() and text.isdigit() and 1 <= int(text) <= 65535
    try:
        assert parse_port(text) == int(text)
        assert expected
    except ValueError:
        assert not expected


@given(st.integers(min_value=1, max_value=65535), st.sampled_from(["app1", "10.0.0.1", "fd00::2", "fe80::1%eth0"]))
def test_every_port_round_trips(port, host):
    assert parse_host_port(format_host_port(host, port)) == (host, port)


# ---------------------------------------------------------------- cost on the thin client


def test_parsing_names_imports_nothing():
    code = (
        "import sys; from ltsp_lbcore.hostport import parse_host_port; "
        "print(parse_host_port('app1:377').port, "
        "sorted(m for m in ('socket', 're', 'ipaddress', 'typing', 'dataclasses') if m in sys.modules))"
    )
    assert run_python_without_site(code) == "377 []"


def find_python39():
    """A python3.9 that runs (Debian bullseye's, the oldest in thin-client chroots), or None."""
    candidates = [
        shutil.which("python3.9"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
    ]
    for candidate in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            if subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
                return candidate
    return None


PYTHON39 = find_python39()


@pytest.mark.skipif(PYTHON39 is None, reason="no python3.9 (the oldest thin-client python) on this machine")
def test_hostport_and_files_run_under_python39_without_site(tmp_path):
    (tmp_path / "pool").write_text("[fe80::1%eth0]:9 a:1")
    code = (
        "from ltsp_lbcore.files import read_regular_file; from ltsp_lbcore.hostport import parse_host_port as p; "
        f"print(*[p(w) for w in read_regular_file({str(tmp_path / 'pool')!r}, 100).decode().split()])"
    )
    done = subprocess.run(
        [PYTHON39, "-S", "-c", code],
        env={"PYTHONPATH": ROOT, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "HostPort(host='fe80::1%eth0', port=9) HostPort(host='a', port=1)\n"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
