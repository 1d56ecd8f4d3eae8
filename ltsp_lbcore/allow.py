"""ALLOW: which client networks may ask a service, as a membership test.

Both services (ltsp-server-advertise on every connection, ltsp-loadbalancer
on every connection) ask this for each client, so its cost must not grow
with the list: the networks are kept as one set of network numbers per
prefix length, and a lookup masks the address once per distinct prefix
length (at most 33 for IPv4, 129 for IPv6) instead of scanning every
network. 200,000 entries cost what a handful do. The default (everyone)
costs nothing per client.
"""

import ipaddress


class AllowList:
    def __init__(self, networks):
        self.networks = tuple(networks)
        # {version: [(prefixlen, mask, {network numbers})]}, longest prefix first.
        tables = {4: {}, 6: {}}
        for net in self.networks:
            bits = net.max_prefixlen
            mask = ((1 << net.prefixlen) - 1) << (bits - net.prefixlen)
            tables[net.version].setdefault((net.prefixlen, mask), set()).add(int(net.network_address))
        self._tables = {
            version: [(mask, numbers) for (_length, mask), numbers in sorted(table.items(), reverse=True)]
            for version, table in tables.items()
        }
        self.everyone_v4 = any(net.version == 4 and net.prefixlen == 0 for net in self.networks)
        self.everyone_v6 = any(net.version == 6 and net.prefixlen == 0 for net in self.networks)

    def allows(self, host):
        """True when the address HOST (text; IPv4-mapped IPv6 counts as IPv4) is in a network of the list."""
        if self.everyone_v4 and self.everyone_v6:
            return True
        try:
            address = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            # A dual-stack socket (socket activation) shows IPv4 peers as ::ffff:a.b.c.d.
            address = address.ipv4_mapped
        if (address.version == 4 and self.everyone_v4) or (address.version == 6 and self.everyone_v6):
            return True
        number = int(address)
        return any(number & mask in numbers for mask, numbers in self._tables[address.version])
