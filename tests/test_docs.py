"""The docs' marked examples, run for real against daemons on loopback (tests/docrunner.py says how).

Fixtures a marker names:

- ``pool``: the README's pool, 127.0.1.1 (WEIGHT 1000), 127.0.1.2 (WEIGHT
  3000), 127.0.1.3 (drained) running ltsp-server-advertise on one port,
  127.0.1.4 where nothing listens; LB_SERVERS and LB_PORT in the environment,
  as LTSP exports lts.conf to LDM's screen script. Two-choice then puts
  127.0.1.2 first whatever the machine's load: both are empty and it is
  three times the size. Big WEIGHTs keep both Idle on a loaded 2-CPU box.
- ``named``: docs/get_hosts.md's, the same with names: app1 drained, app2,
  app9 dead, resolved through a private /etc/hosts in a mount namespace
  (root, and unshare, or the blocks skip).
- ``machine``: nothing started: this machine as the daemon sees it.

Every command runs with .venv/bin first on PATH (get_hosts and
ltsp-server-advertise as pip installs them), no memory of the last login.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import docrunner
import pytest
from services import Daemon

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "get_hosts.md"]
BIN = Path(sys.executable).parent
CLIENT_CONFS = ("/etc/lts.conf", "/etc/ltsp/ltsp.conf")
DAEMON_CONF = "/etc/ltsp/ltsp-server-advertise.conf"

POOL = {"127.0.1.1": "WEIGHT = 1000\n", "127.0.1.2": "WEIGHT = 3000\n", "127.0.1.3": "STATE = drain\n"}
POOL_DEAD = "127.0.1.4"
NAMED = {
    "app1": ("127.0.2.1", "STATE = drain\n"),
    "app2": ("127.0.2.2", "WEIGHT = 3000\n"),
    "app9": ("127.0.2.9", None),
}


def all_blocks():
    return [block for path in DOCS for block in docrunner.read_blocks(path)]


def block_id(block):
    return f"{Path(block.path).name}:{block.lineno}"


def base_env(home):
    return {
        "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "LB_RETRY_SECONDS": "0",  # each run a first login
    }


def free_port(addresses):
    """A port free on every one of ADDRESSES (found on the first, checked on the others)."""
    for _attempt in range(20):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port = probe.getsockname()[1]
        try:
            for address in addresses[1:]:
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return port
    raise AssertionError(f"no port free on all of {addresses}")


class Site:
    """Daemons on loopback, each with its config in a directory the daemon can read after dropping to nobody."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ltsp-lb-docs-"))
        self.dir.chmod(0o755)
        self.daemons = []

    def start(self, address, port, config):
        path = self.dir / f"{address}.conf"
        # SSH_PORT 0: no sshd here, and the examples are not about a Failing server.
        path.write_text(config + "SSH_PORT = 0\n")
        self.daemons.append(Daemon(path, listen=(f"{address}:{port}",)).start())

    def close(self):
        for daemon in self.daemons:
            daemon.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def site():
    made = Site()
    yield made
    made.close()


def pool_fixture(site):
    addresses = [*POOL, POOL_DEAD]
    port = free_port(addresses)
    for address, config in POOL.items():
        site.start(address, port, config)
    env = dict(base_env(site.dir), LB_SERVERS=" ".join(addresses), LB_PORT=str(port))
    return env, ()


def named_fixture(site):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("names through a private /etc/hosts need root and unshare")
    port = free_port([address for address, _config in NAMED.values()])
    lines = [Path("/etc/hosts").read_text(encoding="utf-8")]
    for name, (address, config) in NAMED.items():
        lines.append(f"{address} {name}\n")
        if config is not None:
            site.start(address, port, config)
    hosts = site.dir / "hosts"
    hosts.write_text("".join(lines))
    env = dict(base_env(site.dir), LB_SERVERS=" ".join(NAMED), LB_PORT=str(port))
    wrap = ("unshare", "--mount", "sh", "-c", f'mount --bind {hosts} /etc/hosts && exec "$0" "$@"')
    return env, wrap


