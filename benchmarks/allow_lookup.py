"""What ALLOW costs per connection: 200,000 networks against a handful, and against a plain scan.

The attack on issue 9: ALLOW with 200,000 entries cost 51 ms of CPU per
connection (a linear scan). ltsp_lbcore.allow.AllowList keeps a set per
prefix length. Prints microseconds per lookup (a refused address, the worst
case: every prefix length is tried) and the ratio to the scan.

    .venv/bin/python benchmarks/allow_lookup.py
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ltsp_lbcore.allow import AllowList

HUGE = 200_000


def per_lookup_us(function, runs):
    start = time.process_time()
    for _ in range(runs):
        function()
    return (time.process_time() - start) / runs * 1e6


def main():
    huge = [ipaddress.ip_network((0x0A000000 + 4 * i, 30)) for i in range(HUGE)]
    small = [ipaddress.ip_network("192.168.67.0/24"), ipaddress.ip_network("fd00::/8")]
    huge_list, small_list = AllowList(huge), AllowList(small)
    address = ipaddress.ip_address("11.0.0.1")
    huge_us = per_lookup_us(lambda: huge_list.allows("11.0.0.1"), 20_000)
    small_us = per_lookup_us(lambda: small_list.allows("11.0.0.1"), 20_000)
    scan_us = per_lookup_us(lambda: any(address in net for net in huge), 3)
    print(f"allow_lookup: one refused client, CPU time per lookup ({HUGE:,} networks of one prefix length)")
    print(f"  AllowList, {HUGE:,} networks: {huge_us:8.2f} us")
    print(f"  AllowList, 2 networks:       {small_us:8.2f} us")
    print(f"  linear scan, {HUGE:,}:       {scan_us:8.0f} us   (the old code's cost)")
    print(f"ratio scan / AllowList: {scan_us / huge_us:,.0f}x; huge / small: {huge_us / small_us:.1f}x")


if __name__ == "__main__":
    main()
