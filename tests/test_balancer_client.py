"""get_hosts' side of the balancer against hostile and broken balancers: real sockets, fake HTTP servers.

Whatever a balancer answers, get_hosts prints only names of its own pool, and
when no balancer gives a good answer it probes the pool itself (here: refused
ports, so the whole pool comes back in configured order).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POOL = "127.0.0.1:1 127.0.0.2:1 127.0.0.3:1"  # refused: probing them gives the pool in order


def answer(response):
    """A behaviour: read the request's head, then send RESPONSE (bytes) and close."""

    def behaviour(conn, server):
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        server.requests = [*getattr(server, "requests", []), data]
        conn.sendall(response)

    return behaviour


def http(status, body, reason="OK"):
    return f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n\r\n".encode() + body


def get_hosts(balancers, *args):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "LTS_CONF": "/dev/null",
        "LB_SERVERS": POOL,
        "LB_BALANCER": " ".join(balancers),
        "LB_BALANCER_TIMEOUT": "500",
    }
    return subprocess.run(
        [sys.executable, "-m", "get_hosts", "--explain", *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("response", "printed"),
    [
        # Names outside the pool are dropped; the pool's own are printed as the pool writes them.
        (http(200, b"evil.example 127.0.0.2 ;rm -rf 127.0.0.1\n"), "127.0.0.2 127.0.0.1\n"),
        # Nothing of the pool: no answer, the pool is probed.
        (http(200, b"evil.example other\n"), "127.0.0.1 127.0.0.2 127.0.0.3\n"),
        (http(503, b"no usable server (3 Down)\n", "Service Unavailable"), "127.0.0.1 127.0.0.2 127.0.0.3\n"),
        (b"garbage, not HTTP at all", "127.0.0.1 127.0.0.2 127.0.0.3\n"),
        (http(200, b"127.0.0.2\n127.0.0.3\n"), "127.0.0.1 127.0.0.2 127.0.0.3\n"),  # two lines: not one answer
        (http(200, b"\xff\xfe127.0.0.2\n"), "127.0.0.1 127.0.0.2 127.0.0.3\n"),
    ],
    ids=["foreign names dropped", "only foreign names", "503", "garbage", "two lines", "not ascii"],
)
def test_only_pool_names_are_ever_printed(serve, response, printed):
    balancer = serve(answer(response))
    out = get_hosts([f"127.0.0.1:{balancer.port}"])
    assert (out.returncode, out.stdout) == (0, printed), out.stderr


def test_the_first_good_answer_wins_over_a_503_and_a_silent_one(serve):
    refusing = serve(answer(http(503, b"no poll has finished yet\n", "Service Unavailable")))
    silent = serve(lambda conn, server: server.stopped.wait(10))
    good = serve(answer(http(200, b"127.0.0.3 127.0.0.1\n")))
    out = get_hosts([f"127.0.0.1:{p.port}" for p in (refusing, silent, good)])
    assert (out.returncode, out.stdout) == (0, "127.0.0.3 127.0.0.1\n"), out.stderr
    assert f"balancer 127.0.0.1:{good.port} answered in" in out.stderr


def test_the_request_names_the_pool_and_asks_to_close(serve):
    balancer = serve(answer(http(200, b"127.0.0.1\n")))
    get_hosts([f"127.0.0.1:{balancer.port}"])
    [request] = balancer.requests
    assert request.startswith(b"GET /v1/hosts?servers=127.0.0.1:1+127.0.0.2:1+127.0.0.3:1 HTTP/1.0\r\n")
    assert b"Connection: close\r\n" in request


def test_an_answer_larger_than_the_cap_is_no_answer(serve):
    balancer = serve(answer(http(200, b"127.0.0.2 " * 40_000)))
    out = get_hosts([f"127.0.0.1:{balancer.port}"])
    assert out.stdout == "127.0.0.1 127.0.0.2 127.0.0.3\n"
    assert "answer larger than 262144 bytes" in out.stderr
