"""get_hosts as thin clients really run it: python3 3.6 and 3.7, the sh launcher, and no python3 at all.

LDM ships in Ubuntu 18.04 (python3 3.6), Debian 10 (3.7) and Ubuntu 20.04
(3.8). The installed /usr/share/ltsp/get_hosts is a POSIX sh launcher; the
tests lay it out as the .deb does (the launcher beside a package directory)
and run it with `python3` on PATH being the old interpreter. pyenv's 3.6 and
3.7 are on this project's machines; where they are missing the tests skip,
except in CI (CI=true), where a missing interpreter fails.
"""

import glob
import os
import shutil
import subprocess

import pytest
from fakeservers import document, send

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, "get_hosts", "get_hosts")


def find_python(version):
    """A python3.X that runs: on PATH, else one pyenv installed (its shim may not be enabled)."""
    candidates = [
        shutil.which(f"python{version}"),
        *sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))),
    ]
    for candidate in filter(None, candidates):
        try:
            if subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
                return candidate
        except OSError:
            continue
    return None


def required_python(version):
    found = find_python(version)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI: no python{version} to run get_hosts with (pyenv's should be on this machine)")
        pytest.skip(f"no python{version} on this machine to run get_hosts with")
    return found


@pytest.fixture
def client(tmp_path):
    """A thin client's layout: the launcher, the packages, and a bin directory for `python3`."""
    root = tmp_path / "client"
    (root / "bin").mkdir(parents=True)
    launcher = root / "usr/share/ltsp/get_hosts"
    launcher.parent.mkdir(parents=True)
    shutil.copy2(LAUNCHER, launcher)
    packages = root / "dist-packages"
    for package in ("get_hosts", "ltsp_lbcore"):
        shutil.copytree(os.path.join(ROOT, package), packages / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def use_python3(client, interpreter):
    (client / "bin" / "python3").symlink_to(interpreter)


def run_launcher(client, *args, env=None, shell="sh"):
    environ = {
        "PATH": f"{client / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(client / "dist-packages"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LTS_CONF": "/dev/null",
        "LB_RETRY_SECONDS": "0",
    }
    environ.update(env or {})
    command = [shutil.which(shell) or shell, str(client / "usr/share/ltsp/get_hosts"), *args]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("version", ["3.6", "3.7"])
def test_every_thin_client_module_compiles(version):
    python = required_python(version)
    for package in ("get_hosts", "ltsp_lbcore"):
        for name in sorted(os.listdir(os.path.join(ROOT, package))):
            if name.endswith(".py"):
                path = os.path.join(ROOT, package, name)
                done = subprocess.run(
                    [python, "-c", "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')", path],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                assert done.returncode == 0, f"{package}/{name} under {version}: {done.stderr}"


@pytest.mark.parametrize("version", ["3.6", "3.7"])
@pytest.mark.parametrize("algorithm", ["two-choice", "mac-hash", "weighted", "best-rated", "fixed"])
def test_the_launcher_answers_on_old_python(serve, client, version, algorithm):
    use_python3(client, required_python(version))
    server = serve(send(document(hostname="old")), host="127.0.0.1")
    done = run_launcher(client, env={"LB_SERVERS": server.pool_word, "LB_ALGORITHM": algorithm})
    assert (done.returncode, done.stdout, done.stderr) == (0, "127.0.0.1\n", "")


@pytest.mark.parametrize("version", ["3.6", "3.7"])
def test_status_json_explain_and_retry_on_old_python(serve, client, tmp_path, version):
    use_python3(client, required_python(version))
    up = serve(send(document(hostname="up")), host="127.0.0.1")
    failing = serve(send(document(hostname="broken", failing="sshd: nothing listens on port 22")), host="127.0.0.2")
    env = {"LB_SERVERS": f"{up.pool_word} {failing.pool_word}"}
    status = run_launcher(client, "--status", env=env)
    assert status.returncode == 0, status.stderr
    assert "Failing" in status.stdout and "Idle" in status.stdout
    assert run_launcher(client, "--json", env=env).stdout.startswith("{")
    explained = run_launcher(client, "--explain", env=env)
    assert explained.stdout == "127.0.0.1\n"
    assert "login service failing: sshd: nothing listens on port 22" in explained.stderr
    retry_env = dict(env, LB_STATE_DIR=str(tmp_path / "state"), LB_RETRY_SECONDS="60", LB_ALGORITHM="fixed")
    assert run_launcher(client, env=retry_env).stdout == "127.0.0.1 127.0.0.2\n"
    assert run_launcher(client, env=retry_env).stdout == "127.0.0.2 127.0.0.1\n"


# --- the launcher when python3 cannot help ------------------------------------------------

POOL = {"LB_SERVERS": "app1:3377 [fd00::5]:377 app3 fd00::7", "SERVER": "boot"}


def fake_python3(client, script):
    path = client / "bin" / "python3"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_no_python3_prints_the_configured_pool(client, shell):
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} here")
    done = run_launcher(client, env=dict(POOL, PATH=str(client / "bin")), shell=shutil.which(shell))
    assert (done.returncode, done.stdout) == (0, "app1 fd00::5 app3 fd00::7\n")
    assert done.stderr == "get_hosts: warning: no python3 on PATH; printed the configured pool unprobed\n"


@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_a_python3_that_exits_1_without_a_host(client, shell):
    fake_python3(client, "echo 'Traceback: it broke' >&2; exit 1\n")
    done = run_launcher(client, "--first", env=POOL, shell=shutil.which(shell) or shell)
    assert (done.returncode, done.stdout) == (0, "app1\n")
    assert done.stderr.splitlines() == [
        "Traceback: it broke",
        "get_hosts: warning: python3 get_hosts exited 1 without a host; printed the configured pool unprobed",
    ]


def test_a_python3_older_than_36(client):
    python = find_python("2.7") or find_python("3.5")
    if python is None:
        pytest.skip("no python older than 3.6 here; the exit-1 case above covers the launcher's side")
    use_python3(client, python)
    done = run_launcher(client, env={"SERVER": "boot"})
    assert (done.returncode, done.stdout) == (0, "boot\n")
    assert "is older than 3.6" in done.stderr.splitlines()[0]


def test_a_python3_killed_by_a_signal(client):
    fake_python3(client, "kill -9 $$\n")
    done = run_launcher(client, env={"LB_SERVERS": "a b"})
    assert (done.returncode, done.stdout) == (0, "a b\n")
    assert "exited 137 without a host" in done.stderr


def test_a_glob_in_the_pool_is_not_expanded(client):
    done = run_launcher(client, env={"LB_SERVERS": "* app2", "PATH": str(client / "bin")})
    assert done.stdout == "* app2\n"


def test_nothing_configured_is_exit_2_with_one_line(client):
    done = run_launcher(client, env={"PATH": str(client / "bin")})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("get_hosts: error: no python3 on PATH, and LB_SERVERS and SERVER are both unset\n")


def test_status_without_python3_is_an_error_not_a_host_line(client):
    done = run_launcher(client, "--status", env=dict(POOL, PATH=str(client / "bin")))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "get_hosts: error: no python3 on PATH\n"


def test_get_hosts_own_exit_2_is_passed_through(client):
    use_python3(client, required_python("3.7"))
    done = run_launcher(client, env={"LB_SERVERS": "not:a:port:at:all:[", "PATH": f"{client / 'bin'}:/usr/bin:/bin"})
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith("get_hosts: error: no server pool")
