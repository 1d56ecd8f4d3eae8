"""ltsp-update-sshkeys against hostile input: every case an attack found, and the ones that held.

The real script runs as a subprocess (tests/sshsite.py's Site) with a
fake ssh-keyscan first in PATH that records every command line it gets and
answers with the keys a test gives it for that host, or with nothing (a
server that does not answer). So each test sees exactly what reached a
command line and a file. Families (zone characters, Unicode digits, file
types, link placements) are tables or hypothesis, not one example each.

What the script did before these fixes (commit 0dd2861), for the record:

- extraservers ``::1%1,127.0.0.2``: ssh-keyscan scanned ::1 and the file
  said ``::1%1,127.0.0.2 ssh-ed25519 ...``; ssh reads the comma as a second
  name, so ``ssh-keygen -F 127.0.0.2`` found ::1's key. The same path wrote
  ``fe80::3%\\x1b[31m`` into the file; ``-n '*'`` trusted our keys for every host.
- a chroot's ssh_known_hosts linked to /dev/zero: ``error: unexpected
  MemoryError`` (exit 2, later chroots not written); a FIFO there: the run
  hung forever; a key line in one chroot's file became the last known key
  of a silent server in every chroot and in the cache.
- a symlinked ssh_known_hosts whose target held the same text: chmod
  followed it (a 0600 file became 0644); a chroot that is a symlink was
  written through.
- ``::1%a\\0b`` in extraservers: ``error: unexpected ValueError: embedded
  null byte``, nothing written; ``host:٣٧٧`` was scanned on port 377.
"""

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sshsite import Site, own_names_written

from ltsp_lbcore.hostport import ZONE_CHARS, host_problem
from ltsp_update_sshkeys.files import MAX_KNOWN_HOSTS_BYTES
from ltsp_update_sshkeys.keys import CACHE_HEADER
from ltsp_update_sshkeys.names import parse_own_name, parse_server

PROG = "ltsp-update-sshkeys"
SILENT = "silent.example"
NO_ANSWER = f"{PROG}: warning: server {SILENT} did not answer: no last known keys"
LINK = "is a symbolic link (not followed)"

FAKE_KEYSCAN = """
import json, os, sys
with open(os.environ["FAKE_KEYSCAN_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
with open(os.environ["FAKE_KEYSCAN_ANSWERS"], encoding="utf-8") as answers:
    sys.stdout.write(json.load(answers).get(sys.argv[-1], ""))
"""


class Keyscan:
    """A fake ssh-keyscan: logs its arguments, prints the lines set for the host it is asked (else nothing)."""

    def __init__(self, directory):
        directory.mkdir(parents=True, exist_ok=True)
        self.bin = directory / "bin"
        self.bin.mkdir()
        program = self.bin / "ssh-keyscan"
        program.write_text(f"#!{sys.executable}\n{FAKE_KEYSCAN}")
        program.chmod(0o755)
        self.log = directory / "keyscan.log"
        self.answers_path = directory / "answers.json"
        self.answers = {}
        self.answers_path.write_text("{}")
        self.env = {
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "FAKE_KEYSCAN_LOG": str(self.log),
            "FAKE_KEYSCAN_ANSWERS": str(self.answers_path),
        }

    def answer(self, host, text):
        self.answers[host] = text
        self.answers_path.write_text(json.dumps(self.answers))

    def answer_key(self, host, key):
        self.answer(host, f"{host} {key[0]} {key[1]}\n")

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def hosts(self):
        return [call[-1] for call in self.calls()]


@pytest.fixture
def keyscan(tmp_path):
    return Keyscan(tmp_path / "keyscan")


@pytest.fixture(scope="module")
def server_key(tmp_path_factory):
    """(type, blob) of an ed25519 key standing for an extra server's."""
    return make_key(tmp_path_factory.mktemp("server_key"))


@pytest.fixture(scope="module")
def planted_key(tmp_path_factory):
    """(type, blob) of a key that nobody scanned: a chroot's file tries to plant it."""
    return make_key(tmp_path_factory.mktemp("planted_key"))


def make_key(directory):
    path = directory / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "t", "-f", str(path)], check=True)
    return tuple(path.with_suffix(".pub").read_text().split()[:2])


def quiet(site_, *arguments, **options):
    """Site.run with -q: stderr then holds warnings and errors only."""
    return site_.run("-q", *arguments, **options)


