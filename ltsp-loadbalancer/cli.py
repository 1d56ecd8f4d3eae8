"""The ltsp-loadbalancer command: arguments, startup order, signals, exit codes.

Rules:

- Startup order, as the daemon's: read the config (a bad one fails here,
  with one line naming file, line, key and value), get the sockets (from
  systemd, or bind them while still root), drop to USER, then serve and poll.
  Every module is imported before the drop, LATE_IMPORTS too: a clone or a
  Python under /root is not readable by nobody.
- SIGHUP reloads the config file (``--servers`` still overrides SERVERS):
  a bad file is logged and the running config kept; a good one applies at
  once (SERVERS, ALLOW, POLL_SECONDS, limits...) and starts a poll; LISTEN
  and USER need a restart. SIGTERM and SIGINT stop it (exit 0).
- Keys that are valid alone but do not work together (config.conflicts:
  SERVERS empty, POLL_TIMEOUT_MS above POLL_SECONDS...) are one warning
  each, at start and after each reload.
- Exit codes: 0 stopped; 2 config error; 1 any other ServiceError (cannot
  bind). One ``ltsp-loadbalancer: error: ...`` line; tracebacks with --debug.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import sys
from time import monotonic

from ltsp_lbcore import listeners, privileges
from ltsp_lbcore.allow import AllowList
from ltsp_lbcore.service import (
    check_config_readable,
    listening_sockets,
    load_with_overrides,
    reload_config,
    run_main,
    service_parser,
)

from . import config
from .balancer import Balancer
from .http import make_application, make_server
from .poller import Poller
from .web import extra_routes

PROG = "ltsp-loadbalancer"
log = logging.getLogger(__name__)

# Descriptors besides the clients: listening sockets, one poll's sockets, logging.
SPARE_FILE_DESCRIPTORS = 64
# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). The poller's
# and the status page's threads work for tens of ms at 1,000 servers: at 0.5 ms the event loop gets the
# GIL back within half a millisecond, so a login waits ~1 ms behind them, not ~5
# (benchmarks/status_page.py measures both).
SWITCH_INTERVAL_SECONDS = 0.0005
# What would be imported after the privilege drop, unless imported before it: Tornado's asyncio glue, at
# the first IOLoop.current() of the running loop (tests/test_privilege_drop.py finds any other).
LATE_IMPORTS = ("tornado.platform.asyncio",)


def build_parser():
    parser = service_parser(
        PROG,
        "The central balancer of LTSP load balancing: polls every application server's\n"
        "ltsp-server-advertise and answers each login with one HTTP request (GET /v1/hosts),\n"
        "counting the logins it hands out. get_hosts asks it first (LB_BALANCER).",
        config.SCHEMA,
        config.DEFAULT_CONFIG_PATH,
    )
    parser.add_argument("--servers", metavar='"H1 H2:377 ..."', help="the application servers; overrides SERVERS")
    return parser


def load_config(args):
    """The config file with --listen and --servers applied over it. ConfigError when one is bad."""
    return load_with_overrides(config.SCHEMA, args, [("SERVERS", "--servers")])


def _describe(settings):
    return (
        f"{len(settings.servers)} servers, POLL_SECONDS={settings.poll_seconds:g}, "
        f"LOGIN_WINDOW_SECONDS={settings.login_window_seconds:g}"
    )


async def serve(args, balancer, sockets):
    settings = balancer.config
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    poller = Poller(balancer)
    routes, observe = extra_routes(balancer, poller)
    server = make_server(make_application(balancer, routes, observe), settings, AllowList(settings.allow))
    server.max_clients = client_limit(settings)
    server.add_sockets(sockets)
    for sock in sockets:
        log.info("listening on %s", listeners.describe(sock))
    _warn_conflicts(settings)
    log.info("balancing %s", _describe(settings))

    stopped = asyncio.Event()

    def reload():
        new = reload_config(lambda: load_config(args), balancer.config)
        if new is None:
            return
        balancer.reconfigure(new, monotonic())
        server.allow = AllowList(new.allow)
        server.max_clients = client_limit(new)
        server.client_timeout = new.client_timeout_seconds
        poller.poll_now()
        log.info("reloaded %s: %s", new.path, _describe(new))
        _warn_conflicts(new)

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    polling = asyncio.ensure_future(poller.run())
    listeners.notify("READY=1")
    await stopped.wait()
    listeners.notify("STOPPING=1")
    polling.cancel()
    server.stop()
    server.refusals.flush(float("inf"))  # the refusals counted since their peer's last line
    return 0


def client_limit(settings):
    """MAX_CLIENTS as the descriptor limit allows it (raised toward what it needs, up to the hard limit): clamped
    with one warning when it does not, so a client beyond it is refused instead of accept() spinning on EMFILE."""
    others = len(settings.servers) + SPARE_FILE_DESCRIPTORS
    wanted = settings.max_clients + others
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):  # a seccomp filter, a container: the soft limit stays
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return settings.max_clients
    allowed = max(1, soft - others)
    log.warning(
        "MAX_CLIENTS %d needs about %d file descriptors, only %d are allowed: at most %d clients at once "
        "(raise LimitNOFILE / ulimit -n, or lower MAX_CLIENTS)",
        settings.max_clients,
        wanted,
        soft,
        allowed,
    )
    return allowed


def _warn_conflicts(settings):
    for warning in config.conflicts(settings):
        log.warning("%s", warning)


def run(args):
    settings = load_config(args)
    sockets = listening_sockets(settings.listen)
    balancer = Balancer(settings)
    privileges.drop_to(settings.user, settings.path, preload=LATE_IMPORTS)
    check_config_readable(settings.path)
    return asyncio.run(serve(args, balancer, sockets))


def main(argv=None):
    return run_main(PROG, build_parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
