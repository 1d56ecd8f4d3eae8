"""ALLOW as a membership test: the same answer as a plain scan, at a cost that does not grow with the list."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ltsp_lbcore.allow import AllowList


def nets(*words):
    return [ipaddress.ip_network(word, strict=False) for word in words]


@pytest.mark.parametrize(
    ("allow", "host", "expected"),
    [
        (("0.0.0.0/0", "::/0"), "203.0.113.9", True),
        (("0.0.0.0/0", "::/0"), "not an address", True),  # everyone: nothing is even parsed
        (("192.168.67.0/24",), "192.168.67.200", True),
        (("192.168.67.0/24",), "192.168.68.1", False),
        (("192.168.67.0/24",), "::ffff:192.168.67.5", True),  # a dual-stack socket's IPv4 peer
        (("fd00::/8",), "fd12::1", True),
        (("fd00::/8",), "fe80::1%eth0", False),
        (("fe80::/10",), "fe80::1%eth0", True),
        (("10.0.0.5",), "10.0.0.5", True),
        (("10.0.0.5",), "10.0.0.6", False),
        (("0.0.0.0/0",), "2001:db8::1", False),
        (("198.18.0.0/15",), "garbage", False),
    ],
)
def test_allows(allow, host, expected):
    assert AllowList(nets(*allow)).allows(host) is expected


networks_v4 = st.builds(
    lambda number, length: ipaddress.ip_network((number, length), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(1, 32),
)
addresses_v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


@given(st.lists(networks_v4, min_size=1, max_size=30), addresses_v4)
def test_same_answer_as_a_scan(networks, host):
    expected = any(ipaddress.ip_address(host) in net for net in networks)
    assert AllowList(networks).allows(host) is expected


def test_a_huge_list_answers_right():
    # The attack: ALLOW with 200,000 entries made every connection scan them all
    # (51 ms of CPU); benchmarks/allow_lookup.py measures the lookup now.
    huge = AllowList([ipaddress.ip_network((0x0A000000 + 4 * i, 30)) for i in range(200_000)])
    assert huge.allows("10.0.0.1") and huge.allows("10.12.52.255") and not huge.allows("10.12.53.0")
    assert not huge.allows("11.0.0.1") and not huge.allows("::1")