def own_only(site_, text):
    """The file the run writes when no extra server has keys."""
    return site_.expected_text(own_names_written(text))


def assert_clean_stderr(result):
    """No traceback, no 'unexpected', every line printable: nothing raw reached the admin's terminal."""
    assert "Traceback" not in result.stderr
    assert "unexpected" not in result.stderr
    for line in result.stderr.splitlines():
        assert line.isprintable(), repr(line)


def assert_every_name_is_a_host(text):
    """Every name of every key line is host or [host]:port, host per ltsp_lbcore.hostport."""
    assert text.isascii()
    for line in text.splitlines():
        assert line.isprintable(), repr(line)
        if line.startswith("#") or not line:
            continue
        for name in line.split(" ")[0].split(","):
            if name.startswith("["):
                host, _, port = name[1:].partition("]:")
                assert port.isascii() and port.isdigit(), name
            else:
                host = name
            assert name == "server" or host_problem(host) is None, name


def ssh_keygen_finds(known_hosts, host):
    """What the real `ssh-keygen -F host` finds in the file (its stdout), '' when nothing."""
    result = subprocess.run(
        ["ssh-keygen", "-F", host, "-f", str(known_hosts)], capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout


# ---------------------------------------------------------------- 1. a key trusted for a host never scanned


def test_comma_in_a_zone_in_extraservers_trusts_no_second_host(site, keyscan, server_key):
    site.extraservers.write_text("::1%1,127.0.0.2\n")
    keyscan.answer_key("::1", server_key)
    keyscan.answer_key("::1%1,127.0.0.2", server_key)

    result = quiet(site, env=keyscan.env)

    assert (result.returncode, result.stderr) == (
        0,
        f"{PROG}: warning: {site.extraservers}:1: skipping bad server '::1%1,127.0.0.2': "
        "bad IPv6 zone '1,127.0.0.2': ',' is not allowed (an interface name: letters, digits, _ - .)\n",
    )
    assert keyscan.calls() == []
    text = site.known_hosts().read_text()
    assert text == own_only(site, text)
    assert ssh_keygen_finds(site.known_hosts(), "127.0.0.2") == ""
    assert ssh_keygen_finds(site.known_hosts(), "::1") == ""


def test_comma_in_a_zone_on_the_command_line_is_an_error(site, keyscan):
    result = quiet(site, "::1%1,127.0.0.2", env=keyscan.env)

    assert (result.returncode, result.stderr) == (
        2,
        f"{PROG}: error: bad server '::1%1,127.0.0.2': bad IPv6 zone '1,127.0.0.2': ',' is not allowed "
        "(an interface name: letters, digits, _ - .)\n",
    )
    assert keyscan.calls() == []
    assert not site.known_hosts().exists()


ZONE_FAMILY = [chr(code) for code in range(128) if chr(code) not in ZONE_CHARS and chr(code) not in "\n#"]


def test_every_ascii_char_outside_interface_names_in_a_zone_is_skipped(site, keyscan, server_key):
    """Punctuation, space, control bytes, NUL, DEL in a zone: one warning each, no scan, nothing written."""
    lines = [f"fe80::1%eth{char}0" for char in ZONE_FAMILY]
    site.extraservers.write_bytes(("\n".join([*lines, "good.example"]) + "\n").encode())
    keyscan.answer_key("good.example", server_key)

    result = quiet(site, env=keyscan.env)

    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result)
    warnings = result.stderr.splitlines()
    assert len(warnings) == len(lines)
    for number, (line, warning) in enumerate(zip(lines, warnings), start=1):
        value = line.strip(" \t\r\v\f")
        prefix = f"{PROG}: warning: {site.extraservers}:{number}: skipping bad server {value!r}: "
        assert warning.startswith(prefix), warning
        assert warning[len(prefix) :].startswith(("bad IPv6 zone ", "expected one host or host:port")), warning
    assert keyscan.hosts() == ["good.example"]
    text = site.known_hosts().read_text()
    assert_every_name_is_a_host(text)
    assert [line.split(" ")[0] for line in text.splitlines() if line and not line.startswith(("#", "server"))] == [
        "good.example"
    ]


