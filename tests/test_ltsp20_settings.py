"""get_hosts on an LTSP 20+ client: /etc/ltsp/ltsp.conf found, read by LTSP's rules, the environment still first.

The reader itself is tested against LTSP's own shell in test_ltspconf.py;
this file checks how settings and the CLI use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from get_hosts import settings as settings_module
from get_hosts.identity import Identity
from get_hosts.settings import LTSP5, LTSP20, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "ltsp.conf.example"

CLIENTS = [
    # (who, identity, expected fields)
    (
        "any client: [clients]",
        Identity("ws17", "198.18.0.17", "02:00:00:00:00:17", "eth0"),
        {"servers": ["app1", "app2", "app3", "app4", "2001:db8::10"], "algorithm": "two-choice", "max_load": 3.0},
    ),
    (
        "lab 2 by a MAC of a | pattern, through INCLUDE=",
        Identity("ws40", "198.18.0.40", "00:1a:2b:3c:4d:02", "eth0"),
        {"servers": ["lab2-app1", "lab2-app2"], "algorithm": "mac-hash", "max_load": None},
    ),
    (
        "the balancer's clients by IP pattern",
        Identity("ws9", "10.20.0.9", "02:00:00:00:00:09", "eth0"),
        {"algorithm": "loadbalancer", "balancers": (("balancer1", 8377), ("balancer2", 8377))},
    ),
    (
        "pinned by IP, its own port",
        Identity("ws77", "198.18.0.77", "02:00:00:00:00:77", "eth0"),
        {"servers": ["app4"], "algorithm": "fixed"},
    ),
]


@pytest.mark.parametrize(("who", "identity", "expected"), CLIENTS, ids=[c[0] for c in CLIENTS])
def test_the_shipped_ltsp_conf_example_gives_each_client_what_it_says(who, identity, expected):
    settings = load_settings({}, str(EXAMPLE), identity=identity)
    assert settings.conf_format == LTSP20
    assert settings.warnings == []
    for field, value in expected.items():
        got = getattr(settings, field)
        if field == "servers":
            got = [entry.name for entry in got]
        assert got == value, (who, field)


def test_the_environment_still_comes_first(tmp_path):
    identity = Identity("ws17", "198.18.0.17", "02:00:00:00:00:17", "eth0")
    settings = load_settings({"LB_ALGORITHM": "random", "LB_SERVERS": "x1 x2"}, str(EXAMPLE), identity=identity)
    assert settings.algorithm == "random" and [e.name for e in settings.servers] == ["x1", "x2"]
    assert settings.max_load == 3.0  # not in the environment: from [clients]


def test_ltsp_conf_is_found_when_there_is_no_lts_conf(tmp_path, monkeypatch):
    lts_conf, ltsp_conf = tmp_path / "lts.conf", tmp_path / "ltsp" / "ltsp.conf"
    ltsp_conf.parent.mkdir()
    ltsp_conf.write_text("[clients]\nLB_SERVERS=from-ltsp-conf\n")
    monkeypatch.setattr(settings_module, "DEFAULT_CONF_PATHS", (str(lts_conf), str(ltsp_conf)))
    settings = load_settings({}, identity=Identity("c", None, None, None))
    assert (settings.lts_conf, settings.conf_format) == (str(ltsp_conf), LTSP20)
    assert [e.name for e in settings.servers] == ["from-ltsp-conf"]
    lts_conf.write_text("[Default]\nLB_SERVERS = from-lts-conf\n")  # LTSP 5's file wins when both are there
    settings = load_settings({}, identity=Identity("c", None, None, None))
    assert (settings.lts_conf, settings.conf_format) == (str(lts_conf), LTSP5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Default]\nLB_SERVERS = a\n", LTSP5),
        ("[clients]\nLB_SERVERS=a\n", LTSP20),
        ("[common]\nLB_SERVERS=a\n[Default]\nX=1\n", LTSP20),
    ],
)
def test_either_format_from_any_path_told_apart_by_its_sections(tmp_path, text, expected):
    path = tmp_path / "some.conf"
    path.write_text(text)
    settings = load_settings({}, str(path), identity=Identity("c", None, None, None))
    assert settings.conf_format == expected and [e.name for e in settings.servers] == ["a"]


def test_explain_says_which_file_and_format(tmp_path):
    conf = tmp_path / "ltsp.conf"
    conf.write_text("[clients]\nLB_SERVERS=127.0.0.1:1\nLB_ALGORITHM=fixed\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LB_RETRY_SECONDS": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "get_hosts", "--lts-conf", str(conf), "--explain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and out.stdout == "127.0.0.1\n"
    assert f"get_hosts: explain: read {conf} as LTSP 20+ ltsp.conf" in out.stderr.splitlines()
