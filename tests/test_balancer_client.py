"""get_hosts' side of the balancer against hostile and broken balancers: real sockets, fake HTTP servers.

Whatever a balancer answers, get_hosts prints only names of its own pool, and
when no balancer gives a good answer it probes the pool itself (here: refused
ports, so the whole pool comes back in configured order).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from fakeservers import answer, http

from get_hosts.balancer_client import HttpAnswer, read_pool_document

ROOT = Path(__file__).resolve().parent.parent
POOL = "127.0.0.1:1 127.0.0.2:1 127.0.0.3:1"  # refused: probing them gives the pool in order


def get_hosts(balancers, *args, timeout_ms=500, prefix=(), more_env=None):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "LTS_CONF": "/dev/null",
        "LB_SERVERS": POOL,
        "LB_BALANCER": " ".join(balancers),
        "LB_BALANCER_TIMEOUT": str(timeout_ms),
        "LB_RETRY_SECONDS": "0",  # each run a first login: no memory of the last run's host
        **(more_env or {}),
    }
    return subprocess.run(
        [*prefix, sys.executable, "-m", "get_hosts", "--explain", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
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


def test_the_request_carries_the_settings_the_config_sets_and_the_identity_mac_hash_found(serve):
    balancer = serve(answer(http(200, b"127.0.0.1\n")))
    more = {"LB_ALGORITHM": "mac-hash", "LB_MAX_LOAD": "1.5", "LB_SKIP_SWAPPING": "N"}
    out = get_hosts([f"127.0.0.1:{balancer.port}"], more_env=more)
    [request] = balancer.requests
    target = request.split(b" ")[1].decode()
    path, _query, query = target.partition("?")
    fields = dict(field.split("=", 1) for field in query.split("&"))
    assert path == "/v1/hosts" and set(fields) >= {"servers", "algorithm", "max_load", "skip_swapping", "hostname"}
    assert (fields["algorithm"], fields["max_load"], fields["skip_swapping"]) == ("mac-hash", "1.5", "false")
    assert "max_response_ms" not in fields  # not set: the balancer's own MAX_RESPONSE_MS applies
    # An older balancer (no X-LTSP-Applied header): --explain says what it may not have applied.
    assert "did not say what it applied (an older ltsp-loadbalancer?)" in out.stderr
    assert "not LB_ALGORITHM mac-hash, LB_MAX_LOAD 1.5, LB_SKIP_SWAPPING false" in out.stderr


@pytest.mark.parametrize(
    ("header", "sent", "line"),
    [
        ("algorithm=least-full", {}, "balancer B applied its own least-full order, with its own limits"),
        (
            "algorithm=mac-hash key=mac max_load=1.5",
            {"algorithm": "mac-hash", "max_load": "1.5", "mac": "00:1a:2b:3c:4d:01"},
            "balancer B applied mac-hash (keyed on the mac), LB_MAX_LOAD 1.5 (its own config for the rest)",
        ),
        (
            "algorithm=least-full",
            {"algorithm": "loadbalancer", "max_response_ms": "-1"},
            "balancer B applied its own least-full order, with its own limits; not applied: LB_MAX_RESPONSE_MS -1",
        ),
        # What a balancer sends is only ever shown escaped.
        (
            "algorithm=mac-hash\x1b[31m key=mac",
            {"algorithm": "mac-hash"},
            "balancer B applied mac-hash\\x1b[31m (keyed on the mac), with its own limits; "
            "not applied: LB_ALGORITHM mac-hash",
        ),
    ],
)
def test_explain_says_what_the_balancer_applied(header, sent, line):
    from get_hosts.balancer_client import applied_line

    assert applied_line("B", header, sent) == line


def test_an_answer_larger_than_the_cap_is_no_answer(serve):
    balancer = serve(answer(http(200, b"127.0.0.2 " * 40_000)))
    out = get_hosts([f"127.0.0.1:{balancer.port}"])
    assert out.stdout == "127.0.0.1 127.0.0.2 127.0.0.3\n"
    assert "answer larger than 262144 bytes" in out.stderr


# --- a balancer name whose lookup hangs ---------------------------------------------------


@contextmanager
def hanging_dns(tmp_path):
    """(resolv.conf, queried): a DNS server on loopback that takes every query and never answers.

    The resolv.conf names it; ``queried`` is set at its first query. Only a
    process run through ``private_resolv_conf`` sees it: the machine's own
    /etc/resolv.conf is never touched.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _attempt in range(20):  # port 53 of an address nobody else on the machine uses
        address = f"127.53.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"
        try:
            sock.bind((address, 53))
            break
        except OSError:
            continue
    else:
        sock.close()
        pytest.fail("no free port 53 on 127.53.0.0/16 for the hanging DNS server")
    sock.settimeout(0.05)
    queried, stopped = threading.Event(), threading.Event()

    def swallow():
        while not stopped.is_set():
            try:
                sock.recvfrom(4096)
                queried.set()
            except socket.timeout:
                continue

    thread = threading.Thread(target=swallow, daemon=True)
    thread.start()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {address}\noptions timeout:30 attempts:1\n")
    try:
        yield resolv, queried
    finally:
        stopped.set()
        thread.join(2)
        sock.close()