def test_control_bytes_never_reach_the_file_nor_the_terminal(site, keyscan, server_key):
    site.extraservers.write_bytes(b"fe80::3%\x1b[31m\n")
    keyscan.answer_key("fe80::3%\x1b[31m", server_key)

    result = quiet(site, env=keyscan.env)

    assert (result.returncode, result.stderr) == (
        0,
        f"{PROG}: warning: {site.extraservers}:1: skipping bad server 'fe80::3%\\x1b[31m': "
        "bad IPv6 zone '\\x1b[31m': '\\x1b' is not allowed (an interface name: letters, digits, _ - .)\n",
    )
    assert keyscan.calls() == []
    assert b"\x1b" not in site.known_hosts().read_bytes()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("*", "'*' is not allowed in a host name"),
        ("?", "'?' is not allowed in a host name"),
        ("*.example.org", "'*' is not allowed in a host name"),
        ("[*]:22", "'*' is not allowed in a host name"),
        ("a,b", "',' is not allowed in a host name"),
        ("!ltsp1", "'!' is not allowed in a host name"),
        ("@cert-authority", "'@' is not allowed in a host name"),
        ("|1|abc=", "'|' is not allowed in a host name"),
        ("#x", "'#' is not allowed in a host name"),
        ("server name", "expected one host or host:port"),
        ("", "expected one host or host:port"),
        ("x\x1b[31m", "'\\x1b' is not allowed in a host name"),
        ("ltsp1:٣٧٧", "port '٣٧٧' is not a number"),
        (
            "::1%1,127.0.0.2",
            "bad IPv6 zone '1,127.0.0.2': ',' is not allowed (an interface name: letters, digits, _ - .)",
        ),
        ("[ltsp1]", "brackets are for IPv6 addresses"),
        ("-oProxyCommand=x", "'=' is not allowed in a host name"),
    ],
)
def test_an_own_name_that_is_not_a_host_is_an_error(site, keyscan, name, reason):
    result = quiet(site, f"--own-name={name}", env=keyscan.env)

    assert (result.returncode, result.stderr) == (2, f"{PROG}: error: bad own name {name!r}: {reason}\n")
    assert not site.known_hosts().exists()


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ("LTSP-Lab.Example.org.", "ltsp-lab.example.org"),
        ("ltsp1:2222", "[ltsp1]:2222"),
        ("[ltsp1]:2222", "[ltsp1]:2222"),  # ssh's own spelling, taken for any host
        ("[FD00::1]:2222", "[fd00::1]:2222"),
        ("fd00:0::1", "fd00::1"),
        ("192.0.2.7:22", "192.0.2.7"),
    ],
)
def test_good_own_names_are_written_as_ssh_looks_them_up(site, keyscan, name, written):
    result = quiet(site, "-n", name, env=keyscan.env)

    assert (result.returncode, result.stderr) == (0, "")
    assert own_names_written(site.known_hosts().read_text())[-1] == written


# ---------------------------------------------------------------- 4. one bad line stops nothing; no foreign digits


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (
            b"::1%a\x00b",
            "'::1%a\\x00b': bad IPv6 zone 'a\\x00b': '\\x00' is not allowed (an interface name: letters, "
            "digits, _ - .)",
        ),
        (b"good\x00.example", "'good\\x00.example': '\\x00' is not allowed in a host name"),
        (b"\x00", "'\\x00': '\\x00' is not allowed in a host name"),
        (b"caf\xc3\xa9.example", "'café.example': 'é' is not allowed in a host name"),
        (b"bad\xff.example", "'bad\ufffd.example': '\ufffd' is not allowed in a host name"),  # decoded as U+FFFD
    ],
)
def test_a_nul_byte_or_bad_text_skips_its_line_only(site, keyscan, server_key, line, reason):
    site.extraservers.write_bytes(line + b"\ngood.example\n")
    keyscan.answer_key("good.example", server_key)

    result = quiet(site, env=keyscan.env)

    assert (result.returncode, result.stderr) == (
        0,
        f"{PROG}: warning: {site.extraservers}:1: skipping bad server {reason}\n",
    )
    assert keyscan.hosts() == ["good.example"]
    assert f"good.example {server_key[0]} {server_key[1]}\n" in site.known_hosts().read_text()


UNICODE_DIGITS = [chr(code) for code in range(0x110000) if chr(code).isdigit() and not chr(code).isascii()]


