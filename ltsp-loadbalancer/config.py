"""The balancer's configuration: its key table (ltsp_lbcore.schema reads, layers and renders it).

``SCHEMA`` is the only place a key of /etc/ltsp/ltsp-loadbalancer.conf
exists: defaults, validation, the shipped default file, --help and the man
page come from it. The keys that mean what a get_hosts variable means
(SKIP_SWAPPING, MAX_LOAD, MAX_RESPONSE_MS) convert with the same converter
(ltsp_lbcore.converters), to the same values: a boolean, a float, an int.

Running this module prints the default file: ``python -m
ltsp_loadbalancer.config > ltsp-loadbalancer/ltsp-loadbalancer.conf``.
"""

from __future__ import annotations

import logging

from ltsp_lbcore import converters
from ltsp_lbcore.hostport import host_key, parse_host_port
from ltsp_lbcore.ports import ADVERTISE_PORT, BALANCER_PORT
from ltsp_lbcore.schema import Key, Schema, listen_addresses, networks, seconds, user_name, whole_number

DEFAULT_CONFIG_PATH = "/etc/ltsp/ltsp-loadbalancer.conf"


def servers(text):
    """SERVERS: space-separated host, host:port or [v6]:port -> tuple of (host, port); port 377 by default."""
    found, seen = [], {}
    for word in text.split():
        try:
            host, port = parse_host_port(word, ADVERTISE_PORT)
        except ValueError as error:
            raise ValueError(f"expected host, host:port or [v6addr]:port: {word!r}: {error}") from None
        key = (host_key(host), port)
        if key in seen:
            raise ValueError(f"{word!r} is the same server as {seen[key]!r}")
        seen[key] = word
        found.append((host, port))
    return tuple(found)


_HEADER = """\
# ltsp-loadbalancer configuration.
#
# KEY = VALUE lines, as in lts.conf; # starts a comment. Every key is shown
# below, commented out, at its default. After a change:
#     systemctl reload ltsp-loadbalancer    (or send SIGHUP)
# A file with an error on reload is refused and the running settings stay;
# the log says which line.
#
# This file is generated from the schema in config.py:
#     python3 -m ltsp_loadbalancer.config
"""

