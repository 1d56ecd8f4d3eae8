"""The services run from code only root can read: a clone under /root, a pip install in a 0700 home.

They drop to nobody after binding; whatever they import after that must
already be loaded. So each test copies the tracked tree and the libraries
the services import (tornado, prometheus_client, psutil, lxml) into a 0700
directory, starts the service as root from there, and drives every route
and a reload, as the admin would after the drop.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from services import Balancer, Daemon

from ltsp_lbcore import wire

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ("tornado", "prometheus_client", "psutil", "lxml")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@pytest.fixture(scope="module")
def private_copy():
    """(env, cwd) that run the services from a copy only root can read."""
    top = Path(tempfile.mkdtemp(prefix="ltsp-lb-private-"))  # 0700, root's
    tree, site = top / "tree", top / "site"
    listed = subprocess.run(
        ["git", "-c", f"safe.directory={ROOT}", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted in the working tree is still listed
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, tree / name)
    # The import names setup.py's package_dir gives the services' directories.
    (tree / "ltsp_server_advertise").symlink_to("ltsp-server-advertise")
    (tree / "ltsp_loadbalancer").symlink_to("ltsp-loadbalancer")
    for library in LIBRARIES:
        shutil.copytree(Path(importlib.import_module(library).__file__).parent, site / library, symlinks=True)
    for directory in (top, tree, site):
        directory.chmod(0o700)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(site)])}
    # The services must really load from the copy, not from the checkout or the venv.
    modules = ("ltsp_server_advertise", "ltsp_loadbalancer", "ltsp_lbcore", "get_hosts", *LIBRARIES)
    show = f"import importlib; print(*(importlib.import_module(m).__file__ for m in {modules!r}))"
    where = subprocess.run([sys.executable, "-c", show], env=env, cwd=tree, capture_output=True, text=True, check=True)
    for path in where.stdout.split():
        assert path.startswith(f"{top}/"), path
    yield env, tree
    shutil.rmtree(top, ignore_errors=True)


def no_errors(service):
    bad = [line for line in service.lines if "Traceback" in line or ": ERROR: " in line or ": error: " in line]
    assert not bad, "\n".join(service.lines)


def write(conf_dir, name, text):
    path = conf_dir / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path


def fetch_document(address):
    import socket

    with socket.create_connection(address, timeout=5) as sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_daemon_serves_from_a_tree_only_root_can_read(private_copy, conf_dir):
    env, tree = private_copy
    daemon = Daemon(write(conf_dir, "advertise.conf", "WEIGHT = 150\n"), env=env, cwd=tree)
    try:
        daemon.start()
        daemon.wait_for(r"running as user nobody")
        assert wire.decode(fetch_document(daemon.address)).weight == 150
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for(r"reloaded ")
        assert wire.decode(fetch_document(daemon.address)).weight == 150
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    no_errors(daemon)


def test_balancer_serves_every_route_from_a_tree_only_root_can_read(private_copy, conf_dir):
    env, tree = private_copy
    daemon = Daemon(write(conf_dir, "advertise.conf", ""), env=env, cwd=tree)
    balancer = None
    try:
        host, port = daemon.start().address
        server = f"{host}:{port}"
        # ALLOW is first converted at the reload, after the drop.
        conf = write(conf_dir, "balancer.conf", "POLL_SECONDS = 1\n")
        balancer = Balancer(conf, servers=server, env=env, cwd=tree).start()
        balancer.wait_for(r"running as user nobody")
        balancer.wait_polls(1)
        status, body = balancer.request("GET", "/v1/pool")
        assert status == 200, body
        assert [entry["usable"] for entry in json.loads(body)["servers"]] == [True], body
        assert balancer.request("GET", f"/v1/hosts?servers={server}") == (200, f"{host}\n")
        for path in ("/", "/v1/history", "/metrics"):
            status, body = balancer.request("GET", path)
            assert status == 200, (path, body)
        write(conf_dir, "balancer.conf", "POLL_SECONDS = 1\nALLOW = 127.0.0.0/8 ::1\n")
        balancer.proc.send_signal(signal.SIGHUP)
        balancer.wait_for(r"reloaded ")
        assert balancer.request("GET", "/v1/pool")[0] == 200
        assert balancer.stop() == 0
    finally:
        if balancer is not None:
            balancer.stop()
        daemon.stop()
    no_errors(balancer)
    no_errors(daemon)


LATE_IMPORT = """
import argparse, sys
sys.path.insert(0, sys.argv[1])
import pkg
from ltsp_lbcore import privileges, service

def run(args):
    privileges.drop_to("nobody", preload=sys.argv[2:])
    import pkg.late
    return 0

sys.exit(service.run_main("some-service", argparse.Namespace(debug=False), run))
"""


@pytest.mark.parametrize("preload", [[], ["pkg.late"]])
def test_an_import_after_the_drop_from_an_unreadable_tree_is_one_clear_error(tmp_path, preload):
    """pytest's tmp_path sits under a 0700 directory: nobody cannot list it."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "late.py").write_text("")
    script = [sys.executable, "-c", textwrap.dedent(LATE_IMPORT), str(tmp_path), *preload]
    done = subprocess.run(script, capture_output=True, text=True, timeout=30)
    assert "running as user nobody" in done.stderr
    if preload:
        assert done.returncode == 0, done.stderr
        assert "error" not in done.stderr
        return
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"some-service: error: cannot read {package} as user nobody (Permission denied) to import pkg.late: "
        "install the package, or make the tree readable"
    )