def test_no_unicode_digit_is_a_port(site, keyscan):
    """int() takes '٣٧٧' as 377: every non-ASCII digit, in every position, is refused before any scan."""
    lines = [f"u{index}.example:3{digit}7" for index, digit in enumerate(UNICODE_DIGITS)]
    lines += ["host.example:٣٧٧", "host.example:+22", "host.example:2_2", "host.example:0x16", "host.example:²"]
    site.extraservers.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = quiet(site, env=keyscan.env)

    assert result.returncode == 0
    warnings = result.stderr.splitlines()
    assert len(warnings) == len(lines) > 500
    assert all(warning.endswith("is not a number") for warning in warnings)
    assert (
        f"{site.extraservers}:{len(lines) - 4}: skipping bad server 'host.example:٣٧٧': port '٣٧٧' is not a number"
        in (result.stderr)
    )
    assert keyscan.calls() == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("-oProxyCommand=touch_pwned", "'=' is not allowed in a host name"),
        ("-p22", "a host name cannot start with '-' or '.'"),
        ("--help", "a host name cannot start with '-' or '.'"),
        ("[-1]:22", "brackets are for IPv6 addresses"),
    ],
)
def test_option_like_servers_never_reach_ssh_keyscan(site, keyscan, line, reason):
    """This held before; kept as a regression test."""
    site.extraservers.write_text(f"{line}\n")

    in_file = quiet(site, env=keyscan.env)
    on_command_line = quiet(site, "--", line, env=keyscan.env)

    assert in_file.stderr == f"{PROG}: warning: {site.extraservers}:1: skipping bad server {line!r}: {reason}\n"
    assert (on_command_line.returncode, on_command_line.stderr) == (
        2,
        f"{PROG}: error: bad server {line!r}: {reason}\n",
    )
    assert keyscan.calls() == []


def test_what_ssh_keyscan_prints_cannot_name_another_host(site, keyscan, server_key, planted_key):
    """Its name field is ignored, bad types and blobs are dropped (this held before; kept)."""
    site.extraservers.write_text("hostile.example\n")
    keyscan.answer(
        "hostile.example",
        f"# hostile.example:22 SSH-2.0-OpenSSH\n"
        f"evil.example,127.0.0.9 {server_key[0]} {server_key[1]}\n"
        f"hostile.example {planted_key[0]},x {planted_key[1]}\n"
        f"hostile.example {planted_key[0]} not*base64\n"
        f"hostile.example {planted_key[0]} {planted_key[1]}\x1b[31m\n"
        f"hostile.example\x1c{planted_key[0]}\x1c{planted_key[1]}\n",
    )

    result = quiet(site, env=keyscan.env)

    assert (result.returncode, result.stderr.count("warning")) == (0, 0), result.stderr
    text = site.known_hosts().read_text()
    assert [line for line in text.splitlines() if not line.startswith(("#", "server"))] == [
        f"hostile.example {server_key[0]} {server_key[1]}"
    ]
    assert ssh_keygen_finds(site.known_hosts(), "127.0.0.9") == ""
    assert ssh_keygen_finds(site.known_hosts(), "evil.example") == ""


# ---------------------------------------------------------------- 2. a chroot's own ssh_known_hosts, every file type


def place_known_hosts(site_, kind, planted_line, outside):
    """Make amd64's etc/ssh/ssh_known_hosts one member of the family; return what must stay as it is."""
    path = site_.known_hosts("amd64")
    target = outside / "target"
    if kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink to a fifo":
        os.mkfifo(target)
        path.symlink_to(target)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        import socket

        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
    elif kind == "symlink to a file with a planted key":
        target.write_text(planted_line)
        path.symlink_to(target)
    elif kind == "relative symlink to a file with a planted key":
        target.write_text(planted_line)
        path.symlink_to(os.path.relpath(target, path.parent))
    elif kind == "dangling symlink":
        path.symlink_to(outside / "nothing")
    elif kind == "oversize file with a planted key":
        with open(path, "w") as big:
            big.write(planted_line)
            big.truncate(MAX_KNOWN_HOSTS_BYTES + 1)
    elif kind == "file with a planted key":
        path.write_text(planted_line)
    else:
        raise AssertionError(kind)
    return snapshot(outside)


def snapshot(directory):
    """(name, kind, mode, bytes) of everything below directory: to see that nothing there changed."""
    found = []
    for path in sorted(Path(directory).rglob("*")):
        status = path.lstat()
        data = path.read_bytes() if stat.S_ISREG(status.st_mode) else None
        found.append((str(path), stat.S_IFMT(status.st_mode), stat.S_IMODE(status.st_mode), data))
    return found


