"""The ltsp-server-advertise command: arguments, logging, startup order, exit codes.

Rules:

- Startup order matters: read the config, get the sockets (from systemd, or
  bind them while still root), drop to USER, take the first sample, then
  serve. So a bad config or a taken port fails before anything is served,
  and nothing but bind() and one warm-up sample ever runs as root. That
  sample imports what the daemon needs later, before the drop: a clone or
  a Python under /root is not readable by nobody.
- Exit codes: 0 served and stopped (SIGTERM) or printed (--once); 2 for a
  config error (bad file, bad --listen, unknown USER); 1 for any other
  ServiceError (cannot bind, cannot collect). Either way one line
  ``ltsp-server-advertise: error: ...`` on stderr; a traceback only with
  --debug.
- Logs go to stderr through logging (ltsp_lbcore.service.setup_logging:
  journald-friendly under systemd).
"""

from __future__ import annotations

import logging
import sys

from ltsp_lbcore import listeners, privileges
from ltsp_lbcore.service import (
    check_config_readable,
    listening_sockets,
    load_with_overrides,
    run_main,
    service_parser,
)

from . import config
from .advertisement import Advertisement

PROG = "ltsp-server-advertise"
log = logging.getLogger(__name__)

# Descriptors besides the clients: listening sockets, the wakeup pair, the
# stats collector's /proc files, logging.
SPARE_FILE_DESCRIPTORS = 64


def build_parser():
    parser = service_parser(
        PROG,
        "Answer every TCP connection with one XML document of this server's load, then close\n"
        "(see docs/PROTOCOL.md). get_hosts on the thin clients reads it to choose a server.",
        config.SCHEMA,
        config.DEFAULT_CONFIG_PATH,
    )
    parser.add_argument("--once", action="store_true", help="print the document to stdout and exit")
    parser.add_argument(
        "--ssh-port",
        metavar="PORT",
        help="overrides SSH_PORT of the config file (several daemons on one test host; 0: no sshd check)",
    )
    return parser


def load_config(args):
    """The config file, with --listen and --ssh-port applied over it. ConfigError when either is bad."""
    return load_with_overrides(config.SCHEMA, args, (("SSH_PORT", "--ssh-port"),))


def serve(args):
    """Everything after argument parsing; returns the exit status."""
    settings = load_config(args)
    # Imported only now, so that a bad command line or config fails before psutil loads.
    from . import stats
    from .health import HealthMonitor
    from .server import Server

    collector = stats.StatsCollector(ssh_port=settings.ssh_port or None)
    advertisement = Advertisement(collector.collect, settings)
    if args.once:
        advertisement.health = HealthMonitor()
        advertisement.configure(settings)
        advertisement.health.check_once(settle=True)
        advertisement.refresh_now()
        sys.stdout.buffer.write(advertisement.document())
        sys.stdout.flush()
        return 0

    sockets = listening_sockets(settings.listen)
    # One sample before the drop as well: it loads every module and codec the
    # collection needs while they are still readable (a Python installed
    # under /root is not, for nobody); the sample served is taken after it.
    advertisement.refresh_now()
    privileges.drop_to(settings.user, settings.path)
    check_config_readable(settings.path)
    privileges.ensure_open_files(settings.max_clients + len(sockets) + SPARE_FILE_DESCRIPTORS)
    advertisement.refresh_now()
    # Made after the drop: whether HEALTH_COMMAND can run is asked as USER, who runs it. The server's
    # first apply_config() configures it (one warning at start for a command that cannot run).
    health = advertisement.health = HealthMonitor()
    server = Server(sockets, settings, advertisement, reload_config=lambda: load_config(args))
    # The checks run on their own thread; a change of verdict wakes the loop so that the next
    # document says it (documents read the verdict as they are written).
    health.on_change = server.wake
    health.start()
    server.install_signal_handlers()
    listeners.notify("READY=1")
    status = server.run()
    listeners.notify("STOPPING=1")
    return status


def main(argv=None):
    return run_main(PROG, build_parser().parse_args(argv), serve)


if __name__ == "__main__":
    sys.exit(main())
