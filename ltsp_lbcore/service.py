"""What every service of the project does the same way: logging and reloading.

Rules:

- Logs go to stderr through logging. Under systemd (JOURNAL_STREAM names our
  stderr) each line starts with its syslog priority ``<N>`` and carries no
  timestamp: journald adds its own and files the priority. Otherwise each
  line is ``prog: LEVEL: message``.
- A reload (SIGHUP) reads the config again; a config that cannot be used is
  logged and the running one is kept. Keys that need a restart (the listening
  addresses, the user) are reported when they changed, and the rest applies.

Binding (systemd sockets too) is ``listeners``, the privilege drop
``privileges``: together with this module they are the service plumbing that
ltsp-server-advertise and ltsp-loadbalancer share.
"""

import logging
import os
import sys

from ltsp_lbcore.errors import ServiceError

log = logging.getLogger(__name__)

_SYSLOG_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    """'<4>module: message': the prefix is the syslog priority journald reads."""

    def format(self, record):
        priority = _SYSLOG_PRIORITIES.get(record.levelno, 6)
        return f"<{priority}>" + super().format(record).replace("\n", f"\n<{priority}>")


def _stderr_is_journal(environ):
    stream = environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(2)
    except OSError:
        return False
    return stream == f"{stat.st_dev}:{stat.st_ino}"


def setup_logging(prog, debug, environ=os.environ):
    handler = logging.StreamHandler(sys.stderr)
    if _stderr_is_journal(environ):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def reload_config(load, running, restart_only=("listen", "user")):
    """The config LOAD() gives now, or None (logged) when it cannot be used.

    RUNNING is the config in force: keys of RESTART_ONLY that changed are
    logged as taking effect at the next restart.
    """
    try:
        new = load()
    except ServiceError as error:
        log.error("reload refused, keeping the running configuration: %s", error)
        return None
    for name in restart_only:
        if getattr(new, name) != getattr(running, name):
            log.warning("%s changed in %s: it takes effect at the next restart, not on reload", name.upper(), new.path)
    return new


def check_config_readable(path):
    """Warn at start when the config file cannot be read by the user we run as (after the privilege drop).

    Otherwise the first reload (SIGHUP) would be the first to find out, when
    the admin expects a drain to take effect.
    """
    if path is None or not os.path.lexists(path):
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        import pwd

        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = f"uid {os.geteuid()}"
        log.warning(
            "%s cannot be read by user %s (%s): every reload (SIGHUP) will fail; "
            "make it readable by that user (e.g. chmod 644, and its directories searchable)",
            path,
            user,
            error.strerror,
        )


# --- the command line both services share ----------------------------------------------


def service_parser(prog, description, schema, default_config_path):
    """argparse parser with the options both services take: --listen, --config, --debug, --version."""
    import argparse

    from ltsp_lbcore import __version__

    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Config file keys (KEY = VALUE, reloaded on SIGHUP):\n" + schema.render_key_list(),
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
        default=default_config_path,
        metavar="FILE",
        help=f"config file (default {default_config_path}; a missing file means the defaults)",
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages; tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return parser


def load_with_overrides(schema, args, overrides=()):
    """The config file ARGS.config, then --listen and each (KEY, option) of OVERRIDES given on the command line."""
    loaded = schema.load(args.config)
    if args.listen:
        loaded = schema.override(loaded, "LISTEN", " ".join(args.listen), "--listen")
    for key, option in overrides:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is not None:
            loaded = schema.override(loaded, key, value, option)
    return loaded


def listening_sockets(addresses):
    """The sockets systemd handed over, else ADDRESSES bound now (as root, before the drop)."""
    from ltsp_lbcore import listeners

    sockets = listeners.from_systemd()
    if sockets:
        log.info(
            "socket activation: %d listening socket(s) from systemd; LISTEN and --listen are not used", len(sockets)
        )
        return sockets
    return listeners.bind_all(addresses)


def run_main(prog, args, run):
    """RUN(ARGS) with logging set up; a ServiceError is one ``prog: error:`` line, exit 2 (config) or 1."""
    import traceback

    from ltsp_lbcore.errors import ConfigError

    setup_logging(prog, args.debug)
    try:
        return run(args)
    except ServiceError as error:
        if args.debug:
            traceback.print_exc()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
