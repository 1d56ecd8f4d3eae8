"""The names thin clients use for this server: ``server``, its host names and addresses, --own-name."""

import contextlib
import ipaddress
import socket
import subprocess

from ltsp_lbcore.hostport import canonical_host, host_problem
from ltsp_update_sshkeys.messages import SshKeysError
from ltsp_update_sshkeys.names import known_hosts_host, parse_own_name


def local_addresses(reporter):
    """This server's addresses as `hostname -I` lists them (local interfaces, no packets)."""
    try:
        result = subprocess.run(
            ["hostname", "-I"], stdin=subprocess.DEVNULL, capture_output=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        reporter.warning("`hostname -I` failed: clients reaching this server by address will not trust it")
        return []
    addresses = set()
    for word in result.stdout.decode("ascii", errors="replace").split():
        address = word.split("%")[0]
        if host_problem(address) is None:
            with contextlib.suppress(ValueError):  # a host name here would be odd: addresses only
                addresses.add(ipaddress.ip_address(address))
    # IPv4 first, then IPv6, each in numeric order: deterministic output.
    return [canonical_host(str(address)) for address in sorted(addresses, key=lambda a: (a.version, a))]


def own_names(extra_names, reporter):
    """Names clients use for this server: server, its host names, its addresses, --own-name."""
    names = ["server"]
    hostname = socket.gethostname()
    problem = host_problem(hostname) if hostname else "empty"
    if problem is None:
        hostname = known_hosts_host(hostname)
        names += [hostname, hostname.split(".")[0]]
    else:
        reporter.warning(f"this server's host name {hostname!r} is not used as an own name: {problem}")
    names += local_addresses(reporter)
    for name in extra_names:
        try:
            names.append(parse_own_name(name))
        except ValueError as reason:
            raise SshKeysError(f"bad own name {name!r}: {reason}") from None
    return list(dict.fromkeys(names))  # first occurrence wins, order kept
