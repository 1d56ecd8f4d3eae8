"""ltsp-update-sshkeys against real sshd servers on 127.0.0.1, run as the real command.

The end-to-end tests start /usr/sbin/sshd (root only, as in CI) on free
loopback ports with host keys generated here, run the script as a
subprocess and check the files byte for byte; the chroot test also has the
real ssh client verify a server's key against the written file. Parsing is
tested on tables through the script's own functions. Nothing is mocked.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from sshsite import KEY_TYPES, SCRIPT, generate_host_keys, own_names_written

import ltsp_lbcore
from ltsp_update_sshkeys.base import default_base
from ltsp_update_sshkeys.cli import DEFAULT_EXTRASERVERS, build_parser
from ltsp_update_sshkeys.keys import CACHE_HEADER, HEADER, HostKey, parse_known_hosts
from ltsp_update_sshkeys.messages import SshKeysError
from ltsp_update_sshkeys.names import Server, parse_server
from ltsp_update_sshkeys.policy import cache_keys, chroot_keys, plan_keys, silent_warning
from ltsp_update_sshkeys.scan import KEYSCAN_SLACK_SECONDS

SSHD = "/usr/sbin/sshd"
# For `ssh -o HostKeyAlgorithms=...`: which algorithm proves which key type.
HOST_KEY_ALGORITHM = {
    "ssh-ed25519": "ssh-ed25519",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ssh-rsa": "rsa-sha2-512",
}


def missing_ssh_tools():
    """Why the sshd tests cannot run here, or None."""
    if not os.path.exists(SSHD):
        return f"{SSHD} missing (apt-get install openssh-server; `make test` does it as root)"
    for tool in ("ssh-keyscan", "ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            return f"{tool} missing (apt-get install openssh-client)"
    if os.geteuid() != 0:
        return "sshd needs root to start (CI runs as root)"
    return None


needs_sshd = pytest.mark.skipif(missing_ssh_tools() is not None, reason=str(missing_ssh_tools()))


def free_loopback_port():
    """A port nothing listens on right now (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sshd:
    """A real sshd on 127.0.0.1:port with its own host keys."""

    def __init__(self, directory):
        self.directory = directory
        self.keys = generate_host_keys(directory)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.port = free_loopback_port()
        config = directory / "sshd_config"
        host_keys = "".join(f"HostKey {directory}/ssh_host_{key_type}_key\n" for key_type in KEY_TYPES)
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n{host_keys}"
            "UsePAM no\nPidFile none\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nAuthorizedKeysFile none\n"
        )
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config), "-o", "LogLevel=ERROR"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_for_banner()

    def _wait_for_banner(self):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                    if connection.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within 10 s")

    @property
    def name(self):
        return f"[127.0.0.1]:{self.port}"

    @property
    def spec(self):
        return f"127.0.0.1:{self.port}"

    def lines(self):
        """The known_hosts lines the script must write for this server, in its sorted order."""
        return [f"{self.name} {algorithm} {self.keys[algorithm]}\n" for algorithm in sorted(self.keys)]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process.stderr.close()


@pytest.fixture(scope="module")
def sshd_a(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd_a"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sshd_b(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd_b"))
    yield server
    server.stop()


def ssh_verdict(known_hosts, port, algorithm):
    """Run the real ssh client against 127.0.0.1:port trusting only known_hosts; return its stderr."""
    result = subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            f"GlobalKnownHostsFile={known_hosts}",
            "-o",
            f"HostKeyAlgorithms={algorithm}",
            "-o",
            "ConnectTimeout=5",
            "-p",
            str(port),
            "nobody@127.0.0.1",
            "true",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return result.stderr


# ---------------------------------------------------------------- parsing tables


