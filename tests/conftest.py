"""Fixtures shared by the test files."""

import shutil
import tempfile
from pathlib import Path

import pytest
from fakeservers import FakeServer
from services import Daemon


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
