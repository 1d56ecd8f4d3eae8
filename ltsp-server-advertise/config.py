"""The daemon's configuration: its key table (ltsp_lbcore.schema reads, layers and renders it).

``SCHEMA`` is the only place a key of /etc/ltsp/ltsp-server-advertise.conf
exists: defaults, validation, the shipped default file, --help and the man
page come from it (see ltsp_lbcore.schema for the file's rules and errors).

Running this module prints the default file: ``python -m
ltsp_server_advertise.config > ltsp-server-advertise/ltsp-server-advertise.conf``.
"""

from __future__ import annotations

import logging

from ltsp_lbcore import states
from ltsp_lbcore.ports import ADVERTISE_PORT, SSH_PORT
from ltsp_lbcore.schema import (
    Key,
    Schema,
    choice,
    command_line,
    listen_addresses,
    networks,
    seconds,
    user_name,
    whole_number,
)

from .rating import DEFAULT_SESSION_CPU_MHZ, DEFAULT_SESSION_MEMORY_BYTES

DEFAULT_CONFIG_PATH = "/etc/ltsp/ltsp-server-advertise.conf"
MIB = 1024 * 1024

_HEADER = """\
# ltsp-server-advertise configuration.
#
# KEY = VALUE lines, as in lts.conf; # starts a comment. Every key is shown
# below, commented out, at its default. After a change:
#     systemctl reload ltsp-server-advertise    (or send SIGHUP)
# A file with an error on reload is refused and the running settings stay;
# the log says which line.
#
# This file is generated from the schema in config.py:
#     python3 -m ltsp_server_advertise.config
"""


_KEYS = (
    Key(
        "STATE",
        "ready",
        choice(*states.ADMIN_STATES),
        "Whether this server takes new sessions: ready; drain (keep the running sessions, "
        "take no new ones: the rating becomes 0); or maint (under maintenance). "
        "Clients log in only to servers that are ready. Change it and send SIGHUP "
        "(systemctl reload ltsp-server-advertise) to drain a server before a reboot.",
    ),
    Key(
        "WEIGHT",
        "100",
        whole_number(0),
        "Relative capacity of this server next to the others in the pool: 50 next to 100 "
        "takes half the share. It scales the capacity the rating is computed from (docs/PROTOCOL.md); "
        "0 takes no new sessions: get_hosts and ltsp-loadbalancer skip it as they skip STATE = drain "
        "(running sessions stay), never as a last resort.",
    ),
    Key(
        "SAMPLE_SECONDS",
        "1",
        seconds(0.1, 3600),
        "How long one sample of the statistics is reused, in seconds. A storm of logins "
        "costs one sample per this interval, not one per client; shorter is fresher "
        "(docs/placement.md: 1 s keeps a 10 s burst of 1,400 logins even). While nobody asks, "
        "the daemon samples once a minute and is otherwise idle.",
    ),
    Key(
        "MAX_CLIENTS",
        "1024",
        whole_number(1, 65536),
        "How many clients are served at once at most. A client normally takes a few "
        "microseconds (the document is written and the connection closed at once); only "
        "a client that does not take the document holds a place, until WRITE_TIMEOUT_SECONDS.",
    ),
    Key(
        "WRITE_TIMEOUT_SECONDS",
        "5",
        seconds(0.1, 300),
        "A client that has not taken the whole document after this many seconds is disconnected.",
    ),
    Key(
        "ALLOW",
        "0.0.0.0/0 ::/0",
        networks,
        "Client networks that may ask, separated by spaces (CIDR, e.g. 192.168.67.0/24 "
        "fd00::/8; a single address is a /32 or /128). Other clients have the "
        "connection closed without a document, and a warning in the log (one per client a minute, "
        "then how many more). The default lets everyone ask.",
    ),
    Key(
        "LISTEN",
        f"[::]:{ADVERTISE_PORT} 0.0.0.0:{ADVERTISE_PORT}",
        listen_addresses,
        "Addresses to listen on, separated by spaces: host:port, [v6addr]:port, or :port "
        "for every address. --listen on the command line overrides this. A change needs "
        "a restart, not a reload: the daemon no longer has the privilege to bind port 377. "
        "Ignored under systemd socket activation (the .socket unit says where).",
    ),
    Key(
        "USER",
        "nobody",
        user_name,
        "When started as root: the user to become once the sockets are bound (its "
        "primary group too; supplementary groups are dropped). nobody owns no files and "
        "exists everywhere; a dedicated system user is better still if your packaging "
        "creates one. The systemd unit does not start as root (DynamicUser) and ignores it.",
    ),
    Key(
        "SSH_PORT",
        str(SSH_PORT),
        whole_number(0, 65535),
        "TCP port of the login service this server offers (sshd: LDM logs in over ssh; 3389 for xrdp). "
        "The daemon checks every 2 s, from the kernel's socket table and without connecting (sshd's "
        "log stays quiet), that something listens there and accepts: when nothing has listened for "
        "two checks, or connections wait unaccepted for 6 s, the server advertises itself as failing "
        "and clients skip it. Logins in progress are counted on this port too. 0 turns the check off "
        "(XDMCP has no TCP login port).",
    ),
    Key(
        "HEALTH_COMMAND",
        "",
        command_line,
        "A check only this site knows, e.g. /usr/local/sbin/check-logins (LDAP answers, /home is "
        "mounted, /tmp has room). Run every HEALTH_SECONDS without a shell (quotes group words, "
        "nothing is expanded), as the daemon's user: a non-zero exit, or not finishing within "
        "HEALTH_SECONDS, makes the server failing, with the first line it printed as the reason. "
        "A command that cannot run is said in the log at start and on reload, and never takes the "
        "server out by itself. Empty: no such check.",
    ),
    Key(
        "HEALTH_SECONDS",
        "10",
        seconds(1, 3600),
        "How often HEALTH_COMMAND runs, in seconds; also its time limit.",
    ),
    Key(
        "SESSION_CPU_MHZ",
        str(DEFAULT_SESSION_CPU_MHZ),
        whole_number(1, 1_000_000),
        "CPU one user session needs, in MHz: the rating's CPU budget per session (see docs/PROTOCOL.md).",
    ),
    Key(
        "SESSION_MEMORY_MB",
        str(DEFAULT_SESSION_MEMORY_BYTES // MIB),
        whole_number(1, 1_000_000),
        "Memory one user session needs, in MiB: the rating's memory budget per session.",
    ),
)
SCHEMA = Schema(_KEYS, _HEADER, logging.getLogger(__name__))


if __name__ == "__main__":
    print(SCHEMA.render_default_file(), end="")