@pytest.mark.parametrize(
    ("spec", "host", "port", "known_hosts_name"),
    [
        ("ltsp1", "ltsp1", 22, "ltsp1"),
        ("LTSP1.Example.ORG", "ltsp1.example.org", 22, "ltsp1.example.org"),
        ("ltsp1.example.org.", "ltsp1.example.org", 22, "ltsp1.example.org"),
        ("ltsp1:22", "ltsp1", 22, "ltsp1"),
        ("ltsp1:2222", "ltsp1", 2222, "[ltsp1]:2222"),
        ("10.0.0.2", "10.0.0.2", 22, "10.0.0.2"),
        ("10.0.0.2:65535", "10.0.0.2", 65535, "[10.0.0.2]:65535"),
        ("[fd00::2]:2222", "fd00::2", 2222, "[fd00::2]:2222"),
        ("[FD00:0::2]", "fd00::2", 22, "fd00::2"),
        ("fd00::2", "fd00::2", 22, "fd00::2"),
        ("  ltsp1  ", "ltsp1", 22, "ltsp1"),
    ],
)
def test_parse_server_accepts(spec, host, port, known_hosts_name):
    server = parse_server(spec)
    assert (server.host, server.port, server.known_hosts_name) == (host, port, known_hosts_name)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "expected one host"),
        ("two hosts", "expected one host"),
        ("ltsp1:0", "port 0 is out of range (1-65535)"),
        ("ltsp1:65536", "port 65536 is out of range (1-65535)"),
        ("ltsp1:", "port '' is not a number"),
        ("ltsp1:ssh", "port 'ssh' is not a number"),
        ("[fd00::2", "'[' without ']'"),
        ("[fd00::2]2222", "'2222' after ']'"),
        ("[ltsp1]:2222", "brackets are for IPv6 addresses"),
        ("fd00::2:x:2222:", "an IPv6 address with a port is written [address]:port"),
        ("bad!host", "'!' is not allowed in a host name"),
        ("-oProxyCommand=x", "'=' is not allowed in a host name"),
        ("-ltsp1", "a host name cannot start with '-' or '.'"),
        ("a..b", "empty label in a host name ('..')"),
    ],
)
def test_parse_server_rejects(spec, reason):
    with pytest.raises(ValueError) as raised:
        parse_server(spec)
    assert reason in str(raised.value)


def test_parse_known_hosts_reads_plain_lines_only():
    text = (
        "# comment\n"
        "a,[b]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIUeUvW5qa/8ncXNQ2hQAELDux7LCEICaBlvIywe7SIK\n"
        "|1|hash= ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIUeUvW5qa/8ncXNQ2hQAELDux7LCEICaBlvIywe7SIK\n"
        "@revoked c ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIUeUvW5qa/8ncXNQ2hQAELDux7LCEICaBlvIywe7SIK\n"
        "d ssh-ed25519 not*base64\n"
        "e\n"
    )
    keys = parse_known_hosts(text)
    assert sorted(keys) == ["[b]:2222", "a"]
    assert {key.key_type for key in keys["a"]} == {"ssh-ed25519"}


# ---------------------------------------------------------------- the keep policy: which keys each file gets

A, B = Server("a"), Server("b", 2222)
NEW, OLD, CHROOT_ONLY = (HostKey("ssh-ed25519", blob) for blob in ("TkVX", "T0xE", "Q0hST09U"))

KEEP_POLICY = [
    # (what, scanned, cache, {chroot: its own file}, {chroot: what it gets}, what the cache records, warnings)
    (
        "an answer wins over the cache and over every chroot's file (a rotated key is dropped)",
        {A: {NEW}},
        {"a": {OLD}},
        {"i386": {"a": {CHROOT_ONLY}}},
        {"i386": {A: {NEW}}},
        {A: {NEW}},
        [],
    ),
    (
        "silent, in the cache: the cache's keys everywhere, the chroot's own ignored",
        {A: set()},
        {"a": {OLD}},
        {"i386": {"a": {CHROOT_ONLY}}, "amd64": {}},
        {"i386": {A: {OLD}}, "amd64": {A: {OLD}}},
        {A: {OLD}},
        ["server a did not answer: kept its 1 last known keys"],
    ),
    (
        "silent, not in the cache: each chroot keeps its own keys, for itself only; the cache records none",
        {A: set()},
        {},
        {"i386": {"a": {CHROOT_ONLY}}, "amd64": {}},
        {"i386": {A: {CHROOT_ONLY}}, "amd64": {A: set()}},
        {},
        ["server a did not answer: not in the cache; kept the keys each chroot's own file had, in i386 (1)"],
    ),
    (
        "silent, known nowhere: no keys, said so",
        {A: set()},
        {"b": {OLD}},
        {"i386": {}},
        {"i386": {A: set()}},
        {},
        ["server a did not answer: no last known keys"],
    ),
    (
        "the cache and the chroot name a server by host and port: [b]:2222 is not b",
        {B: set()},
        {"b": {OLD}},
        {"i386": {"b": {CHROOT_ONLY}}},
        {"i386": {B: set()}},
        {},
        ["server [b]:2222 did not answer: no last known keys"],
    ),
    (
        "one answers, one silent from the cache: the cache keeps both for the next run",
        {A: {NEW}, B: set()},
        {"[b]:2222": {OLD}, "a": {OLD}},
        {"i386": {}},
        {"i386": {A: {NEW}, B: {OLD}}},
        {A: {NEW}, B: {OLD}},
        ["server [b]:2222 did not answer: kept its 1 last known keys"],
    ),
]