def private_resolv_conf(resolv):
    """The prefix that runs a command with RESOLV bind-mounted on /etc/resolv.conf, in a mount namespace of its own."""
    return ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)]


@pytest.mark.skipif(os.geteuid() != 0, reason="not root: a private /etc/resolv.conf needs a mount namespace")
def test_a_balancer_name_whose_lookup_hangs_costs_the_others_nothing(serve, tmp_path):
    timeout_ms = 1500
    with hanging_dns(tmp_path) as (resolv, queried):
        alone = serve(answer(http(200, b"127.0.0.2\n")))
        # Answers only once the name's lookup sits in the hanging server: both are under way at once.
        healthy = serve(answer(http(200, b"127.0.0.2\n"), before=queried))
        started = time.monotonic()
        control = get_hosts([f"127.0.0.1:{alone.port}"], timeout_ms=timeout_ms, prefix=private_resolv_conf(resolv))
        start_up = time.monotonic() - started
        started = time.monotonic()
        out = get_hosts(
            ["slow-name.test:8377", f"127.0.0.1:{healthy.port}"],
            timeout_ms=timeout_ms,
            prefix=private_resolv_conf(resolv),
        )
        seconds = time.monotonic() - started
        assert queried.is_set(), "the name was never looked up in the hanging server"
    assert (control.returncode, control.stdout) == (0, "127.0.0.2\n"), control.stderr
    assert (out.returncode, out.stdout) == (0, "127.0.0.2\n"), out.stderr
    assert f"balancer 127.0.0.1:{healthy.port} answered in" in out.stderr
    assert "probing the pool itself" not in out.stderr
    # Before: the lookup took the whole deadline, the healthy answer was never read and the pool was probed.
    assert seconds < start_up + timeout_ms / 1000.0, (seconds, start_up)


# --- /v1/pool: bytes in, rows out ---------------------------------------------------------

STATS = {"hostname": "app", "state": "ready", "weight": 100, "rating": 10.0, "sample_age_ms": 5}


def pool(*rows, **fields):
    return json.dumps({"servers": list(rows), **fields}).encode()


def row(**change):
    return {"host": "app1", "port": 377, "state": "Idle", "pending": 2, "response_ms": 1.5, "stats": STATS, **change}


def test_a_pool_document_as_the_balancer_writes_it_gives_its_rows():
    document = pool(
        row(usable=True, sessions=3, capacity=12.5, rating=10.0, handed_out_5min=7, sample_age_ms=40, reason="ok"),
        row(host="app2", stats=None, reason="connect failed: refused", pending=0, response_ms=None),
        poll_seconds=2,
        last_poll_age_ms=None,
        polls=5,
    )
    first, second = read_pool_document(document)
    assert (first.host, first.port, first.pending, first.response_ms, first.stats.rating) == ("app1", 377, 2, 1.5, 10)
    assert (second.host, second.stats, second.reason) == ("app2", None, "connect failed: refused")


