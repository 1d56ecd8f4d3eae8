"""This thin client's identity: hostname, and the IP and MAC of the interface that reaches the servers.

lts.conf sections and mac-hash key on these. Rules:

- The IP is the one the kernel would use as source toward ``toward`` (a UDP
  socket's connect() picks the route and sends nothing; getsockname() tells
  the address). ``toward`` must be an address, or a name from /etc/hosts:
  names are never sent to DNS. Without ``toward``, or when it cannot be
  resolved or routed, the default route's interface (/proc/net/route, then
  /proc/net/ipv6_route) and its first address are used.
- IP -> interface -> MAC through netifaces when it is installed, else the
  kernel: SIOCGIFADDR per interface (/sys/class/net) for IPv4 and
  /proc/net/if_inet6 for IPv6, then /sys/class/net/<if>/address.
- The MAC is six lower-case octets ``aa:bb:cc:dd:ee:ff``; none, all zeros
  (loopback) or another length gives None.
- Never raises and never sends a packet: whatever cannot be found is None.
"""

import os
import socket
from collections import namedtuple

Identity = namedtuple("Identity", "hostname ip mac interface")

SYS_NET = "/sys/class/net"
PROC_ROUTE = "/proc/net/route"
PROC_ROUTE6 = "/proc/net/ipv6_route"
PROC_INET6 = "/proc/net/if_inet6"
ETC_HOSTS = "/etc/hosts"
SIOCGIFADDR = 0x8915
RTF_UP = 0x1


def client_identity(toward=None):
    """Identity(hostname, ip, mac, interface) of this client toward address TOWARD; unknown parts None."""
    try:
        netifaces = _netifaces()
        return _identity(toward, netifaces)
    except Exception:  # a login must never fail on this; see the rules above
        return Identity(_hostname(), None, None, None)


def _netifaces():
    try:
        import netifaces
    except ImportError:
        return None
    return netifaces


def _identity(toward, netifaces):
    """client_identity with the interface lookups done by NETIFACES (module) or the kernel (None)."""
    ip = interface = None
    address = _resolve(toward) if toward else None
    if address is not None:
        ip = _source_ip(*address)
    if ip is not None:
        interface = _interface_of_ip(ip, netifaces)
    else:
        interface = _default_route_interface()
        if interface is not None:
            ip = _interface_ip(interface, netifaces)
    mac = _interface_mac(interface, netifaces) if interface else None
    return Identity(_hostname(), ip, mac, interface)


def _hostname():
    try:
        name = socket.gethostname()
    except OSError:
        return None
    return name if name and name != "(none)" else None


def _resolve(host):
    """HOST -> (family, address) from a numeric address or /etc/hosts; None otherwise (no DNS)."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return None
    try:
        info = socket.getaddrinfo(host, None, 0, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
        return info[0][0], info[0][4][0]
    except (OSError, UnicodeError):
        pass
    wanted = host.lower()
    for line in _read_lines(ETC_HOSTS):
        fields = line.split("#", 1)[0].split()
        if len(fields) > 1 and wanted in (name.lower() for name in fields[1:]):
            found = _resolve(fields[0]) if ":" in fields[0] or fields[0][:1].isdigit() else None
            if found is not None:
                return found
    return None


def _source_ip(family, address):
    """The local address the kernel picks toward ADDRESS; connect() on UDP sends no packet."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((address, 9))
            ip = probe.getsockname()[0]
    except OSError:  # unreachable, no route, no such family
        return None
    return ip.split("%", 1)[0] if ip not in ("0.0.0.0", "::") else None


def _read_lines(path):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def _default_route_interface():
    """Interface of the default route with the lowest metric, IPv4 first; None without one."""
    best = None
    for line in _read_lines(PROC_ROUTE)[1:]:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue
        try:
            flags, metric = int(fields[3], 16), int(fields[6])
        except ValueError:
            continue
        if flags & RTF_UP and (best is None or metric < best[0]):
            best = (metric, fields[0])
    if best is not None:
        return best[1]
    for line in _read_lines(PROC_ROUTE6):
        fields = line.split()
        if len(fields) < 10 or fields[0] != "0" * 32 or fields[1] != "00" or fields[9] == "lo":
            continue
        try:
            flags, metric = int(fields[8], 16), int(fields[5], 16)
        except ValueError:
            continue
        if flags & RTF_UP and (best is None or metric < best[0]):
            best = (metric, fields[9])
    return best[1] if best else None


