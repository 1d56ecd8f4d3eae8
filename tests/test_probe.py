"""probe_pool against real sockets: good servers, every hostile kind, the deadline and the straggler rule.

The servers are real listening sockets on loopback (tests/fakeservers.py);
nothing is patched. Every hostile server must cost at most the deadline,
be Down with a reason, and never raise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from fakeservers import (
    Elapsed,
    answer,
    document,
    dribble,
    refused_port,
    send,
    send_then_stall,
    stall,
)
from machine import ipv6_loopback_works

from get_hosts import probe
from get_hosts.probe import probe_pool
from get_hosts.settings import PoolEntry
from ltsp_lbcore import wire

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLACK = 0.25  # seconds of scheduling noise allowed on a busy 2-core machine


def entry(server_or_port, host="127.0.0.1", name=None):
    port = getattr(server_or_port, "port", server_or_port)
    host = getattr(server_or_port, "host", host)
    return PoolEntry(name or host, host, port)


# --- good servers ---------------------------------------------------------


def test_good_server_gives_stats_and_response_time(serve):
    server = serve(send(document(hostname="app1", rating=12.5)))
    [result] = probe_pool([entry(server)], 2000)
    assert result.error is None
    assert result.stats.hostname == "app1"
    assert result.stats.rating == 12.5
    assert 0 < result.response_ms < 2000


def test_results_come_in_pool_order_with_their_entries(serve):
    servers = [serve(send(document(hostname=f"h{i}"), delay=0.03 * (3 - i))) for i in range(3)]
    entries = [entry(s) for s in servers]
    results = probe_pool(entries, 2000)
    assert [r.entry for r in results] == entries
    assert [r.stats.hostname for r in results] == ["h0", "h1", "h2"]


def test_response_time_runs_to_the_end_of_the_document(serve):
    server = serve(send(document(), delay=0.12))
    [result] = probe_pool([entry(server)], 2000)
    assert result.stats is not None
    assert result.response_ms >= 115


def test_all_servers_are_probed_at_once(serve):
    # Five servers each answering after 150 ms: serially 750 ms, at once ~150 ms.
    servers = [serve(send(document(), delay=0.15)) for _ in range(5)]
    with Elapsed() as t:
        results = probe_pool([entry(s) for s in servers], 3000)
    assert all(r.stats is not None for r in results)
    assert t.seconds < 0.15 + SLACK + 0.1


@pytest.mark.skipif(not ipv6_loopback_works(), reason="no IPv6 loopback (::1) on this machine")
def test_ipv6_server(serve):
    server = serve(send(document(hostname="six")), host="::1")
    [result] = probe_pool([PoolEntry("::1", "::1", server.port)], 2000)
    assert result.stats.hostname == "six", result.error


def test_names_are_resolved_inside_the_deadline(serve):
    server = serve(send(document(hostname="named")))
    [result] = probe_pool([PoolEntry("localhost", "localhost", server.port)], 2000)
    assert result.stats is not None, result.error
    assert result.stats.hostname == "named"


def test_unresolvable_name_is_down_with_the_reason():
    # .invalid never resolves (RFC 6761); the resolver may still take time,
    # which the deadline bounds.
    with Elapsed() as t:
        [result] = probe_pool([PoolEntry("nosuch.invalid", "nosuch.invalid", 377)], 1500)
    assert result.stats is None
    assert "resolv" in result.error
    assert t.seconds < 1.5 + SLACK


def test_numeric_hosts_start_no_resolver_thread(serve):
    # A resolver thread is the only way probe_pool asks DNS; with numeric
    # hosts it must not even import threading (-S: site imports nothing).
    server = serve(send(document()))
    code = (
        "import sys\n"
        "from get_hosts.probe import probe_pool\n"
        "from get_hosts.settings import PoolEntry\n"
        f"r = probe_pool([PoolEntry('127.0.0.1', '127.0.0.1', {server.port}), PoolEntry('::1', '::1', 9)], 500)\n"
        "assert r[0].stats is not None, r[0].error\n"
        "print('threading' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-S", "-E", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- hostile servers: each costs at most the deadline, Down with a reason ---

BOMB = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10))
    + b']>\n<ltsp-server version="1"><hostname>&lol9;</hostname></ltsp-server>'
)
GOOD = document(hostname="good", rating=10)


def external_entity(path):
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE ltsp-server [<!ENTITY secret SYSTEM "file://'
        + path.encode()
        + b'">]>\n'
        + GOOD.split(b"\n", 1)[1].replace(b"<hostname>good</hostname>", b"<hostname>&secret;</hostname>")
    )


HOSTILE = {
    "entity bomb": (send(BOMB), "DTD"),
    "megabytes": (send(b'<ltsp-server version="1"><junk>' + b"A" * (4 << 20)), "larger than"),
    "one byte every 100 ms": (dribble(GOOD, 0.1), "timed out"),
    "invalid UTF-8": (send(GOOD.replace(b"<hostname>good", b"<hostname>\xff\xfe\xc3")), "bad document"),
    "NaN rating": (send(GOOD.replace(b"<rating>10</rating>", b"<rating>nan</rating>")), "rating"),
    "negative rating": (send(GOOD.replace(b"<rating>10</rating>", b"<rating>-5</rating>")), "negative"),
    "infinite load": (send(GOOD.replace(b"<load-1min>2</load-1min>", b"<load-1min>inf</load-1min>")), "load-1min"),
    "HTML": (send(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html><body>hi</body></html>"), "bad document"),
    "nothing, then close": (send(b""), "without sending anything"),
    "accept and stall": (stall, "timed out"),
    "document, then more": (send(GOOD + b"<ltsp-server/>"), "bad document"),
    "another protocol version": (send(GOOD.replace(b'version="1"', b'version="2"')), "version"),
    "control character": (send(GOOD.replace(b"<hostname>good", b"<hostname>\x1b[2Jgood")), "bad document"),
    "truncated": (send(GOOD[: len(GOOD) // 2]), "bad document"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_server_is_down_within_the_deadline(serve, kind):
    behaviour, reason = HOSTILE[kind]
    server = serve(behaviour)
    with Elapsed() as t:
        [result] = probe_pool([entry(server)], 400)
    assert result.stats is None
    assert result.response_ms is None
    assert isinstance(result.error, str)
    assert reason in result.error
    assert t.seconds < 0.4 + SLACK


def test_external_entity_naming_a_local_file_is_never_read(serve, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n")
    server = serve(send(external_entity(str(secret))))
    [result] = probe_pool([entry(server)], 400)
    assert result.stats is None
    assert "DTD" in result.error
    assert "TOP-SECRET" not in result.error


def test_listening_but_never_accepting_costs_the_deadline(serve):
    server = serve(None, accept=False)
    with Elapsed() as t:
        [result] = probe_pool([entry(server)], 300)
    assert "timed out after 300 ms while reading" in result.error
    assert 0.29 < t.seconds < 0.3 + SLACK


def test_refused_port_is_down_at_once():
    with Elapsed() as t:
        [result] = probe_pool([entry(refused_port())], 2000)
    assert "refused" in result.error
    assert t.seconds < 0.2


def test_reading_stops_at_the_byte_cap(serve):
    # 32 MiB is more than loopback socket buffers hold: had the client read
    # everything, sendall would have finished without an error.
    server = serve(send(b'<ltsp-server version="1"><junk>' + b"A" * (32 << 20)))
    [result] = probe_pool([entry(server)], 2000)
    assert "larger than" in result.error
    server.stopped.wait(1)
    for _ in range(50):
        if server.send_errors:
            break
        server.stopped.wait(0.05)
    assert server.send_errors, "the server managed to send all 32 MiB"
    assert f"{wire.MAX_DOCUMENT_BYTES}" in result.error


def test_every_hostile_kind_at_once_beside_good_servers(serve, tmp_path):
    good = [serve(send(document(hostname=f"good{i}"))) for i in range(3)]
    bad = [serve(behaviour) for behaviour, _reason in HOSTILE.values()]
    bad.append(serve(send(external_entity(str(tmp_path / "x")))))
    entries = [entry(s) for s in good + bad] + [entry(refused_port())]
    with Elapsed() as t:
        results = probe_pool(entries, 3000)
    assert [r.stats.hostname for r in results[:3]] == ["good0", "good1", "good2"]
    assert all(r.stats is None and r.error for r in results[3:])
    # The stalled ones are cut by the straggler grace, not the 3 s deadline.
    assert t.seconds < probe.GRACE_MAX_MS / 1000 + SLACK + 0.2


def test_a_document_is_taken_when_its_root_closes_even_if_the_server_holds_on(serve):
    holder = serve(send_then_stall(GOOD))
    with Elapsed() as t:
        [result] = probe_pool([entry(holder)], 3000)
    assert result.error is None
    assert result.stats is not None
    assert t.seconds < 1.0  # not the 3 s deadline


# --- the straggler rule ----------------------------------------------------


def test_three_fast_and_one_stalled_take_the_grace_not_the_deadline(serve):
    fast = [serve(send(document())) for _ in range(3)]
    stalled = serve(stall)
    with Elapsed() as t:
        results = probe_pool([entry(s) for s in [*fast, stalled]], 5000)
    assert all(r.stats is not None for r in results[:3])
    assert "straggler grace" in results[3].error
    slowest = max(r.response_ms for r in results[:3])
    # grace = clamp(4 * slowest, GRACE_MIN_MS, GRACE_MAX_MS) after the last answer
    expected = slowest / 1000 + probe.grace_ms(slowest) / 1000
    assert t.seconds >= probe.GRACE_MIN_MS / 1000
    assert t.seconds < expected + SLACK


def test_a_server_that_never_takes_the_connection_gets_the_short_grace(serve):
    # A full accept queue makes the kernel drop the SYN: the connect hangs as to a powered-off host.
    unreachable = socket.socket()
    unreachable.bind(("127.0.0.1", 0))
    unreachable.listen(0)
    filler = socket.create_connection(unreachable.getsockname())
    try:
        fast = [serve(send(document())) for _ in range(3)]
        pool = [*(entry(s) for s in fast), entry(unreachable.getsockname()[1])]
        with Elapsed() as t:
            results = probe_pool(pool, 5000)
        assert all(r.stats is not None for r in results[:3])
        assert "75 ms after the last answer, while connecting" in results[3].error
        assert t.seconds < probe.GRACE_MIN_MS / 1000  # not a live server's 250 ms
    finally:
        filler.close()
        unreachable.close()


def test_grace_rule_values():
    assert probe.grace_ms(1) == probe.GRACE_MIN_MS
    assert probe.grace_ms(70) == 280
    assert probe.grace_ms(1000) == probe.GRACE_MAX_MS


def test_a_peer_answering_within_the_grace_is_waited_for(serve):
    fast = [serve(send(document())) for _ in range(3)]
    slower = serve(send(document(hostname="slower"), delay=0.04))
    results = probe_pool([entry(s) for s in [*fast, slower]], 5000)
    assert results[3].stats is not None, results[3].error


def test_no_answer_yet_means_the_deadline_applies(serve):
    # Refused and stalled servers only: nothing answered, so no grace.
    stalled = serve(stall)
    with Elapsed() as t:
        results = probe_pool([entry(refused_port()), entry(stalled), entry(refused_port())], 500)
    assert "timed out after 500 ms" in results[1].error
    assert 0.49 < t.seconds < 0.5 + SLACK


def test_one_fast_answer_does_not_cut_off_a_slower_majority(serve):
    # Fewer than half settled when the fast one answers: no grace yet, so the
    # three servers answering at 250 ms are waited for.
    fast = serve(send(document(hostname="fast")))
    slow = [serve(send(document(hostname=f"slow{i}"), delay=0.25)) for i in range(3)]
    results = probe_pool([entry(s) for s in [fast, *slow]], 3000)
    assert [r.stats.hostname for r in results if r.stats] == ["fast", "slow0", "slow1", "slow2"]


def test_a_pool_mostly_dead_waits_the_longest_grace_not_the_deadline(serve):
    # One answer, two stalled (as powered off): fewer than half settled, so
    # the two get GRACE_MAX_MS after the answer, not the 3 s deadline.
    fast = serve(send(document()))
    stalled = [serve(stall), serve(stall)]
    with Elapsed() as t:
        results = probe_pool([entry(fast), *(entry(s) for s in stalled)], 3000)
    assert results[0].stats is not None
    for result in results[1:]:
        assert f"{probe.GRACE_MAX_MS} ms after the last answer" in result.error
    assert probe.GRACE_MAX_MS / 1000 <= t.seconds < probe.GRACE_MAX_MS / 1000 + SLACK


def test_the_deadline_bounds_the_grace(serve):
    fast = serve(send(document()))
    stalled = serve(stall)
    with Elapsed() as t:
        results = probe_pool([entry(fast), entry(stalled)], 30)
    assert results[0].stats is not None
    assert "timed out after 30 ms" in results[1].error
    assert t.seconds < 0.03 + SLACK


# --- conversations: a request sent, an answer of its own kind (get_hosts asking its balancers) ---


class Echo:
    """A decoder for the tests: keeps the bytes; an answer not starting with b"ok" is refused."""

    complete = False

    def __init__(self):
        self.data = b""

    def feed(self, data):
        self.data += data

    def close(self):
        if not self.data.startswith(b"ok"):
            raise ValueError(f"not ok: {self.data[:10]!r}")
        return self.data


def talk(request=b"GET /x HTTP/1.0\r\n\r\n", limit=1000):
    return probe.Conversation(request, Echo, limit, "refused: ")


def test_a_conversation_sends_its_request_and_its_decoder_makes_the_value(serve):
    server = serve(answer(b"ok, got it"))
    with Elapsed() as t:
        [result] = probe.ask_first([entry(server)], [talk()], 2000)
    assert (result.stats, result.error) == (b"ok, got it", None)
    assert server.requests == [b"GET /x HTTP/1.0\r\n\r\n"]
    assert 0 < result.response_ms < 1000 and t.seconds < 1


def test_the_first_accepted_answer_ends_the_round_and_the_others_stay_unsettled(serve):
    refused = serve(send(b"no"))  # answers first, but its decoder refuses it
    good = serve(send(b"ok", delay=0.1))
    slow = serve(send(b"ok, but late", delay=1.5))
    with Elapsed() as t:
        results = probe.ask_first([entry(s) for s in (refused, good, slow)], [talk(b"")] * 3, 3000)
    assert t.seconds < 1.0
    assert results[0].error == "refused: not ok: b'no'"
    assert results[1].stats == b"ok"
    assert results[2] is None  # still under way: neither waited for nor given up


def test_an_answer_over_the_conversations_cap_is_refused(serve):
    server = serve(answer(b"ok" + b"x" * 5000))
    [result] = probe.ask_first([entry(server)], [talk(limit=4096)], 2000)
    assert result.error == "answer larger than 4096 bytes"


def test_a_request_the_server_never_reads_costs_the_deadline_while_sending(serve):
    server = serve(stall)
    with Elapsed() as t:
        [result] = probe.ask_first([entry(server)], [talk(b"x" * (16 << 20))], 300)
    assert result.error == "timed out after 300 ms while sending the request"
    assert t.seconds < 0.3 + SLACK


def test_no_answer_at_all_gives_each_its_own_reason(serve):
    mute = serve(stall)
    results = probe.ask_first([entry(mute), entry(refused_port())], [talk(), talk()], 300)
    assert results[0].error == "timed out after 300 ms while reading (0 bytes so far)"
    assert results[1].error.startswith("connect failed")
