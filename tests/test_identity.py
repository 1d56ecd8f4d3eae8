"""This client's identity on the real machine, and in a network namespace whose MACs the test sets.

No mocks: the kernel answers. The namespace test needs root and iproute2 (CI is root).
"""

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time

import pytest
from machine import ipv6_loopback_works

from get_hosts.identity import Identity, _identity, client_identity, normalize_mac

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    import netifaces
except ImportError:
    netifaces = None

# Both ways of mapping IP -> interface -> MAC: the kernel's files and ioctls, and netifaces when installed.
BACKENDS = [pytest.param(None, id="kernel")] + (
    [pytest.param(netifaces, id="netifaces")]
    if netifaces
    else [pytest.param(None, id="netifaces", marks=pytest.mark.skip(reason="netifaces not installed"))]
)


def default_route():
    """(interface, [addresses]) of the default route as iproute2 sees it, or None."""
    if not shutil.which("ip"):
        pytest.skip("ip (iproute2) is missing")
    words = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    if "dev" not in words:
        return None
    interface = words[words.index("dev") + 1]
    lines = subprocess.run(["ip", "-o", "addr", "show", "dev", interface], capture_output=True, text=True).stdout
    addresses = [line.split()[3].split("/")[0] for line in lines.splitlines()]
    return interface, addresses


@pytest.mark.parametrize("backend", BACKENDS)
def test_toward_loopback_is_the_loopback_address(backend):
    identity = _identity("127.0.0.1", backend)
    assert identity.ip == "127.0.0.1"
    assert identity.interface == "lo"
    assert identity.mac is None  # 00:00:00:00:00:00 is no MAC
    assert identity.hostname == socket.gethostname()


@pytest.mark.parametrize("backend", BACKENDS)
def test_toward_ipv6_loopback(backend):
    if not ipv6_loopback_works():
        pytest.skip("no IPv6 loopback here")
    assert _identity("::1", backend)[1:] == ("::1", None, "lo")
    assert _identity("[::1]", backend)[1:] == ("::1", None, "lo")


def test_toward_a_name_from_etc_hosts():
    with open("/etc/hosts") as hosts:
        if not any("localhost" in line.split("#")[0].split()[1:] for line in hosts):
            pytest.skip("/etc/hosts has no localhost")
    assert client_identity("localhost").interface == "lo"


@pytest.mark.parametrize("backend", BACKENDS)
def test_toward_nothing_uses_the_default_route(backend):
    identity = _identity(None, backend)
    route = default_route()
    if route is None:
        assert identity == Identity(socket.gethostname(), None, None, None)
        return
    interface, addresses = route
    assert identity.interface == interface
    assert identity.ip in addresses
    with open(f"/sys/class/net/{interface}/address") as f:
        assert identity.mac == normalize_mac(f.read())


@pytest.mark.parametrize("toward", ["no-such-host.invalid", "", "[", "::::", "1.2.3.4.5", "[]", " "])
def test_unresolvable_toward_falls_back_to_the_default_route_without_dns(toward):
    started = time.monotonic()
    assert client_identity(toward) == client_identity(None)
    assert time.monotonic() - started < 0.5  # a DNS lookup for the .invalid name would be the slow part


def test_backends_agree_on_this_machine():
    if netifaces is None:
        pytest.skip("netifaces not installed")
    targets = [None, "127.0.0.1"] + (["::1"] if ipv6_loopback_works() else [])
    route = default_route()
    if route and route[1]:
        targets.append(route[1][0])
    for target in targets:
        assert _identity(target, None) == _identity(target, netifaces), target


def test_client_identity_never_raises_on_odd_input():
    for toward in [None, "", "x" * 300, "\x00", "ü.example", "[::1", "999.999.999.999"]:
        assert isinstance(client_identity(toward), Identity)


MACS = [
    ("02:00:00:AA:BB:01", "02:00:00:aa:bb:01"),
    ("02-00-00-aa-bb-01", "02:00:00:aa:bb:01"),
    (" 02:00:00:aa:bb:01\n", "02:00:00:aa:bb:01"),
    ("00:00:00:00:00:00", None),
    ("", None),
    (None, None),
    ("02:00:00:aa:bb", None),
    ("02:00:00:aa:bb:01:02", None),
    ("02:00:00:aa:bb:0g", None),
    ("2:0:0:aa:bb:1", None),
    ("80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0f:aa:bb", None),  # infiniband, 20 octets
]


