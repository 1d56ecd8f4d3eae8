"""ltsp-server-advertise against a hostile admin file: each case the attack found, kept as a regression test.

Before the fix: SIGHUP with the config replaced by a link to /dev/zero ended
in a MemoryError traceback and the daemon exited; replaced by a FIFO, the
event loop blocked (no client answered, SIGTERM ignored) until someone wrote
to the FIFO; a config unreadable after the drop to nobody failed every
reload silently until the first one. The network attacks held (see
test_daemon.py); ALLOW's cost is in test_allow.py and benchmarks/allow_lookup.py.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from daemon_io import fetch, valid, write_conf


def replace_with(path, kind):
    """Make PATH a KIND: the attack's file types and link placements."""
    path.unlink()
    if kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link to a FIFO":
        fifo = path.with_name("fifo")
        os.mkfifo(fifo)
        path.symlink_to(fifo)
    elif kind == "huge file":
        with open(path, "wb") as file:
            file.truncate(64 * 1024 * 1024)
    elif kind == "dangling link":
        path.symlink_to(path.with_name("nowhere"))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("link to /dev/zero", "is a character device, not a regular file"),
        ("FIFO", "is a FIFO, not a regular file"),
        ("link to a FIFO", "is a FIFO, not a regular file"),
        ("directory", "is a directory, not a regular file"),
        ("huge file", "is larger than 1048576 bytes"),
    ],
)
def test_sighup_with_the_config_replaced_keeps_serving(conf_dir, daemons, kind, reason):
    path = write_conf(conf_dir, "WEIGHT = 50\n")
    daemon = daemons(path)
    replace_with(path, kind)
    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGHUP)
    (line,) = daemon.wait_for(r"reload refused")
    assert reason in line and str(path) in line
    assert valid(fetch(daemon.address)).weight == 50  # still answering, with the running config
    assert time.monotonic() - started < 5
    assert daemon.stop() == 0  # and SIGTERM still works


def test_a_dangling_link_is_a_missing_file_and_means_defaults(conf_dir, daemons):
    path = write_conf(conf_dir, "WEIGHT = 50\n")
    daemon = daemons(path)
    replace_with(path, "dangling link")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_for(r"reloaded .*WEIGHT=100")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping to nobody needs root")
def test_a_config_unreadable_after_the_drop_is_said_at_start(conf_dir, daemons):
    path = write_conf(conf_dir, "WEIGHT = 50\n")
    path.chmod(0o600)  # root's alone: nobody cannot read it after the drop
    daemon = daemons(path)
    (line,) = daemon.wait_for(r"cannot be read by user nobody")
    assert str(path) in line and "every reload (SIGHUP) will fail" in line
