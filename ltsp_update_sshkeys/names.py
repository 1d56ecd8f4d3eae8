"""Servers as ssh names them in known_hosts; every name goes through ltsp_lbcore.hostport. No I/O."""

from dataclasses import dataclass

from ltsp_lbcore.hostport import canonical_host, parse_host_port
from ltsp_lbcore.ports import SSH_PORT

ASCII_SPACE = " \t\r\n\v\f"


@dataclass(frozen=True, order=True)
class Server:
    """One extra server as the pool names it: a host (name or address, canonical) and a TCP port."""

    host: str
    port: int = SSH_PORT

    @property
    def known_hosts_name(self):
        """The name ssh looks up in known_hosts: ``host`` on port 22, ``[host]:port`` otherwise."""
        if self.port == SSH_PORT:
            return self.host
        return f"[{self.host}]:{self.port}"


def known_hosts_host(host):
    """The host as written in known_hosts: canonical (hostport), a name without its trailing dot."""
    canonical = canonical_host(host)
    return canonical if ":" in canonical else canonical.rstrip(".")


def parse_server(spec):
    """Turn ``host``, ``host:port``, ``[v6]:port``, ``[v6]`` or a bare IPv6 address into a Server.

    Raises ValueError with the reason (ltsp_lbcore.hostport's) when it is not one of those.
    """
    spec = spec.strip(ASCII_SPACE)
    if not spec or any(char in ASCII_SPACE for char in spec):
        raise ValueError("expected one host or host:port")
    host, port = parse_host_port(spec, SSH_PORT)
    return Server(known_hosts_host(host), port)


def parse_own_name(text):
    """An --own-name as its known_hosts name; ssh's ``[host]:port`` is taken for any host.

    Raises ValueError with the reason.
    """
    word = text
    close = word.find("]:")
    if word.startswith("[") and close > 0 and ":" not in word[1:close]:
        word = word[1:close] + word[close + 1 :]  # [name]:port -> name:port
    return parse_server(word).known_hosts_name