def machine_fixture(site):
    if os.path.exists(DAEMON_CONF):
        pytest.skip(f"this machine has its own {DAEMON_CONF}")
    return base_env(site.dir), ()


FIXTURES = {"pool": pool_fixture, "named": named_fixture, "machine": machine_fixture}


@pytest.fixture(scope="module")
def fixtures(site):
    """Each fixture set up once, at its first use."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = FIXTURES[name](site)
        return made[name]

    return get


@pytest.mark.skipif(
    any(os.path.lexists(path) for path in CLIENT_CONFS), reason="this machine has its own lts.conf or ltsp.conf"
)
@pytest.mark.parametrize("block", all_blocks(), ids=block_id)
def test_the_docs_show_what_the_commands_print(block, fixtures):
    env, wrap = fixtures(block.fixture)
    results = docrunner.run_block(block, env, cwd=ROOT, wrap=wrap)
    problems = docrunner.mismatches(block, results)
    assert not problems, "\n\n".join(problems)


def test_the_docs_keep_their_examples_marked():
    """A marker lost in an edit would quietly test nothing: these stay marked."""
    blocks = all_blocks()
    commands = {(Path(block.path).name, step.command) for block in blocks for step in block.steps}
    assert {
        ("README.md", "get_hosts --status"),
        ("README.md", "ltsp-server-advertise --once"),
        ("get_hosts.md", "get_hosts --status"),
        ("get_hosts.md", "get_hosts --explain"),
        ("get_hosts.md", "LB_ALGORITHM=least-loaded get_hosts"),
    } <= commands
    assert {block.fixture for block in blocks} <= set(FIXTURES)


# --- the runner itself: it must be able to fail --------------------------------------------------

# (what, shown, printed, numbers, matches)
MATCHES = [
    ("same text", ["a b"], ["a b"], False, True),
    ("runs of spaces are one", ["HOST   STATE"], ["HOST STATE"], False, True),
    ("another word", ["Idle"], ["Busy"], False, False),
    ("a line too many", ["a"], ["a", "b"], False, False),
    ("a line too few", ["a", "b"], ["a"], False, False),
    ("... inside a line", ["read ... as LTSP 5"], ["read /tmp/x/lts.conf as LTSP 5"], False, True),
    ("... line: none", ["a", "...", "b"], ["a", "b"], False, True),
    ("... line: several", ["a", "...", "b"], ["a", "x", "y", "b"], False, True),
    ("numbers off: literal", ["rating 29.9"], ["rating 4.0"], False, False),
    ("numbers on: any number", ["127.0.1.2  Idle  29.9  0"], ["127.0.1.2 Idle 4012.5 3"], True, True),
    ("numbers on: an address stays literal", ["127.0.1.2  Idle"], ["127.0.1.1 Idle"], True, False),
    ("numbers on: a name stays literal", ["<load-1min>1.4</load-1min>"], ["<load-5min>1.4</load-5min>"], True, False),
    ("numbers on: a number is not a word", ["Drain 0.0"], ["Drain -"], True, False),
    ("numbers on: before punctuation", ["port 377: rating 50, in 2"], ["port 5044: rating 5.1, in 3"], True, True),
    ("numbers on: a port after a name stays literal", ["app1:3377 Idle"], ["app1:3378 Idle"], True, False),
    ("regex characters are literal", ["a.b (c)"], ["axb (c)"], False, False),
]


@pytest.mark.parametrize(("what", "shown", "printed", "numbers", "matches"), MATCHES, ids=[m[0] for m in MATCHES])
def test_lines_match(what, shown, printed, numbers, matches):
    assert docrunner.lines_match(shown, printed, numbers) is matches


def write_doc(tmp_path, text):
    path = tmp_path / "doc.md"
    path.write_text(text)
    return path


def test_a_wrong_example_is_reported_with_what_it_printed(tmp_path):
    text = "<!-- doctest: machine -->\n```console\n$ echo one; echo two >&2\none\n$ echo $?\n0\n```\n"
    doc = write_doc(tmp_path, text)
    [block] = docrunner.read_blocks(doc)
    results = docrunner.run_block(block, base_env(tmp_path), cwd=tmp_path)
    assert [output for _step, output in results] == [["one", "two"], ["0"]]
    [problem] = docrunner.mismatches(block, results)
    shown = "\n  the docs show:\n    one\n  it printed:\n    one\n    two"
    assert problem == f"{doc}:3: $ echo one; echo two >&2{shown}"
    assert [step.lineno for step in block.steps] == [3, 5]


def test_commands_of_a_block_share_one_shell(tmp_path):
    doc = write_doc(tmp_path, "<!-- doctest: machine stdout -->\n```console\n$ X=5\n$ false\n$ echo $X $?\n5 1\n```\n")
    [block] = docrunner.read_blocks(doc)
    assert docrunner.mismatches(block, docrunner.run_block(block, base_env(tmp_path), cwd=tmp_path)) == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("<!-- doctest: -->\n```console\n$ true\n```\n", "names no fixture"),
        ("<!-- doctest: pool loud -->\n```console\n$ true\n```\n", "unknown doctest flag(s) loud"),
        ("<!-- doctest: pool -->\n    $ true\n", "must be followed by a ```console block"),
        ("<!-- doctest: pool -->\n```console\n$ true\n", "never ends"),
        ("<!-- doctest: pool -->\n```console\nout\n$ true\n```\n", "output before the first"),
    ],
)
def test_a_bad_marker_is_an_error_naming_the_line(tmp_path, text, words):
    with pytest.raises(docrunner.DocError, match=r"doc\.md:\d+: ") as raised:
        docrunner.read_blocks(write_doc(tmp_path, text))
    assert words in str(raised.value)


# --- what no example run can show ------------------------------------------------------------------

STATUS_DOCS = [ROOT / "README.md", ROOT / "docs" / "get_hosts.md", ROOT / "docs" / "man" / "get_hosts.8"]


@pytest.mark.parametrize("path", STATUS_DOCS, ids=lambda path: path.name)
def test_skipped_rows_of_status_examples_rate_zero(path):
    """A Drain (or Failing) server's rating is 0 (the daemon says so): no example may show another."""
    rows = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    skipped = [row for row in rows if len(row) >= 3 and row[1] in ("Drain", "Failing") and not row[0].startswith(".")]
    assert skipped, f"{path.name} has no --status example with a Drain row"
    for row in skipped:
        assert row[2] == "0.0", f"{path.name}: {' '.join(row)}"


def test_the_states_tables_follow_the_filters():
    """docs/get_hosts.md's precedence sentence names the states in the order choose.FILTERS applies them."""
    from get_hosts.choose import FILTERS

    order = []
    for label, _check in FILTERS:
        if label not in order:
            order.append(label)
    text = " ".join((ROOT / "docs" / "get_hosts.md").read_text(encoding="utf-8").split())
    assert f"in the order {', '.join(order)}" in text.replace(" (load), Busy (response time)", "")


def test_the_man_page_lists_the_states_in_the_order_they_apply():
    from get_hosts.choose import FILTERS

    text = (ROOT / "docs" / "man" / "get_hosts.8").read_text(encoding="utf-8")
    section = text.split(".SH STATES\n", 1)[1].split("\n.SH ", 1)[0].split("\n.SS ", 1)[0]
    listed = re.findall(r"^\.TP\n\.B (\w+)$", section, re.MULTILINE)
    skipped = [label for i, (label, _check) in enumerate(FILTERS) if i == 0 or label != FILTERS[i - 1][0]]
    assert listed == [*skipped, "Busy", "Idle"]  # then the full ones (a last resort), then the rest
