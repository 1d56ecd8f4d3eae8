"""Fixtures shared by the test files."""

import shutil
import tempfile
from pathlib import Path

import pytest
from fakeservers import FakeServer
from services import Daemon
from sites import RealPool
from sshsite import Site, generate_host_keys


@pytest.fixture
def serve():
    """serve(behaviour, host=...) starts a FakeServer (a real listening socket); all are closed after the test."""
    made = []

    def start(behaviour, host="127.0.0.1", **kwargs):
        server = FakeServer(behaviour, host, **kwargs)
        made.append(server)
        return server

    yield start
    for server in made:
        server.close()


@pytest.fixture
def conf_dir():
    """A directory for config files that the services can still read after dropping to nobody.

    pytest's tmp_path sits under a 0700 directory: a daemon started as root
    could read its config there only until it drops privileges.
    """
    path = Path(tempfile.mkdtemp(prefix="ltsp-lb-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons():
    started = []

    def start(*args, sockets=1, **kwargs):
        daemon = Daemon(*args, **kwargs)
        started.append(daemon)
        return daemon.start(sockets)

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@pytest.fixture(scope="module")
def shared_pool():
    """One sites.RealPool for the tests of a module that only read it (counts may grow between tests)."""
    with RealPool() as pool:
        yield pool


@pytest.fixture
def real_pool():
    """A sites.RealPool of the test's own, for tests that change it (drain by SIGHUP, a reload)."""
    with RealPool() as pool:
        yield pool


@pytest.fixture(scope="module")
def own_keys(tmp_path_factory):
    """Host keys standing in for this LTSP server's /etc/ssh (ltsp-update-sshkeys' tests)."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen missing (apt-get install openssh-client)")
    directory = tmp_path_factory.mktemp("own_etc_ssh")
    return directory, generate_host_keys(directory)


@pytest.fixture
def site(tmp_path, own_keys):
    """A base with chroots, a cache path and an empty extraservers file, all in tmp_path."""
    base = tmp_path / "opt_ltsp"
    for chroot in ("amd64", "i386"):
        (base / chroot / "etc" / "ssh").mkdir(parents=True)
    (tmp_path / "extraservers").write_text("")
    return Site(tmp_path, base, own_keys[0], own_keys[1])


@pytest.fixture
def procs():
    """track(service) -> service; every tracked service still running is killed at the end."""
    started = []

    def track(proc):
        started.append(proc)
        return proc

    yield track
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