@pytest.mark.parametrize(
    "document",
    [
        pool(future={"a": [1, {"b": None}]}),  # fields it does not know are ignored
        pool(row(future="x")),
        b'{"servers": [], "x": "' + b"[" * 100 + b'"}',  # brackets in a string are not nesting
        b'{"servers": [], "x": "\\"[[[[[[[[[[[[\\\\"}',
        b'{"servers": [], "x": ' + b"[" * 7 + b"]" * 7 + b"}",  # 8 levels with the document's own
    ],
    ids=["unknown field", "unknown row field", "brackets in a string", "escaped quotes", "8 levels"],
)
def test_a_pool_document_that_is_good_is_read(document):
    assert isinstance(read_pool_document(document), list)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"servers": [], "x": ' + b"[" * 8 + b"]" * 8 + b"}", "nested deeper than 8 levels"),
        (b'{"servers": [}', "nested deeper than 8 levels (or brackets unbalanced)"),
        (pool(row(pending=True)), "servers[0].pending is not a whole number >= 0: True"),
        (pool(row(pending=-1)), "servers[0].pending is not a whole number >= 0: -1"),
        (pool(row(response_ms=-0.5)), "servers[0].response_ms is not a number >= 0: -0.5"),
        (pool(row(port=0)), "servers[0].port is not a port (1-65535): 0"),
        (pool(row(port="377")), "servers[0].port is not a port (1-65535): '377'"),
        (pool(row(port=None)), "servers[0].port is missing"),
        (pool(row(host="")), "servers[0].host is not a host name: ''"),
        (pool(row(reason="x" * 2000)), "servers[0].reason is not text of at most 1000 chars: 'xxxxx"),
        (pool(row(usable="yes")), "servers[0].usable is not true or false: 'yes'"),
        (pool(row(stats=[])), "servers[0].stats is not an object: []"),
        (pool(row(stats={**STATS, "state": "evil"})), "servers[0].stats: bad <state>"),
        (pool(polls=2.5), "polls is not a whole number >= 0: 2.5"),
        (b'{"servers": [{"host": "a", "port": 1, "rating": 1e400}]}', "servers[0].rating is not a number >= 0: inf"),
        (b'{"servers": [], "polls": -Infinity}', "not JSON: -Infinity is not a number"),
        (b"", "not JSON: Expecting value"),
        (b'{"servers": []} trailing', "not JSON: Extra data"),
    ],
)
def test_a_pool_document_that_is_bad_is_one_error_naming_the_value(document, message):
    with pytest.raises(ValueError) as caught:
        read_pool_document(document)
    assert str(caught.value).startswith(message), str(caught.value)
    assert len(str(caught.value)) < 200


def test_an_answer_split_anywhere_reads_the_same():
    response = http(200, pool(row()), content_type="application/json")
    whole = HttpAnswer(lambda status, body: (status, read_pool_document(body)))
    whole.feed(response)
    split = HttpAnswer(lambda status, body: (status, read_pool_document(body)))
    for i in range(len(response)):
        split.feed(response[i : i + 1])
    assert whole.close() == split.close() == (200, read_pool_document(pool(row())))
    garbage = HttpAnswer(lambda status, body: status)
    garbage.feed(b"SSH-2.0-OpenSSH_9.2\r\n")
    with pytest.raises(ValueError, match="not an HTTP answer: no end of headers"):
        garbage.close()


def test_status_takes_a_good_balancers_pool_and_warns_of_the_bad_one(serve):
    bad = serve(answer(http(200, pool(row(host="127.0.0.1", port=[1])))))
    later = threading.Event()
    threading.Timer(0.3, later.set).start()  # the bad answer comes first
    good_rows = [row(host="127.0.0.2", port=1, pending=0), row(host="127.0.0.1", port=1, stats=None, reason="gone")]
    good = serve(answer(http(200, pool(*good_rows)), before=later))
    out = get_hosts([f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"], "--status", timeout_ms=3000)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if line.startswith("get_hosts: warning: balancer")]
    assert warnings == [
        f"get_hosts: warning: balancer 127.0.0.1:{bad.port} sent a bad /v1/pool: "
        "servers[0].port is not a port (1-65535): [1]"
    ]
    assert f"the pool as balancer 127.0.0.1:{good.port} sees it" in out.stderr
    states = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:]}
    # The pool's port 1 is not LB_PORT's 377: --status names each row host:port.
    assert states == {"127.0.0.2:1": "Idle", "127.0.0.1:1": "Down", "127.0.0.3:1": "Down"}