@pytest.mark.parametrize(
    ("what", "scanned", "cache", "chroot_files", "chroots", "cached", "warnings"),
    KEEP_POLICY,
    ids=[row[0] for row in KEEP_POLICY],
)
def test_keep_policy(what, scanned, cache, chroot_files, chroots, cached, warnings):
    plan = plan_keys(sorted(scanned), scanned, cache)
    got, kept_by_server = {}, {}
    for chroot, remembered in chroot_files.items():
        got[chroot], kept = chroot_keys(plan, remembered)
        for server, count in kept.items():
            kept_by_server.setdefault(server, {})[chroot] = count

    assert got == chroots
    assert cache_keys(plan) == cached
    assert [silent_warning(plan, server, kept_by_server.get(server)) for server in plan.silent] == warnings


# ---------------------------------------------------------------- the real command


@needs_sshd
def test_every_chroot_gets_own_and_extra_keys_that_ssh_accepts(site, sshd_a):
    (site.base / "arm64" / "etc").mkdir(parents=True)  # a chroot without etc/ssh yet
    (site.base / "images" / "etc").mkdir(parents=True)  # LTSP's image store, never a chroot
    (site.base / ".staging" / "etc").mkdir(parents=True)
    (site.base / "not-a-chroot").mkdir()
    (site.base / "README").write_text("a file, not a chroot\n")

    result = site.run(sshd_a.spec, "--own-name", "ltsp-lab")

    assert result.returncode == 0, result.stderr
    text = site.known_hosts("i386").read_text()
    names = own_names_written(text)
    assert names[0] == "server"
    assert socket.gethostname().lower() in names
    assert names[-1] == "ltsp-lab"
    assert text == site.expected_text(names, sshd_a)
    for chroot in ("amd64", "arm64", "i386"):
        path = site.known_hosts(chroot)
        assert path.read_text() == text
        assert path.stat().st_mode & 0o7777 == 0o644
    assert not (site.base / "images" / "etc" / "ssh").exists()
    assert not (site.base / ".staging" / "etc" / "ssh").exists()
    assert not (site.base / "not-a-chroot" / "etc").exists()

    # The real ssh client trusts the server through the written file, for every key type...
    for algorithm in sorted(sshd_a.keys):
        verdict = ssh_verdict(site.known_hosts("amd64"), sshd_a.port, HOST_KEY_ALGORITHM[algorithm])
        assert "Permission denied" in verdict, verdict
    # ...and refuses it without the file's lines: the check above can fail.
    header_only = site.root / "header_only"
    header_only.write_text(HEADER)
    verdict = ssh_verdict(header_only, sshd_a.port, "ssh-ed25519")
    assert "Host key verification failed" in verdict, verdict