_KEYS = (
    Key(
        "SERVERS",
        "",
        servers,
        "The application servers, space separated: host, host:port or [IPv6-address]:port (port "
        f"{ADVERTISE_PORT}, ltsp-server-advertise, by default). They are the only hosts the balancer ever "
        "polls or names in an answer: a request that names other hosts never makes it connect anywhere. "
        "Use the names the thin clients' LB_SERVERS use. Empty: every login is answered 503 and the "
        "thin clients probe the pool themselves. --servers on the command line overrides this.",
    ),
    Key(
        "POLL_SECONDS",
        "2",
        seconds(0.2, 600),
        "How often every server is polled, in seconds. Logins handed out between two polls are "
        "counted by the balancer itself (LOGIN_WINDOW_SECONDS), so a longer interval costs "
        "accuracy only when logins end or start elsewhere.",
    ),
    Key(
        "POLL_TIMEOUT_MS",
        "1000",
        whole_number(50, 60_000),
        "How long one poll waits for a server's document, in milliseconds; a server that has not "
        "answered by then is Down until the next poll. Keep it below POLL_SECONDS (a warning says so).",
    ),
    Key(
        "LOGIN_WINDOW_SECONDS",
        "30",
        seconds(1, 3600),
        "A login handed out counts on its server until the server's own figures show it (its "
        "sessions grew in a sample taken after the hand-out) or this many seconds pass (the client "
        "never logged in).",
    ),
    Key(
        "ONE_LOGIN_SECONDS",
        "30",
        seconds(0, 3600),
        "A client (by its address) that asks for a login again within this many seconds gets a new "
        "one in place of its previous one, which stops counting: one client holds at most one pending "
        "login, so a program asking in a loop cannot make servers look full. 0 counts every request: "
        "for thin clients that reach the balancer through one NAT address.",
    ),
    Key(
        "SKIP_SWAPPING",
        "true",
        converters.boolean,
        "Skip servers that are actively swapping (true/false, yes/no, y/n, 1/0), as get_hosts' "
        "LB_SKIP_SWAPPING. A client whose "
        "configuration sets LB_SKIP_SWAPPING has its own applied to its logins instead.",
    ),
    Key(
        "MAX_LOAD",
        "none",
        converters.optional_load,
        "Skip servers whose load average per CPU is above this (a decimal such as 1.5), as LB_MAX_LOAD. "
        "A client whose configuration sets LB_MAX_LOAD has its own applied to its logins instead.",
    ),
    Key(
        "MAX_RESPONSE_MS",
        "none",
        converters.optional_milliseconds,
        "Skip servers whose poll took longer than this many milliseconds, as LB_MAX_RESPONSE_MS. A client "
        "whose configuration sets LB_MAX_RESPONSE_MS has its own applied to its logins instead. Keep it "
        "below POLL_TIMEOUT_MS (a slower poll is Down already).",
    ),
    Key(
        "ALLOW",
        "0.0.0.0/0 ::/0",
        networks,
        "Client networks that may ask, separated by spaces (CIDR, e.g. 192.168.67.0/24 fd00::/8). "
        "Other clients have the connection closed before anything is read, and a warning in the log "
        "(one per client a minute, then how many more). Keep the boot server itself (127.0.0.0/8 ::1) "
        "to use the status page and curl there. The default lets everyone ask.",
    ),
    Key(
        "LISTEN",
        f"[::]:{BALANCER_PORT} 0.0.0.0:{BALANCER_PORT}",
        listen_addresses,
        "Addresses to listen on, separated by spaces: host:port, [v6addr]:port, or :port for every "
        "address. --listen on the command line overrides this. A change needs a restart.",
    ),
    Key(
        "USER",
        "nobody",
        user_name,
        "When started as root: the user to become once the sockets are bound. The systemd unit "
        "does not start as root (DynamicUser) and ignores it.",
    ),
    Key(
        "MAX_CLIENTS",
        "1024",
        whole_number(1, 65536),
        "How many client connections are open at once at most; more are closed at once. When the open files "
        "limit (LimitNOFILE, ulimit -n) cannot hold this many, it is lowered to what fits, with a warning.",
    ),
    Key(
        "CLIENT_TIMEOUT_SECONDS",
        "5",
        seconds(0.1, 300),
        "A client that has not sent its whole request this many seconds after connecting (or after its previous "
        "answer) is disconnected, and so is one that has not taken its answer this many seconds after sending "
        "the request.",
    ),
    Key(
        "MAX_REQUEST_BYTES",
        "65536",
        whole_number(1024, 16 * 1024 * 1024),
        "The largest request body (a POST /v1/hosts naming a long pool), in bytes; headers are limited to 8 KiB.",
    ),
)

SCHEMA = Schema(_KEYS, _HEADER, logging.getLogger(__name__))


def _where(settings):
    path = getattr(settings, "path", None)
    return f" in {path}" if path else ""


def conflicts(settings):
    """Warnings, one line each, for keys that are valid alone but do not work together (said at start and reload)."""
    warnings = []
    if not settings.servers:
        warnings.append(
            f"SERVERS is empty: nothing to balance; every login is answered 503 and the thin clients probe "
            f"the pool themselves (set SERVERS{_where(settings)}, or --servers)"
        )
    poll_ms = settings.poll_seconds * 1000
    if settings.poll_timeout_ms > poll_ms:
        warnings.append(
            f"POLL_TIMEOUT_MS {settings.poll_timeout_ms} is above POLL_SECONDS {settings.poll_seconds:g} "
            f"({poll_ms:.0f} ms): while a server does not answer, every round waits for it and the polls "
            f"come every {settings.poll_timeout_ms} ms, not every {poll_ms:.0f}; keep POLL_TIMEOUT_MS below"
        )
    if settings.login_window_seconds < settings.poll_seconds:
        warnings.append(
            f"LOGIN_WINDOW_SECONDS {settings.login_window_seconds:g} is below POLL_SECONDS "
            f"{settings.poll_seconds:g}: a login handed out stops counting before the next poll can show it, "
            f"so the logins between two polls pile onto the same servers; keep it several POLL_SECONDS"
        )
    if settings.max_response_ms is not None and settings.max_response_ms >= settings.poll_timeout_ms:
        warnings.append(
            f"MAX_RESPONSE_MS {settings.max_response_ms} is not below POLL_TIMEOUT_MS "
            f"{settings.poll_timeout_ms}: a poll slower than POLL_TIMEOUT_MS is Down already, so it skips nothing"
        )
    return warnings


if __name__ == "__main__":
    print(SCHEMA.render_default_file(), end="")
