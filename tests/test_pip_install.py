"""A plain `pip install .` into a fresh venv gives every command what it needs (no extras to know about).

Runs pip from the network (PyPI, as `make test` does for .venv); marked slow.
netifaces stays optional: get_hosts must work without it, so it is not
installed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("get_hosts", "ltsp-server-advertise", "ltsp-loadbalancer", "ltsp-update-sshkeys")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    where = tmp_path_factory.mktemp("pip-install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    source = tmp_path_factory.mktemp("src")
    # A copy of the tracked tree, as a user's checkout or sdist would be (no .venv, no build/).
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in files.decode().split("\0"):
        if name and (ROOT / name).is_file():
            target = source / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((ROOT / name).read_bytes())
            target.chmod((ROOT / name).stat().st_mode)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)]
    out = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return where


def run(venv, *args):
    env = {"PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(venv)}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=env, cwd=str(venv))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(venv, command):
    out = run(venv, str(venv / "bin" / command), "--help")
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "Traceback" not in out.stderr


def test_the_daemon_prints_its_document_once(venv):
    out = run(venv, str(venv / "bin" / "ltsp-server-advertise"), "--once", "--config", "/nonexistent")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<ltsp-server version="1">')


def test_netifaces_is_not_needed(venv):
    out = run(venv, str(venv / "bin" / "python"), "-c", "import netifaces")
    assert out.returncode != 0  # not installed: get_hosts still finds this client's identity
    code = "from get_hosts.identity import client_identity; print(client_identity('127.0.0.1').hostname)"
    out = run(venv, str(venv / "bin" / "python"), "-c", code)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