@needs_sshd
def test_own_keys_named_by_own_name_are_trusted(tmp_path, sshd_a):
    """Pointing --host-keys-dir at sshd_a's keys makes it "this server"; ssh checks the own-key line."""
    base = tmp_path / "base"
    (base / "i386" / "etc").mkdir(parents=True)
    (tmp_path / "extraservers").write_text("# no extra servers\n")
    result = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--base", str(base), "--cache", str(tmp_path / "cache")),
            *("--extraservers", str(tmp_path / "extraservers"), "--host-keys-dir", str(sshd_a.directory)),
            *("--own-name", sshd_a.name, "-q"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    known_hosts = base / "i386" / "etc" / "ssh" / "ssh_known_hosts"
    assert not (tmp_path / "cache").exists()  # no extra servers and no cache yet: nothing to remember
    verdict = ssh_verdict(known_hosts, sshd_a.port, "ssh-ed25519")
    assert "Permission denied" in verdict, verdict


@needs_sshd
def test_second_sshd_on_another_port_gets_bracketed_lines(site, sshd_a, sshd_b):
    result = site.run(sshd_b.spec, sshd_a.spec)

    assert result.returncode == 0, result.stderr
    text = site.known_hosts().read_text()
    assert text == site.expected_text(own_names_written(text), sshd_a, sshd_b)
    for server in (sshd_a, sshd_b):
        lines = [line for line in text.splitlines() if line.startswith(f"[127.0.0.1]:{server.port} ")]
        assert len(lines) == 3
    assert site.cache.read_text() == CACHE_HEADER + "".join(
        line for server in sorted((sshd_a, sshd_b), key=lambda s: s.port) for line in server.lines()
    )


@needs_sshd
def test_closed_port_is_named_and_exits_1_after_writing_the_rest(site, sshd_a):
    closed_port = free_loopback_port()
    site.extraservers.write_text(f"{sshd_a.spec}\n127.0.0.1:{closed_port}\n")

    result = site.run()

    assert result.returncode == 1
    assert f"server [127.0.0.1]:{closed_port} did not answer: no last known keys" in result.stderr
    assert "Traceback" not in result.stderr
    text = site.known_hosts("amd64").read_text()
    assert text == site.expected_text(own_names_written(text), sshd_a)
    assert site.known_hosts("i386").read_text() == text


@needs_sshd
@pytest.mark.parametrize("remembered_by", ["cache", "chroot"])
def test_stopped_server_keeps_its_last_known_keys(site, tmp_path, sshd_a, remembered_by):
    going_away = Sshd(tmp_path / "going_away")
    try:
        first = site.run(sshd_a.spec, going_away.spec)
        assert first.returncode == 0, first.stderr
    finally:
        going_away.stop()
    before = site.known_hosts().read_bytes()
    cache_before = site.cache.read_bytes()
    assert going_away.lines()[0].encode() in cache_before
    if remembered_by == "chroot":
        site.cache.unlink()  # e.g. a fresh /etc/ltsp: the chroots still know the keys

    second = site.run(sshd_a.spec, going_away.spec)

    assert second.returncode == 1
    if remembered_by == "cache":
        assert f"server {going_away.name} did not answer: kept its 3 last known keys" in second.stderr
    else:
        assert (
            f"server {going_away.name} did not answer: not in the cache; kept the keys each chroot's own file had, "
            "in amd64 (3), i386 (3)"
        ) in second.stderr
    assert site.known_hosts().read_bytes() == before
    assert site.known_hosts("amd64").read_bytes() == before
    if remembered_by == "cache":
        assert site.cache.read_bytes() == cache_before
    else:
        # The cache records only what ssh-keyscan fetched: a chroot's file never plants keys there.
        assert site.cache.read_text() == CACHE_HEADER + "".join(sshd_a.lines())


@needs_sshd
def test_server_that_never_speaks_times_out(site, sshd_a):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts (the kernel does) but never sends a banner
        silent_port = silent.getsockname()[1]
        started = time.monotonic()
        result = site.run(sshd_a.spec, f"127.0.0.1:{silent_port}", "--timeout", "1")
        elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert f"server [127.0.0.1]:{silent_port} did not answer" in result.stderr
    assert elapsed < 1 + KEYSCAN_SLACK_SECONDS + 3
    assert f"[127.0.0.1]:{sshd_a.port} ssh-ed25519" in site.known_hosts().read_text()


@needs_sshd
def test_second_run_changes_nothing(site, sshd_a):
    site.extraservers.write_text(f"{sshd_a.spec}\n")
    assert site.run().returncode == 0
    paths = [site.known_hosts("amd64"), site.known_hosts("i386"), site.cache]
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) for path in paths}
    time.sleep(0.05)  # a rewrite would get a later mtime

    result = site.run()

    assert result.returncode == 0, result.stderr
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) for path in paths} == before
    assert result.stderr.count("unchanged") == 3
    assert "wrote" not in result.stderr


@needs_sshd
def test_reader_never_sees_a_partial_file(site, sshd_a, sshd_b):
    """Runs alternate between two server lists while a thread reads the file as fast as it can."""
    path = site.known_hosts()
    seen = []
    stop = threading.Event()

    def read_continuously():
        while not stop.is_set():
            with contextlib.suppress(FileNotFoundError):  # before the first run wrote it
                seen.append(path.read_bytes())

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        outputs = set()
        for run in range(6):
            servers = [sshd_a.spec] if run % 2 == 0 else [sshd_a.spec, sshd_b.spec]
            result = site.run(*servers, "-q")
            assert result.returncode == 0, result.stderr
            outputs.add(path.read_bytes())
    finally:
        stop.set()
        reader.join()

    assert len(outputs) == 2  # the content really changed between runs
    assert len(seen) > 100
    assert set(seen) <= outputs
    assert sorted(os.listdir(path.parent)) == ["ssh_known_hosts"]  # no temporary left beside


