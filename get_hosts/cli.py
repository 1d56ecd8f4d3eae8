"""The get_hosts command: settings -> probe -> choose -> one line for LDM.

Rules:

- stdout gets exactly one line of pool names (or --status's table, or
  --json's document); everything else goes to stderr, prefixed
  ``get_hosts: warning:``, ``get_hosts: explain:`` or ``get_hosts: error:``.
- Exit 0 whenever a host (or the table/document) was printed; 2 when nothing
  can be printed (no pool at all), with one ``get_hosts: error: ...`` line.
- Bad input never costs the login screen its hosts: a bad LB_* value is a
  warning naming variable, file:line and value, and its default is used; an
  unknown LB_ALGORITHM is a warning listing the valid names, and the default
  algorithm is used; an lts.conf that cannot be read is a warning naming
  file and line, and the environment (which LTSP exports from lts.conf to
  screen scripts) is used alone.
- A login screen is never left without a host: no usable server prints the
  whole pool in configured order, and an unexpected bug after the pool is
  known prints the pool too (the traceback only with --debug).
- Start-up time matters (every login, weak hardware): only what the run
  needs is imported, and late. No argparse: the flags are few.
"""

import sys

from get_hosts.errors import GetHostsError
from ltsp_lbcore import __version__

PROG = "get_hosts"
USAGE = f"""usage: {PROG} [--first | --status | --json] [--explain] [--lts-conf FILE] [--debug]

Probe the LTSP application servers of the pool and print the usable ones on
one line, best first, for LDM (LDM_SERVER=$({PROG})).

options:
  --first          print only the best host (XDMCP: X -query $({PROG} --first))
  --status         print a table: host, state, rating, sessions, load per CPU,
                   response ms and the reason, one line per pool member
  --json           the same as --status, as JSON
  --explain        say on stderr why each server was kept or skipped
  --lts-conf FILE  read FILE instead of $LTS_CONF, /etc/lts.conf (LTSP 5) or
                   /etc/ltsp/ltsp.conf (LTSP 20+); either format
  --debug          tracebacks and timings on stderr
  --help           this help
  --version        the version

Variables (environment first, then lts.conf):
"""

_FLAGS = ("--first", "--status", "--json", "--explain", "--debug", "--help", "--version")


class Options:
    """The parsed command line."""

    __slots__ = ("debug", "explain", "first", "help", "json", "lts_conf", "status", "version")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, None if name == "lts_conf" else False)


def parse_args(argv):
    """argv (without the program name) -> Options, or GetHostsError naming the bad argument."""
    options = Options()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in _FLAGS:
            setattr(options, arg[2:], True)
        elif arg == "-h":
            options.help = True
        elif arg == "--lts-conf":
            if not args:
                raise GetHostsError("--lts-conf needs a FILE")
            options.lts_conf = args.pop(0)
        elif arg.startswith("--lts-conf="):
            options.lts_conf = arg.split("=", 1)[1]
        else:
            from get_hosts.report import escape

            kind = "option" if arg.startswith("-") else "argument"
            raise GetHostsError(f"unknown {kind} {escape(arg)!r} (see --help)")
        if options.lts_conf == "":
            raise GetHostsError("--lts-conf needs a FILE")
    if options.status + options.json + options.first > 1:
        raise GetHostsError("--first, --status and --json exclude each other")
    return options


def _load_settings(environ, options):
    """Settings, recovering from what can be recovered (see the module rules)."""
    from get_hosts import settings as settings_module

    try:
        return settings_module.load_settings(environ, options.lts_conf, strict=False)
    except GetHostsError as error:
        from get_hosts.ltsconf import LtsConfError

        if not isinstance(error, LtsConfError):
            raise
        try:
            settings = settings_module.load_settings(environ, strict=False, use_lts_conf=False)
        except GetHostsError:
            raise error from None  # nothing to print: name the first cause
        _stderr(f"{PROG}: warning: {_escape(error)}; using the environment alone")
        return settings


