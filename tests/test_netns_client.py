"""get_hosts in a network namespace whose MAC the test sets: mac-hash keys on that MAC.

Needs root and iproute2 (CI is root); skipped with the reason otherwise.
Layout: namespace g2test-<random> holds one end of a veth pair at
198.18.20.2/24 with a MAC chosen here; the other end stays in the root
namespace at 198.18.20.1/24, where fake servers listen on several ports.
The real command runs inside the namespace with LB_ALGORITHM=mac-hash; its
order must equal the pure function's order for that MAC. Everything is
removed in teardown, even when the test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from fakeservers import FakeServer, document, send, stats
from machine import netns_skip_reason

from get_hosts import choose
from get_hosts.probe import ProbeResult
from get_hosts.settings import PoolEntry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_IP, CLIENT_IP = "198.18.20.1", "198.18.20.2"
WEIGHTS = (100, 50, 200, 100, 300)


pytestmark = pytest.mark.skipif(netns_skip_reason() is not None, reason=netns_skip_reason() or "")


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


@pytest.fixture
def namespace():
    tag = secrets.token_hex(3)
    name, outer, inner = f"g2test-{tag}", f"g2o{tag}", f"g2i{tag}"
    try:
        ip("netns", "add", name)
        ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        ip("link", "set", inner, "netns", name)
        ip("addr", "add", f"{SERVER_IP}/24", "dev", outer)
        ip("link", "set", outer, "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "addr", "add", f"{CLIENT_IP}/24", "dev", inner)
        ip("-n", name, "link", "set", inner, "up")
    except subprocess.CalledProcessError as error:
        ip("link", "del", outer, check=False)
        ip("netns", "del", name, check=False)
        pytest.skip(f"cannot set up a network namespace here: {error.stderr.strip()}")

    def set_mac(mac):
        ip("-n", name, "link", "set", inner, "address", mac)

    try:
        yield name, set_mac
    finally:
        ip("link", "del", outer, check=False)  # also removes the peer
        ip("netns", "del", name, check=False)
        assert name not in ip("netns", "list").stdout


@pytest.fixture
def servers(namespace):
    made = [FakeServer(send(document(hostname=f"app{i}", weight=w)), SERVER_IP) for i, w in enumerate(WEIGHTS)]
    yield made
    for server in made:
        server.close()


def run_in(namespace_name, *args):
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": ROOT, "LB_RETRY_SECONDS": "0"}
    return environ, ["ip", "netns", "exec", namespace_name, sys.executable, "-m", "get_hosts", *args]


def expected_order(servers, mac):
    candidates = [
        ProbeResult(PoolEntry(SERVER_IP, SERVER_IP, s.port), stats(weight=w), 1.0, None)
        for s, w in zip(servers, WEIGHTS)
    ]
    return [r.entry.port for r in choose.order_mac_hash(candidates, None, mac)]


def mac_with_another_order(servers, mac):
    """A second MAC whose pure order differs from MAC's, so the test tells MACs apart."""
    first = expected_order(servers, mac)
    for i in range(1, 256):
        other = f"02:42:c6:12:14:{i:02x}"
        if expected_order(servers, other)[0] != first[0]:
            return other
    raise AssertionError("no MAC with another first server")


def test_mac_hash_order_is_the_pure_function_of_this_clients_mac(namespace, servers, tmp_path):
    name, set_mac = namespace
    conf = tmp_path / "lts.conf"
    conf.write_text("[Default]\nLB_ALGORITHM = mac-hash\n")
    pool_text = " ".join(s.pool_word for s in servers)
    mac_a = "02:42:c6:12:14:02"
    mac_b = mac_with_another_order(servers, mac_a)
    for mac in (mac_a, mac_b):
        set_mac(mac)
        environ, command = run_in(name, "--json", "--explain")
        environ.update({"LB_SERVERS": pool_text, "LTS_CONF": str(conf)})
        out = subprocess.run(command, env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        assert doc["algorithm"] == "mac-hash"
        assert doc["client_key"] == "mac", out.stderr
        assert f"MAC {mac}" in out.stderr
        chosen = [s["port"] for s in sorted(doc["servers"], key=lambda s: s["rank"] or 99) if s["usable"]]
        assert chosen == expected_order(servers, mac)
        assert doc["hosts"] == [SERVER_IP]
    # and the plain line LDM reads is the one pool name, once
    environ, command = run_in(name)
    environ.update({"LB_SERVERS": pool_text, "LB_ALGORITHM": "mac-hash", "LTS_CONF": str(conf)})
    out = subprocess.run(command, env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout == f"{SERVER_IP}\n"