def kh(site_, chroot="amd64"):
    return site_.known_hosts(chroot)


KNOWN_HOSTS_FAMILY = [
    # (kind, the warning about amd64 (formatted with kh: its ssh_known_hosts, chroot: its directory), amd64 after)
    ("symlink to /dev/zero", "skipping chroot {chroot}: {kh}: " + LINK, "untouched"),
    ("fifo", "skipping chroot {chroot}: {kh}: is a FIFO, not a regular file", "untouched"),
    ("symlink to a fifo", "skipping chroot {chroot}: {kh}: " + LINK, "untouched"),
    ("directory", "skipping chroot {chroot}: {kh}: is a directory, not a regular file", "untouched"),
    ("socket", "skipping chroot {chroot}: {kh}: is a socket, not a regular file", "untouched"),
    ("symlink to a file with a planted key", "skipping chroot {chroot}: {kh}: " + LINK, "untouched"),
    ("relative symlink to a file with a planted key", "skipping chroot {chroot}: {kh}: " + LINK, "untouched"),
    ("dangling symlink", "skipping chroot {chroot}: {kh}: " + LINK, "untouched"),
    ("oversize file with a planted key", "no last known keys from {kh}: is larger than 8388608 bytes", "own only"),
    ("file with a planted key", None, "own and planted"),
]


@pytest.mark.parametrize(("kind", "warning", "after"), KNOWN_HOSTS_FAMILY, ids=[row[0] for row in KNOWN_HOSTS_FAMILY])
def test_a_chroots_known_hosts_of_any_type_plants_no_key_and_stops_nothing(
    site, keyscan, tmp_path, planted_key, kind, warning, after
):
    outside = tmp_path / "outside"
    outside.mkdir()
    site.extraservers.write_text(f"{SILENT}\n")
    planted_line = f"{SILENT} {planted_key[0]} {planted_key[1]}\n"
    untouched = place_known_hosts(site, kind, planted_line, outside)
    amd64_before = os.lstat(kh(site))

    result = quiet(site, env=keyscan.env, timeout=60)  # a FIFO read would hang: the timeout fails the test

    assert result.returncode == 1
    assert_clean_stderr(result)
    lines = result.stderr.splitlines()
    if warning is not None:
        assert f"{PROG}: warning: " + warning.format(kh=kh(site), chroot=site.base / "amd64") in lines
    silent_line = (
        f"{PROG}: warning: server {SILENT} did not answer: not in the cache; kept the keys each chroot's own file "
        "had, in amd64 (1)"
        if after == "own and planted"
        else NO_ANSWER
    )
    assert lines[-1] == silent_line
    # i386 and the cache never get the planted key.
    i386 = kh(site, "i386").read_text()
    assert i386 == own_only(site, i386)
    assert site.cache.read_text() == CACHE_HEADER
    assert snapshot(outside) == untouched
    if after == "untouched":
        status = os.lstat(kh(site))
        assert (status.st_ino, status.st_mode) == (amd64_before.st_ino, amd64_before.st_mode)
    elif after == "own only":
        assert kh(site).read_text() == i386
    else:
        assert kh(site).read_text() == i386 + planted_line  # amd64's own file, for amd64 only


def place_chroot(site_, placement, outside):
    """One link placement between the base and etc/ssh; returns (chroot dir, the component named)."""
    (outside / "etc" / "ssh").mkdir(parents=True)
    (outside / "etc" / "ssh" / "ssh_known_hosts").write_text("the server's own file\n")
    (outside / "etc" / "ssh" / "ssh_known_hosts").chmod(0o600)
    chroot = site_.base / "linked"
    if placement == "the chroot is a symlink":
        chroot.symlink_to(outside)
        return chroot, None
    (chroot / "etc").mkdir(parents=True)
    if placement == "etc is a symlink":
        (chroot / "etc").rmdir()
        (chroot / "etc").symlink_to(outside / "etc")
        return chroot, chroot / "etc"
    if placement == "etc is an absolute symlink to /etc":
        (chroot / "etc").rmdir()
        (chroot / "etc").symlink_to("/etc")
        return chroot, chroot / "etc"
    if placement == "etc/ssh is a symlink":
        (chroot / "etc" / "ssh").symlink_to(outside / "etc" / "ssh")
    elif placement == "etc/ssh is a relative symlink":
        (chroot / "etc" / "ssh").symlink_to(os.path.relpath(outside / "etc" / "ssh", chroot / "etc"))
    elif placement == "etc/ssh is a file":
        (chroot / "etc" / "ssh").write_text("")
    else:
        raise AssertionError(placement)
    return chroot, chroot / "etc" / "ssh"