@needs_sshd
def test_extraservers_comments_blank_and_bad_lines(site, sshd_a):
    site.extraservers.write_text(
        "# LTSP application servers\n"
        "\n"
        f"{sshd_a.spec}   # the lab server\n"
        "two words\n"
        "   \n"
        "ltsp1:0\n"
        "[fd00::2\n"
        f"127.0.0.1:{sshd_a.port}\n"  # listed twice: scanned and written once
    )

    result = site.run("--export", "-")

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"ltsp-update-sshkeys: warning: {site.extraservers}:4: skipping bad server 'two words': "
        "expected one host or host:port",
        f"ltsp-update-sshkeys: warning: {site.extraservers}:6: skipping bad server 'ltsp1:0': "
        "port 0 is out of range (1-65535)",
        f"ltsp-update-sshkeys: warning: {site.extraservers}:7: skipping bad server '[fd00::2': '[' without ']'",
    ]
    assert result.stdout == site.expected_text(own_names_written(result.stdout), sshd_a)


@needs_sshd
def test_export_touches_no_chroot_and_no_cache(site, sshd_a):
    exported = site.root / "exported"

    to_stdout = site.run(sshd_a.spec, "--export", "-", "-q")
    to_file = site.run(sshd_a.spec, "--export", str(exported), "-q")

    assert (to_stdout.returncode, to_stdout.stderr) == (0, "")
    assert (to_file.returncode, to_file.stderr) == (0, "")
    assert to_stdout.stdout == site.expected_text(own_names_written(to_stdout.stdout), sshd_a)
    assert exported.read_text() == to_stdout.stdout
    assert exported.stat().st_mode & 0o7777 == 0o644
    assert not site.known_hosts("i386").exists()
    assert not site.known_hosts("amd64").exists()
    assert not site.cache.exists()


def test_symlinked_etc_ssh_is_skipped(site, tmp_path):
    elsewhere = tmp_path / "servers_own_etc_ssh"
    elsewhere.mkdir()
    (site.base / "linked" / "etc").mkdir(parents=True)
    (site.base / "linked" / "etc" / "ssh").symlink_to(elsewhere)

    result = site.run()

    assert result.returncode == 0, result.stderr
    linked = site.base / "linked"
    assert f"warning: skipping chroot {linked}: {linked}/etc/ssh: is a symbolic link (not followed)" in result.stderr
    assert list(elsewhere.iterdir()) == []
    assert site.known_hosts("i386").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["bad!host"], "bad server 'bad!host': '!' is not allowed in a host name"),
        (["--own-name", "a,b"], "bad own name 'a,b': ',' is not allowed in a host name"),
        (["--base", "/nonexistent/opt/ltsp"], "base directory /nonexistent/opt/ltsp does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(site, arguments, message):
    result = site.run(*arguments)

    assert result.returncode == 2
    assert result.stderr == f"ltsp-update-sshkeys: error: {message}\n"
    assert not site.known_hosts().exists()


def test_missing_explicit_extraservers_is_an_error(site):
    site.extraservers.unlink()

    result = site.run()

    assert result.returncode == 2
    assert result.stderr == (
        f"ltsp-update-sshkeys: error: cannot read extraservers file {site.extraservers}: no such file\n"
    )


def test_debug_shows_the_traceback(site):
    result = site.run("bad!host", "--debug")

    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.endswith(
        "ltsp-update-sshkeys: error: bad server 'bad!host': '!' is not allowed in a host name\n"
    )


@pytest.mark.parametrize("value", ["-1", "0", "soon", "inf"])
def test_bad_timeout_is_a_usage_error(site, value):
    result = site.run("--timeout", value)

    assert result.returncode == 2
    assert "--timeout" in result.stderr
    assert "timeout is not" in result.stderr


def test_help_and_version():
    help_result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False)
    version = subprocess.run([sys.executable, str(SCRIPT), "--version"], capture_output=True, text=True, check=False)

    assert help_result.returncode == 0
    for option in ("--base", "--ltsp-conf", "--extraservers", "--cache", "--timeout", "--export", "--quiet"):
        assert option in help_result.stdout
    assert (version.returncode, version.stdout) == (0, f"ltsp-update-sshkeys {ltsp_lbcore.__version__}\n")