def _interfaces(netifaces):
    if netifaces is not None:
        return list(netifaces.interfaces())
    try:
        return sorted(os.listdir(SYS_NET))
    except OSError:
        return []


def _ipv4_of(interface):
    """The primary IPv4 address of INTERFACE (SIOCGIFADDR), or None."""
    import fcntl
    import struct

    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("256s", interface.encode()[:15])
            answer = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
    except (OSError, UnicodeError):
        return None
    return socket.inet_ntoa(answer[20:24])


def _ipv6_addresses():
    """[(interface, address, scope)] from /proc/net/if_inet6."""
    result = []
    for line in _read_lines(PROC_INET6):
        fields = line.split()
        if len(fields) < 6 or len(fields[0]) != 32:
            continue
        try:
            address = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0]))
        except ValueError:
            continue
        result.append((fields[5], address, fields[3]))
    return result


def _addresses(interface, netifaces):
    """Every address of INTERFACE, IPv4 first, global IPv6 before link-local."""
    if netifaces is not None:
        try:
            found = netifaces.ifaddresses(interface)
        except ValueError:
            return []
        v4 = [a.get("addr") for a in found.get(netifaces.AF_INET, [])]
        v6 = [a.get("addr", "").split("%", 1)[0] for a in found.get(netifaces.AF_INET6, [])]
        v6.sort(key=lambda a: a.lower().startswith("fe80:"))
        return [a for a in v4 + v6 if a]
    v4 = _ipv4_of(interface)
    v6 = [(scope != "00", a) for name, a, scope in _ipv6_addresses() if name == interface]
    return ([v4] if v4 else []) + [a for _, a in sorted(v6)]


def _interface_ip(interface, netifaces):
    addresses = _addresses(interface, netifaces)
    return addresses[0] if addresses else None


def _same_ip(a, b):
    if ":" not in a or ":" not in b:
        return a == b
    try:
        return socket.inet_pton(socket.AF_INET6, a) == socket.inet_pton(socket.AF_INET6, b)
    except OSError:
        return False


def _interface_of_ip(ip, netifaces):
    """The interface holding local address IP, or None."""
    if netifaces is None and ":" in ip:
        for name, address, _ in _ipv6_addresses():
            if _same_ip(address, ip):
                return name
        return None
    for interface in _interfaces(netifaces):
        if netifaces is None:
            if _ipv4_of(interface) == ip:
                return interface
        elif any(_same_ip(address, ip) for address in _addresses(interface, netifaces)):
            return interface
    return None if netifaces is not None else _route_interface_of(ip)


def _route_interface_of(ip):
    """IPv4 only: the interface of the most specific route covering IP (secondary addresses)."""
    try:
        value = int.from_bytes(socket.inet_aton(ip), "little")  # /proc/net/route is host order
    except OSError:
        return None
    best = None
    for line in _read_lines(PROC_ROUTE)[1:]:
        fields = line.split()
        try:
            destination, mask = int(fields[1], 16), int(fields[7], 16)
        except (IndexError, ValueError):
            continue
        if mask and value & mask == destination and (best is None or bin(mask).count("1") > best[0]):
            best = (bin(mask).count("1"), fields[0])
    return best[1] if best else None


def normalize_mac(text):
    """'AA-bb:CC:dd:EE:ff' -> 'aa:bb:cc:dd:ee:ff'; None unless six octets, not all zero."""
    if not text:
        return None
    octets = text.strip().lower().replace("-", ":").split(":")
    if len(octets) != 6 or not all(len(o) == 2 and all(c in "0123456789abcdef" for c in o) for o in octets):
        return None
    mac = ":".join(octets)
    return None if mac == "00:00:00:00:00:00" else mac


def _interface_mac(interface, netifaces):
    if netifaces is not None:
        try:
            links = netifaces.ifaddresses(interface).get(netifaces.AF_LINK, [])
        except ValueError:
            links = []
        return normalize_mac(links[0].get("addr")) if links else None
    if "/" in interface or interface.startswith("."):
        return None
    lines = _read_lines(os.path.join(SYS_NET, interface, "address"))
    return normalize_mac(lines[0]) if lines else None