CHROOT_PLACEMENTS = [
    ("the chroot is a symlink", LINK),
    ("etc is a symlink", LINK),
    ("etc is an absolute symlink to /etc", LINK),
    ("etc/ssh is a symlink", LINK),
    ("etc/ssh is a relative symlink", LINK),
    ("etc/ssh is a file", "is a regular file, not a directory"),
]


@pytest.mark.parametrize(("placement", "reason"), CHROOT_PLACEMENTS, ids=[row[0] for row in CHROOT_PLACEMENTS])
def test_no_link_between_the_base_and_the_file_is_followed(site, keyscan, tmp_path, placement, reason):
    outside = tmp_path / "outside"
    chroot, component = place_chroot(site, placement, outside)
    untouched = snapshot(outside)
    etc_before = snapshot("/etc/ssh") if placement.endswith("/etc") else None

    result = quiet(site, env=keyscan.env)

    assert result.returncode == 0, result.stderr
    assert_clean_stderr(result)
    named = f"{component}: {reason}" if component else reason
    assert f"{PROG}: warning: skipping chroot {chroot}: {named}" in result.stderr.splitlines()
    assert snapshot(outside) == untouched
    if etc_before is not None:
        assert snapshot("/etc/ssh") == etc_before
    assert kh(site, "i386").exists() and kh(site, "amd64").exists()  # the others are written


# ---------------------------------------------------------------- 3. chmod never follows a link


def test_chmod_never_follows_a_symlinked_known_hosts_holding_the_same_text(site, keyscan, tmp_path):
    assert quiet(site, env=keyscan.env).returncode == 0
    secret = tmp_path / "secret"
    secret.write_bytes(kh(site, "i386").read_bytes())  # the very text the next run would write
    secret.chmod(0o600)
    kh(site, "i386").unlink()
    kh(site, "i386").symlink_to(secret)
    before = secret.stat()

    result = quiet(site, env=keyscan.env)

    assert result.returncode == 0
    assert f"{PROG}: warning: skipping chroot {site.base / 'i386'}: {kh(site, 'i386')}: {LINK}" in result.stderr
    after = secret.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_mtime_ns) == (0o600, before.st_mtime_ns)
    assert kh(site, "i386").is_symlink()


def test_a_regular_file_with_the_right_text_and_the_wrong_mode_is_replaced_not_chmod_ed(site, keyscan):
    assert quiet(site, env=keyscan.env).returncode == 0
    path = kh(site, "i386")
    path.chmod(0o600)
    hard_link = path.parent / "hard_link"
    os.link(path, hard_link)  # a chmod would change this one too

    result = site.run(env=keyscan.env)

    assert result.returncode == 0
    assert f"wrote {path}" in result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(hard_link.stat().st_mode) == 0o600


# ---------------------------------------------------------------- the cache and --export FILE


CACHE_FAMILY = [
    ("symlink to /dev/zero", LINK),
    ("fifo", "is a FIFO, not a regular file"),
    ("symlink to a file with a planted key", LINK),
    ("oversize file with a planted key", "is larger than 8388608 bytes"),
]


@pytest.mark.parametrize(("kind", "reason"), CACHE_FAMILY, ids=[row[0] for row in CACHE_FAMILY])
def test_a_cache_of_any_type_is_not_read_through_and_is_replaced(site, keyscan, tmp_path, planted_key, kind, reason):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target"
    planted_line = f"{SILENT} {planted_key[0]} {planted_key[1]}\n"
    if kind == "symlink to /dev/zero":
        site.cache.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(site.cache)
    elif kind == "symlink to a file with a planted key":
        target.write_text(planted_line)
        site.cache.symlink_to(target)
    else:
        with open(site.cache, "w") as big:
            big.write(planted_line)
            big.truncate(MAX_KNOWN_HOSTS_BYTES + 1)
    untouched = snapshot(outside)
    site.extraservers.write_text(f"{SILENT}\n")

    result = quiet(site, env=keyscan.env, timeout=60)

    assert result.returncode == 1
    assert_clean_stderr(result)
    assert f"{PROG}: warning: no last known keys from {site.cache}: {reason}" in result.stderr.splitlines()
    assert result.stderr.splitlines()[-1] == NO_ANSWER
    assert not site.cache.is_symlink()
    assert site.cache.read_text() == CACHE_HEADER  # replaced by rename, never written through
    assert snapshot(outside) == untouched
    assert planted_key[1] not in kh(site, "i386").read_text()