@pytest.mark.skipif(os.path.exists(DEFAULT_EXTRASERVERS), reason="this machine has a real extraservers file")
def test_missing_default_extraservers_means_no_extra_servers(tmp_path, own_keys):
    base = tmp_path / "base"
    (base / "i386" / "etc").mkdir(parents=True)

    result = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--base", str(base), "--cache", str(tmp_path / "cache")),
            *("--host-keys-dir", str(own_keys[0]), "--quiet"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert (result.returncode, result.stderr) == (0, "")
    text = (base / "i386" / "etc" / "ssh" / "ssh_known_hosts").read_text()
    assert [line for line in text.splitlines() if not line.startswith("#") and not line.startswith("server,")] == []
    assert len(text.splitlines()) == len(HEADER.splitlines()) + 3


# ---------------------------------------------------------------- the default base: LTSP 5 or LTSP 20+


def make_tree(root, paths, ltsp_conf=None):
    """Directories (ending in /) and files below root; ltsp_conf: the text of /etc/ltsp/ltsp.conf."""
    for path in paths:
        target = root / path.lstrip("/")
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("#!/bin/sh\n")
    if ltsp_conf is not None:
        (root / "etc" / "ltsp").mkdir(parents=True, exist_ok=True)
        (root / "etc" / "ltsp" / "ltsp.conf").write_text(ltsp_conf)


LTSP20 = "/usr/share/ltsp/ltsp"

BASES = [
    # (what is installed or present, ltsp.conf, the base chosen, why)
    ([], None, "/opt/ltsp", "neither /opt/ltsp (LTSP 5) nor /srv/ltsp (LTSP 20+) exists"),
    (["/opt/ltsp/"], None, "/opt/ltsp", "LTSP 5 layout"),
    (["/srv/ltsp/"], None, "/srv/ltsp", "LTSP 20+ layout (/opt/ltsp does not exist)"),
    (["/opt/ltsp/", "/srv/ltsp/"], None, "/opt/ltsp", "LTSP 5 layout"),
    ([LTSP20], None, "/srv/ltsp", f"LTSP 20+ is installed ({LTSP20})"),
    ([LTSP20, "/opt/ltsp/"], None, "/srv/ltsp", f"LTSP 20+ is installed ({LTSP20})"),
    (["/usr/sbin/ltsp", "/opt/ltsp/"], None, "/srv/ltsp", "LTSP 20+ is installed (/usr/sbin/ltsp)"),
    ([LTSP20], "[server]\nBASE_DIR=/data/ltsp\n", "/data/ltsp", "LTSP 20+: BASE_DIR in {conf}:2"),
    ([LTSP20], "BASE_DIR='/data/a'\n[common]\nBASE_DIR=\"/data/b\"  # b\n", "/data/b", "{conf}:3"),
    ([LTSP20], "[server]\nBASE_DIR=/s\n[common]\nBASE_DIR=/c\n", "/s", "{conf}:2"),  # [server] runs last
    ([LTSP20], "[Server] # the server\nBASE_DIR=/s\n[server]\nX=1\n", "/srv/ltsp", "is installed"),
    ([LTSP20], "[clients]\nBASE_DIR=/c\n[pc01]\nBASE_DIR=/p\n", "/srv/ltsp", "is installed"),
    ([LTSP20], "# BASE_DIR=/commented\nBASE_DIR = /spaced\n", "/spaced", "{conf}:2"),
    ([], "[server]\nBASE_DIR=/data/ltsp\n", "/opt/ltsp", "neither"),  # ltsp.conf alone is not LTSP 20+
    # LTSP's own shell: INCLUDE= runs the section it names, as [server] runs it.
    ([LTSP20], "[server]\nINCLUDE=paths\n[paths]\nBASE_DIR=/data/ltsp\n", "/data/ltsp", "{conf}:4"),
    ([LTSP20], "[common]\nINCLUDE = Paths\n[server]\nX=1\n[paths]\nBASE_DIR='/d l'\n", "/d l", "{conf}:6"),
    ([LTSP20], "[clients]\nINCLUDE=paths\n[paths]\nBASE_DIR=/p\n", "/srv/ltsp", "is installed"),  # clients only
    ([LTSP20], "[server]\nBASE_DIR=/a;b\n", "/a", "{conf}:2"),  # then the command b runs
    ([LTSP20], "[common]\nBASE_DIR=/c\n[server]\nunset BASE_DIR\n", "/srv/ltsp", "is installed"),
    ([LTSP20], '[server]\nD=/data\nBASE_DIR="$D/ltsp"\n', "/data/ltsp", "{conf}:3"),
    # section_call runs the first section matching "server": [*] ran for "common" already, so nothing.
    ([LTSP20], "[*]\nBASE_DIR=/star\n[server]\nBASE_DIR=/s\n", "/star", "{conf}:2"),
]


@pytest.mark.parametrize(("present", "ltsp_conf", "base", "why"), BASES)
def test_default_base_follows_the_installed_ltsp(tmp_path, present, ltsp_conf, base, why):
    make_tree(tmp_path, present, ltsp_conf)
    conf = tmp_path / "etc" / "ltsp" / "ltsp.conf"

    chosen, reason = default_base(str(tmp_path))

    assert chosen == str(tmp_path / base.lstrip("/"))
    assert why.format(conf=conf) in reason


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("BASE_DIR=$HOME/ltsp", "$HOME is not set by ltsp.conf before this, and LTSP's own value is not known here"),
        ("BASE_DIR=~/ltsp", "~ home directory expansion"),
        ("BASE_DIR=`pwd`", "`...` command substitution"),
        ('BASE_DIR="/a/$X"', "$X is not set by ltsp.conf before this, and LTSP's own value is not known here"),
        ("read BASE_DIR", "get_hosts evaluates assignments only"),
    ],
)
def test_base_dir_ltsp_cannot_read_is_an_error_naming_the_line(tmp_path, line, why):
    make_tree(tmp_path, [LTSP20], f"[server]\n{line}\n")
    conf = tmp_path / "etc" / "ltsp" / "ltsp.conf"

    with pytest.raises(SshKeysError) as raised:
        default_base(str(tmp_path))

    assert str(raised.value) == (
        f"cannot tell BASE_DIR: {conf}:2: not evaluated: {line!r} ({why}), so BASE_DIR is unknown; give --base"
    )


