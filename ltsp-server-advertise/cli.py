"""The ltsp-server-advertise command: arguments, logging, startup order, exit codes.

Rules:

- Startup order matters: read the config, get the sockets (from systemd, or
  bind them while still root), drop to USER, take the first sample, then
  serve. So a bad config or a taken port fails before anything is served,
  and nothing but bind() and one warm-up sample ever runs as root.
- Exit codes: 0 served and stopped (SIGTERM) or printed (--once); 2 for a
  config error (bad file, bad --listen, unknown USER); 1 for any other
  ServiceError (cannot bind, cannot collect). Either way one line
  ``ltsp-server-advertise: error: ...`` on stderr; a traceback only with
  --debug.
- Logs go to stderr through logging (ltsp_lbcore.service.setup_logging:
  journald-friendly under systemd).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from ltsp_lbcore import __version__, listeners, privileges
from ltsp_lbcore.errors import ConfigError, ServiceError
from ltsp_lbcore.service import check_config_readable, setup_logging

from . import config
from .advertisement import Advertisement

PROG = "ltsp-server-advertise"
log = logging.getLogger(__name__)

# Descriptors besides the clients: listening sockets, the wakeup pair, the
# stats collector's /proc files, logging.
SPARE_FILE_DESCRIPTORS = 64


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Answer every TCP connection with one XML document of this server's load, then close\n"
        "(see docs/PROTOCOL.md). get_hosts on the thin clients reads it to choose a server.",
        epilog="Config file keys (KEY = VALUE, reloaded on SIGHUP):\n" + config.SCHEMA.render_key_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        action="append",
        metavar="ADDR",
        help="address to listen on: host:port, [v6addr]:port or :port; repeat for more. "
        "Overrides LISTEN of the config file.",
    )
    parser.add_argument(
        "--config",
        default=config.DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"config file (default {config.DEFAULT_CONFIG_PATH}; a missing file means the defaults)",
    )
    parser.add_argument("--once", action="store_true", help="print the document to stdout and exit")
    parser.add_argument("--debug", action="store_true", help="log debug messages; tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def load_config(args):
    """The config file, with --listen applied over it. ConfigError when either is bad."""
    loaded = config.SCHEMA.load(args.config)
    if args.listen:
        loaded = config.SCHEMA.override(loaded, "LISTEN", " ".join(args.listen), "--listen")
    return loaded


def serve(args):
    """Everything after argument parsing; returns the exit status."""
    settings = load_config(args)
    # Imported only now, so that a bad command line or config fails before psutil loads.
    from . import stats
    from .server import Server

    collector = stats.StatsCollector()
    advertisement = Advertisement(collector.collect, settings)
    if args.once:
        advertisement.refresh_now()
        sys.stdout.buffer.write(advertisement.document())
        sys.stdout.flush()
        return 0

    sockets = listeners.from_systemd()
    if sockets:
        log.info(
            "socket activation: %d listening socket(s) from systemd; LISTEN and --listen are not used", len(sockets)
        )
    else:
        sockets = listeners.bind_all(settings.listen)
    # One sample before the drop as well: it loads every module and codec the
    # collection needs while they are still readable (a Python installed
    # under /root is not, for nobody); the sample served is taken after it.
    advertisement.refresh_now()
    privileges.drop_to(settings.user, settings.path)
    check_config_readable(settings.path)
    privileges.ensure_open_files(settings.max_clients + len(sockets) + SPARE_FILE_DESCRIPTORS)
    advertisement.refresh_now()
    server = Server(sockets, settings, advertisement, reload_config=lambda: load_config(args))
    server.install_signal_handlers()
    listeners.notify("READY=1")
    status = server.run()
    listeners.notify("STOPPING=1")
    return status


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup_logging(PROG, args.debug)
    try:
        return serve(args)
    except ServiceError as error:
        if args.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
