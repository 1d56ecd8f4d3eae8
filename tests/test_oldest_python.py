"""get_hosts lands in thin-client chroots of older releases: it must run on Python 3.9.

Debian bullseye, still common in LTSP chroots, has Python 3.9; setup.py and
debian/control promise >= 3.9. Every get_hosts module must compile under
3.9, and the real command must answer, started the way LDM starts it (-S).
"""

import glob
import os
import pathlib
import shutil
import subprocess

import pytest
from fakeservers import document, send

ROOT = pathlib.Path(__file__).resolve().parent.parent


def find_python39():
    """A python3.9 that runs: on PATH (Debian's), else one pyenv installed (its shim may not be enabled)."""
    candidates = [
        shutil.which("python3.9"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))),
    ]
    for candidate in filter(None, candidates):
        try:
            if subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
                return candidate
        except OSError:
            continue
    return None


PYTHON39 = find_python39()
needs_python39 = pytest.mark.skipif(PYTHON39 is None, reason="no python3.9 on this machine to run get_hosts with")


def python39(*args, env=None):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}
    environ["PYTHONDONTWRITEBYTECODE"] = "1"
    environ.update(env or {})
    return subprocess.run([PYTHON39, *args], env=environ, capture_output=True, text=True, timeout=60)


@needs_python39
def test_every_get_hosts_module_compiles_under_python39():
    for path in sorted((ROOT / "get_hosts").glob("*.py")):
        source = path.read_text()
        done = python39("-c", f"compile({source!r}, {str(path)!r}, 'exec')")
        assert done.returncode == 0, f"{path.name}: {done.stderr}"


@needs_python39
@pytest.mark.parametrize("algorithm", ["two-choice", "mac-hash", "weighted"])
def test_get_hosts_answers_under_python39(serve, tmp_path, algorithm):
    server = serve(send(document(hostname="old")), host="127.0.0.1")
    lts_conf = tmp_path / "lts.conf"
    lts_conf.write_text("# no sections\n")
    env = {"LB_SERVERS": server.pool_word, "LB_ALGORITHM": algorithm, "LTS_CONF": str(lts_conf)}
    done = python39("-S", "-m", "get_hosts", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "127.0.0.1\n"