def test_a_relative_base_dir_is_an_error_naming_the_line(tmp_path):
    make_tree(tmp_path, [LTSP20], "[server]\nINCLUDE=paths\n[paths]\nBASE_DIR=ltsp\n")
    conf = tmp_path / "etc" / "ltsp" / "ltsp.conf"

    with pytest.raises(SshKeysError) as raised:
        default_base(str(tmp_path))

    assert str(raised.value) == f"cannot tell BASE_DIR from {conf}:4 ('ltsp' is not an absolute path); give --base"


def run_with_ltsp_conf(tmp_path, own_keys, text):
    """The real command, --ltsp-conf naming a temporary ltsp.conf holding text, no --base."""
    conf = tmp_path / "ltsp.conf"
    conf.write_text(text)
    command = [sys.executable, str(SCRIPT), "--ltsp-conf", str(conf), "--host-keys-dir", str(own_keys[0])]
    command += ["--extraservers", os.devnull, "--cache", str(tmp_path / "cache")]
    return conf, subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_base_dir_from_a_section_server_includes(tmp_path, own_keys):
    base = tmp_path / "data" / "ltsp"
    (base / "x86_64" / "etc").mkdir(parents=True)

    conf, result = run_with_ltsp_conf(
        tmp_path, own_keys, f"[server]\nINCLUDE=paths\n\n[clients]\nBASE_DIR=/nowhere\n\n[paths]\nBASE_DIR={base}\n"
    )

    assert result.returncode == 0, result.stderr
    assert f"ltsp-update-sshkeys: base {base} (LTSP 20+: BASE_DIR in {conf}:8)\n" in result.stderr
    assert (base / "x86_64" / "etc" / "ssh" / "ssh_known_hosts").read_text().startswith(HEADER)


def test_base_dir_ltsp_conf_cannot_tell_is_one_error_line(tmp_path, own_keys):
    conf, result = run_with_ltsp_conf(tmp_path, own_keys, "[server]\nINCLUDE=paths\n[paths]\nBASE_DIR=$(cat /b)\n")

    assert result.returncode == 2
    assert result.stderr == (
        f"ltsp-update-sshkeys: error: cannot tell BASE_DIR: {conf}:4: not evaluated: 'BASE_DIR=$(cat /b)' "
        "($(...) command substitution), so BASE_DIR is unknown; give --base\n"
    )