def _run(options, settings):
    from get_hosts import pipeline

    settings, algorithm, warnings = pipeline.select_algorithm(settings)
    for warning in settings.warnings + warnings:
        _stderr(f"{PROG}: warning: {_escape(warning)}")
    explain = [pipeline.summary_line(settings)]
    if settings.lts_conf:
        explain.append(f"read {settings.lts_conf} as {settings.conf_format}")
    wants_table = options.status or options.json

    from get_hosts import choose, report

    failed = () if wants_table else _failed_before(settings, explain)
    if settings.algorithm in choose.NO_PROBE and not wants_table:
        asked = " (no balancer is asked)" if settings.balancers else ""
        explain.append(f"{settings.algorithm}: no probing, the pool as configured{asked}")
        order = _put_last(settings.servers, failed, lambda entry: entry.name)
        _emit_hosts(options, explain, settings, report.host_line(order).split(), failed)
        return 0

    client_key = key_source = None
    identity = settings.identity  # known already when lts.conf's sections needed it; else looked up for mac-hash only
    if settings.algorithm == "mac-hash":
        identity, client_key, key_source, line = pipeline.mac_hash_identity(settings)
        explain.append(line)

    names, results, waited_ms = _gather(settings, wants_table, explain, failed[-1] if failed else None, identity)
    if names:
        _emit_hosts(options, explain, settings, _put_last(names, failed, str), failed)
        return 0
    import random

    probe_ms = waited_ms
    decision = pipeline.decide(settings, algorithm, results, random.Random(), client_key)
    if settings.balancers and not wants_table:
        explain.append(pipeline.applied_here(settings))
    explain.extend(decision.explain)
    if decision.choice.fallback:
        _stderr(f"{PROG}: warning: {_escape(decision.choice.fallback)}")
    if options.json:
        text = report.status_json(decision.choice, settings.algorithm, probe_ms, key_source)
    elif options.status:
        text = report.status_table(decision.choice, settings.port)
    else:
        order = _put_last(decision.choice.order, failed, lambda result: result.entry.name)
        _emit_hosts(options, explain, settings, report.host_line(order).split(), failed)
        return 0
    _emit(options, explain, text)
    return 0


def _failed_before(settings, explain):
    """The hosts of this client's logins that did not last (retry.py), oldest first; explained."""
    from time import monotonic

    from get_hosts import retry

    failed = retry.failed_hosts(retry.read_state(settings.state_dir), monotonic(), settings.retry_seconds)
    for name in failed:
        explain.append(
            f"{name} goes last: this client's login there did not last "
            f"(get_hosts ran again within LB_RETRY_SECONDS {settings.retry_seconds})"
        )
    return failed


def _put_last(items, failed, name_of):
    from get_hosts.retry import demote

    return demote(items, failed, name_of)


def _emit_hosts(options, explain, settings, names, failed):
    """Print the host line, then remember its first host for the next run (retry.py)."""
    _emit(options, explain, names[0] if options.first else " ".join(names))
    if settings.retry_seconds:
        from time import monotonic

        from get_hosts import retry

        retry.write_state(settings.state_dir, monotonic(), names[0], failed)


def _gather(settings, wants_table, explain, failed=None, identity=None):
    """(names a balancer chose, or None; ProbeResults, or None; ms waited): the balancers first, else the probe.

    IDENTITY (identity.Identity or None): what this client knows of itself, sent to the balancer.
    """
    from time import monotonic

    started = monotonic()
    results = None
    if settings.balancers:
        from get_hosts import balancer_client

        if wants_table:
            results, lines, warnings = balancer_client.ask_for_pool(settings)
            explain.extend(lines)
            for warning in warnings:
                _stderr(f"{PROG}: warning: {_escape(warning)}")
        else:
            fields = balancer_client.settings_fields(settings, identity)
            names, lines = balancer_client.ask_for_hosts(settings, failed, fields)
            explain.extend(lines)
            if names:
                waited_ms = (monotonic() - started) * 1000.0
                explain.append(f"waited {waited_ms:.0f} ms in all")
                return names, None, waited_ms
        if results is None:
            explain.append("no balancer answered: probing the pool itself")
    if results is None:
        from get_hosts.probe import probe_pool

        results = probe_pool(settings.servers, settings.timeout_ms)
        explain.append(f"probed {len(results)} servers in {(monotonic() - started) * 1000.0:.0f} ms")
    waited_ms = (monotonic() - started) * 1000.0
    if settings.balancers:
        explain.append(f"waited {waited_ms:.0f} ms in all (balancers and probe)")
    return None, results, waited_ms


def _escape(text):
    from get_hosts.report import escape

    return escape(text, 1000)


def _stderr(line):
    sys.stderr.write(line + "\n")


def _emit(options, explain, text):
    if options.explain or options.debug:
        kind = "explain" if options.explain else "debug"
        for line in explain:
            _stderr(f"{PROG}: {kind}: {_escape(line)}")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main(argv=None, environ=None):
    """Run get_hosts; return the exit status (0 printed something, 2 nothing to print)."""
    if argv is None:
        argv = sys.argv[1:]
    if environ is None:
        import os

        environ = os.environ
    settings = None
    try:
        options = parse_args(argv)
        if options.help:
            from get_hosts.settings import variables_help

            sys.stdout.write(USAGE + variables_help() + "\n")
            return 0
        if options.version:
            sys.stdout.write(f"{PROG} {__version__}\n")
            return 0
        settings = _load_settings(environ, options)
        return _run(options, settings)
    except GetHostsError as error:
        _stderr(f"{PROG}: error: {_escape(error)}")
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away: nothing was printed
        return 2
    except Exception as error:
        if "--debug" in argv:
            raise
        _stderr(f"{PROG}: error: internal error: {type(error).__name__}: {_escape(error)} (run with --debug)")
        if settings is None:
            return 2
        # Still give LDM a host: the pool as configured.
        from get_hosts.report import host_line

        sys.stdout.write(host_line(settings.servers, "--first" in argv) + "\n")
        return 0