@pytest.mark.parametrize(("text", "mac"), MACS)
def test_normalize_mac(text, mac):
    assert normalize_mac(text) == mac


# --- a namespace of our own: MACs and addresses the test chose ---

MAC_A = "02:00:00:aa:bb:01"
MAC_C = "02:00:00:aa:bb:02"

NETNS_SCRIPT = r"""
import json, sys
from get_hosts.identity import _identity, _interface_of_ip, client_identity
try:
    import netifaces
except ImportError:
    netifaces = None
out = {}
for target in sys.argv[1:]:
    key = target or "-"
    out[key] = {"auto": list(client_identity(target or None)), "kernel": list(_identity(target or None, None))}
    if netifaces:
        out[key]["netifaces"] = list(_identity(target or None, netifaces))
out["secondary"] = _interface_of_ip("198.18.10.200", None)
print(json.dumps(out))
"""


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace (CI runs as root)")
    if not shutil.which("ip"):
        pytest.skip("ip (iproute2) is missing")
    name = f"g1test-{secrets.token_hex(4)}"
    etc = f"/etc/netns/{name}"
    etc_netns_existed = os.path.isdir("/etc/netns")
    try:
        ip("netns", "add", name)
    except subprocess.CalledProcessError as error:
        pytest.skip(f"cannot create a network namespace: {error.stderr.strip()}")
    try:
        # Two veth pairs, all four ends inside the namespace: nothing outside it changes.
        for here, peer, mac, address in [
            ("g1a", "g1b", MAC_A, "198.18.10.2/25"),
            ("g1c", "g1d", MAC_C, "198.18.10.130/25"),
        ]:
            ip("-n", name, "link", "add", here, "type", "veth", "peer", "name", peer)
            ip("-n", name, "link", "set", here, "address", mac)
            ip("-n", name, "addr", "add", address, "dev", here)
        ip("-n", name, "addr", "add", "198.18.10.200/25", "dev", "g1c")  # secondary: no SIOCGIFADDR answer
        ip("-n", name, "addr", "add", "fd47:1::2/64", "dev", "g1a", "nodad")
        for link in ("lo", "g1a", "g1b", "g1c", "g1d"):
            ip("-n", name, "link", "set", link, "up")
        # `ip netns exec` shows /etc/netns/NAME/hosts as /etc/hosts inside the namespace.
        os.makedirs(etc)
        with open(f"{etc}/hosts", "w") as hosts:
            hosts.write("127.0.0.1 localhost\n198.18.10.129 g1-appserver # lab server\n")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        shutil.rmtree(etc, ignore_errors=True)
        if not etc_netns_existed:
            with contextlib.suppress(OSError):
                os.rmdir("/etc/netns")  # only if still empty: another namespace may use it now


def in_netns(name, *targets):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, "-c", NETNS_SCRIPT, *targets],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_all(result, expected):
    """Every backend the namespace's python has must give EXPECTED (ip, mac, interface)."""
    for backend, identity in result.items():
        assert tuple(identity[1:]) == expected, backend
        assert identity[0] == socket.gethostname()


def test_netns_identity_toward_each_network(netns):
    out = in_netns(netns, "198.18.10.1", "198.18.10.129", "g1-appserver", "fd47:1::1", "-")
    assert_all(out["198.18.10.1"], ("198.18.10.2", MAC_A, "g1a"))
    assert_all(out["198.18.10.129"], ("198.18.10.130", MAC_C, "g1c"))
    assert_all(out["g1-appserver"], ("198.18.10.130", MAC_C, "g1c"))  # from the namespace's /etc/hosts
    assert_all(out["fd47:1::1"], ("fd47:1::2", MAC_A, "g1a"))
    assert_all(out["-"], (None, None, None))  # no default route yet
    assert out["secondary"] == "g1c"


def test_netns_default_route_decides_without_a_target(netns):
    ip("-n", netns, "route", "replace", "default", "via", "198.18.10.129", "dev", "g1c")
    try:
        out = in_netns(netns, "-", "203.0.113.9", "unknown-name.invalid")
        assert_all(out["-"], ("198.18.10.130", MAC_C, "g1c"))
        assert_all(out["203.0.113.9"], ("198.18.10.130", MAC_C, "g1c"))  # routed by the default route
        assert_all(out["unknown-name.invalid"], ("198.18.10.130", MAC_C, "g1c"))
    finally:
        ip("-n", netns, "route", "del", "default")