def test_a_missing_ltsp_conf_named_on_the_command_line_is_an_error(tmp_path, own_keys):
    command = [sys.executable, str(SCRIPT), "--ltsp-conf", str(tmp_path / "none.conf"), "--extraservers", os.devnull]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert (result.returncode, result.stderr) == (
        2,
        f"ltsp-update-sshkeys: error: cannot read ltsp.conf {tmp_path / 'none.conf'}: no such file\n",
    )


@pytest.mark.skipif(
    any(os.path.exists(path) for path in ("/opt/ltsp", "/srv/ltsp", LTSP20, "/usr/sbin/ltsp")),
    reason="this machine has an LTSP base or LTSP 20+",
)
def test_no_base_anywhere_is_one_error_line_with_the_way_out(tmp_path, own_keys):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--host-keys-dir", str(own_keys[0]), "--extraservers", os.devnull],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr == (
        "ltsp-update-sshkeys: error: base directory /opt/ltsp does not exist (neither /opt/ltsp (LTSP 5) nor "
        "/srv/ltsp (LTSP 20+) exists): give --base; for LTSP 20+ images use --export /etc/ltsp/ssh_known_hosts, "
        "then ltsp initrd\n"
    )


NO_LTSP_COMMANDS = not any(os.path.exists(p) for p in (LTSP20, "/usr/sbin/ltsp", "/usr/sbin/ltsp-update-image"))
LTSP20_HINT = (
    "ltsp image x86_64 (or, for every image without a rebuild: ltsp-update-sshkeys --export "
    "/etc/ltsp/ssh_known_hosts && ltsp initrd)"
)


@pytest.mark.skipif(not NO_LTSP_COMMANDS, reason="this machine has LTSP 5's or LTSP 20+'s commands installed")
@pytest.mark.parametrize(
    ("layout", "hint"),
    [
        # Before, all three said LTSP 5's "ltsp-update-image x86_64" (LTSP 20+ is not installed here).
        ("ltsp-conf", LTSP20_HINT),
        ("ltsp5-chroot", "ltsp-update-image x86_64 (LTSP 5 NBD images)"),
        ("unknown", f"{LTSP20_HINT} on LTSP 20+; ltsp-update-image x86_64 on LTSP 5"),
    ],
)
def test_the_image_rebuild_it_suggests_is_the_one_of_the_base(tmp_path, own_keys, layout, hint):
    base = tmp_path / "base"
    (base / "x86_64" / "etc").mkdir(parents=True)
    if layout == "ltsp5-chroot":
        (base / "x86_64" / "etc" / "ltsp_chroot").write_text("")  # ltsp-build-client's mark
    where = ["--base", str(base)]
    if layout == "ltsp-conf":
        conf = tmp_path / "ltsp.conf"
        conf.write_text(f"[server]\nBASE_DIR={base}\n")
        where = ["--ltsp-conf", str(conf)]
    command = [sys.executable, str(SCRIPT), *where, "--host-keys-dir", str(own_keys[0])]
    command += ["--extraservers", os.devnull, "--cache", str(tmp_path / "cache")]

    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == f"ltsp-update-sshkeys: clients booting images see the change after: {hint}"


def test_the_man_page_names_every_option():
    text = (SCRIPT.parent / "docs" / "man" / "ltsp-update-sshkeys.8").read_text(encoding="utf-8")
    for action in build_parser()._actions:
        for flag in action.option_strings:
            assert flag.replace("-", "\\-") in text, f"ltsp-update-sshkeys.8 does not mention {flag}"


def test_python_m_runs_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "ltsp_update_sshkeys", "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=SCRIPT.parent,
    )
    assert (result.returncode, result.stdout) == (0, f"ltsp-update-sshkeys {ltsp_lbcore.__version__}\n")


def test_help_says_what_is_written_where():
    result = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False)

    text = " ".join(result.stdout.split())
    for words in (
        "BASE/CHROOT/etc/ssh/ssh_known_hosts",
        "/etc/ltsp/ssh_known_hosts.auto",
        "BASE_DIR from /etc/ltsp/ltsp.conf or /srv/ltsp; else /opt/ltsp (LTSP 5)",
        "Squashfs images (BASE/images/*.img) cannot be written in place",
        "ltsp image CHROOT",
        "ltsp-update-sshkeys --export /etc/ltsp/ssh_known_hosts && ltsp initrd",
    ):
        assert words in text
