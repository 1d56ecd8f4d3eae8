"""Refusals an admin can see: one warning per peer a minute, the count of the rest after it, bounded memory.

The pure part (ltsp_lbcore.refusals.RefusalLog) on a fake clock; then both
services as real processes, each refusing a few hundred real connections
from one peer outside ALLOW.
"""

from __future__ import annotations

import logging
import signal
import socket

import pytest
from services import Balancer, Daemon

from ltsp_lbcore.refusals import RefusalLog


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def said():
    log = logging.getLogger("test_refusals")
    handler = Lines()
    log.addHandler(handler)
    log.propagate = False
    yield log, handler.lines
    log.removeHandler(handler)


def test_one_line_per_peer_an_interval_then_the_count_of_the_rest(said):
    log, lines = said
    refusals = RefusalLog(log, interval=60.0)
    for i in range(1000):
        refusals.refused("192.0.2.7", "not in ALLOW", now=i * 0.01)
    refusals.refused("192.0.2.8", "not in ALLOW", now=30.0)
    assert [text for _level, text in lines] == [
        "refused 192.0.2.7: not in ALLOW (more refusals of it are counted, one line a 60 s)",
        "refused 192.0.2.8: not in ALLOW (more refusals of it are counted, one line a 60 s)",
    ]
    assert {level for level, _text in lines} == {logging.WARNING}
    # The interval is over at the next refusal of anyone: the count, then the peer is new again.
    refusals.refused("192.0.2.7", "not in ALLOW", now=61.0)
    assert [text for _level, text in lines[2:]] == [
        "refused 192.0.2.7 999 more times in 10 s: not in ALLOW",
        "refused 192.0.2.7: not in ALLOW (more refusals of it are counted, one line a 60 s)",
    ]
    refusals.flush(float("inf"))  # at stop: 192.0.2.8 had no more, so nothing to say of it
    assert len(lines) == 4


def test_memory_is_bounded_and_the_peers_beyond_it_are_counted_together(said):
    log, lines = said
    refusals = RefusalLog(log, interval=60.0, max_peers=3)
    for n in range(500):
        refusals.refused(f"10.0.{n // 250}.{n % 250}", "not in ALLOW", now=n * 0.001)
    assert len(refusals._peers) == 3 and refusals.lines == 4
    assert lines[3][1].startswith("refused 10.0.0.3: not in ALLOW; 3 peers are being refused already")
    refusals.flush(61.0)
    assert lines[-1][1] == "refused 496 more connections from peers beyond the first 3 in 0 s: not in ALLOW"
    assert refusals._peers == {} and refusals._others is None


def write(path, text):
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path


def knock(address, times):
    """TIMES connections from 127.0.0.1, each closed by the service (or reset): how many were refused."""
    refused = 0
    for _ in range(times):
        with socket.create_connection(address, timeout=5) as sock:
            try:
                refused += sock.recv(100) == b""
            except ConnectionResetError:
                refused += 1
    return refused


@pytest.mark.parametrize("service", ["daemon", "balancer"])
def test_hundreds_of_refused_connections_from_one_peer_are_one_line_and_a_count(conf_dir, service):
    conf = write(conf_dir / "s.conf", "ALLOW = 10.0.0.0/8\n")
    if service == "daemon":
        process = Daemon(conf, listen=("127.0.0.1:0",)).start()
    else:
        process = Balancer(conf, servers="127.0.9.1").start()
    try:
        assert knock(process.address, 300) == 300
        process.wait_for(r"refused 127\.0\.0\.1: not in ALLOW")
        process.proc.send_signal(signal.SIGTERM)
        (summary,) = process.wait_for(r"refused 127\.0\.0\.1 \d+ more times")
        assert process.proc.wait(timeout=10) == 0
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()
    refusals = [line for line in process.lines if "refused" in line and "stopped" not in line]
    assert len(refusals) == 2, refusals  # not 300
    assert "WARNING" in refusals[0] and "refused 127.0.0.1 299 more times in " in summary