def test_a_cache_that_cannot_be_written_keeps_no_chroot_from_being_updated(site, keyscan, server_key):
    site.cache.mkdir()
    site.extraservers.write_text("good.example\n")
    keyscan.answer_key("good.example", server_key)

    result = quiet(site, env=keyscan.env)

    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"{PROG}: error: cannot write {site.cache}: Is a directory"
    for chroot in ("amd64", "i386"):
        assert f"good.example {server_key[0]} {server_key[1]}\n" in kh(site, chroot).read_text()


@pytest.mark.parametrize("kind", ["symlink to a file", "fifo"])
def test_export_replaces_what_is_there_and_never_writes_through_it(site, keyscan, tmp_path, kind):
    exported = tmp_path / "exported"
    target = tmp_path / "outside" / "target"
    target.parent.mkdir()
    if kind == "fifo":
        os.mkfifo(exported)
    else:
        target.write_text("the admin's file\n")
        exported.symlink_to(target)
    untouched = snapshot(target.parent)

    result = quiet(site, "--export", str(exported), env=keyscan.env, timeout=60)

    assert (result.returncode, result.stderr) == (0, "")
    assert not exported.is_symlink() and exported.is_file()
    assert exported.read_text() == own_only(site, exported.read_text())
    assert snapshot(target.parent) == untouched


# ---------------------------------------------------------------- whatever the extraservers file holds


HOSTILE_WORDS = [
    "::1%1,127.0.0.2",
    "fe80::3%\x1b[31m",
    "::1%a\x00b",
    "*",
    "a,b",
    "host:٣٧٧",
    "-oProxyCommand=x",
    "[::1]:22,127.0.0.1",
    "good.example",
    "[fd00::1]:2222",
    "fe80::1%eth0",
    "Mixed.Case.example.",
]
LINES = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.text(alphabet="ab19:.[]%-_,*?#@|! \t\r\x00\x1b\x0bé٣", max_size=24),
        st.sampled_from(HOSTILE_WORDS),
    ),
    max_size=25,
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES)
@example(lines=HOSTILE_WORDS)
def test_any_extraservers_file_writes_only_hosts_and_runs_ssh_keyscan_only_on_hosts(own_keys, server_key, lines):
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        base = root / "base"
        (base / "i386" / "etc").mkdir(parents=True)
        site_ = Site(root, base, own_keys[0], own_keys[1])
        site_.extraservers.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
        fake = Keyscan(root / "keyscan")
        answers = {}
        for word in HOSTILE_WORDS:
            answers[word] = f"{word} {server_key[0]} {server_key[1]}\n"
        for host in ("good.example", "fd00::1", "fe80::1%eth0", "mixed.case.example"):
            answers[host] = f"{host} {server_key[0]} {server_key[1]}\n"
        fake.answers_path.write_text(json.dumps(answers))

        result = quiet(site_, env=fake.env, timeout=120)

        assert result.returncode in (0, 1), result.stderr
        assert_clean_stderr(result)
        for call in fake.calls():
            options, host = call[:-1], call[-1]
            assert host_problem(host) is None, call
            assert [word for word in options if word.startswith("-")] in (["-t", "-T"], ["-t", "-T", "-p"]), call
        assert_every_name_is_a_host(site_.known_hosts().read_text())
        if site_.cache.exists():
            assert_every_name_is_a_host(site_.cache.read_text())


@given(st.text())
@example("::1%1,127.0.0.2")
@example("[*]:22")
@example("[a]:1,b")
def test_parse_server_and_own_name_give_a_host_or_value_error(text):
    for parse in (lambda word: parse_server(word).known_hosts_name, parse_own_name):
        try:
            name = parse(text)
        except ValueError as error:
            assert str(error).isprintable()
            continue
        assert name.isascii() and name.isprintable()
        assert not set(name) & set(",*?!@|# \t")
        host = name[1:].partition("]:")[0] if name.startswith("[") else name
        assert host_problem(host) is None


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
