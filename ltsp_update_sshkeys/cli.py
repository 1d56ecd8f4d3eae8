"""The command: options, the run from servers to files, exit status and the one error line."""

import argparse
import math
import os
import sys
import traceback

from ltsp_lbcore import __version__
from ltsp_update_sshkeys.base import (
    LTSP5_BASE,
    LTSP20_BASE,
    LTSP20_COMMANDS,
    LTSP20_CONF,
    LTSP20_INITRD_KNOWN_HOSTS,
    base_flavour,
    choose_base,
    rebuild_hint,
)
from ltsp_update_sshkeys.chroots import find_chroots, update_chroots
from ltsp_update_sshkeys.files import read_extraservers, read_known_hosts_file, read_own_host_keys, write_file
from ltsp_update_sshkeys.keys import CACHE_HEADER, render_known_hosts
from ltsp_update_sshkeys.messages import PROG, Reporter, SshKeysError
from ltsp_update_sshkeys.names import parse_server
from ltsp_update_sshkeys.ownnames import own_names
from ltsp_update_sshkeys.policy import cache_keys, plan_keys, silent_warning
from ltsp_update_sshkeys.scan import scan_servers

DEFAULT_EXTRASERVERS = "/etc/ltsp/extraservers"
DEFAULT_CACHE = "/etc/ltsp/ssh_known_hosts.auto"
DEFAULT_HOST_KEYS_DIR = "/etc/ssh"
DEFAULT_TIMEOUT_SECONDS = 5.0

DESCRIPTION = f"""\
Make every LTSP thin client trust the SSH host keys of every server of the pool.

Writes, for each chroot directory under BASE, BASE/CHROOT/etc/ssh/ssh_known_hosts
with this server's own keys (named server, its host names and addresses, and
each --own-name) and the keys of the extra servers (from {DEFAULT_EXTRASERVERS}
and the command line, fetched with ssh-keyscan), and records the extra servers'
keys in the cache ({DEFAULT_CACHE}). No symbolic link below BASE is
followed: a chroot that is one, or whose etc, etc/ssh or ssh_known_hosts is one
(or not a directory / regular file), is skipped with a warning.

BASE, unless --base says otherwise: with LTSP 20+ installed ({LTSP20_COMMANDS[0]}),
BASE_DIR from {LTSP20_CONF} or {LTSP20_BASE}; else {LTSP5_BASE} (LTSP 5) when it exists,
else {LTSP20_BASE} when it exists. BASE_DIR is read as LTSP's ltsp command sets
it on the server: lines before any section, [common], [server], and the
sections their INCLUDE= lines name.

Squashfs images (BASE/images/*.img) cannot be written in place. After this
command, rebuild the image of each updated chroot (LTSP 20+: ltsp image CHROOT;
LTSP 5 NBD: ltsp-update-image CHROOT). LTSP 20+ can instead ship the keys to
the clients of every image, chroot or not, without a rebuild:
  {PROG} --export {LTSP20_INITRD_KNOWN_HOSTS} && ltsp initrd
(ltsp initrd copies /etc/ltsp into ltsp.img; LTSP's login reads that file.)"""


def positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"timeout is not a number (got {text!r})") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"timeout is not positive (got {text})")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog="Exit status: 0 done, 1 a server did not answer (its last known keys were kept), 2 error.",
    )
    parser.add_argument("servers", nargs="*", metavar="SERVER", help="extra server: host, host:port or [v6]:port")
    parser.add_argument("-b", "--base", help="directory holding the chroots (default: see above)")
    parser.add_argument(
        "--ltsp-conf",
        metavar="FILE",
        help=f"LTSP 20+'s ltsp.conf to read BASE_DIR from (default {LTSP20_CONF} when LTSP 20+ is installed)",
    )
    parser.add_argument(
        "-e", "--extraservers", help=f"file listing extra servers, one a line (default {DEFAULT_EXTRASERVERS})"
    )
    parser.add_argument(
        "-c", "--cache", default=DEFAULT_CACHE, help="last known keys of the extra servers (%(default)s)"
    )
    parser.add_argument(
        "--host-keys-dir", default=DEFAULT_HOST_KEYS_DIR, help="where ssh_host_*_key.pub are (%(default)s)"
    )
    parser.add_argument(
        "-n",
        "--own-name",
        action="append",
        default=[],
        metavar="NAME",
        help="another name clients use for this server (repeatable; [name]:port for another port)",
    )
    parser.add_argument(
        "-t",
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="per-server ssh-keyscan timeout (%(default)s)",
    )
    parser.add_argument(
        "-x", "--export", metavar="FILE", help="write the keys to FILE ('-': stdout), not to chroots nor the cache"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    return parser


def export(where, text, reporter):
    """--export: the known_hosts text to stdout ('-') or to a file, chroots and cache untouched."""
    if where == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_file(where, text, reporter)


def write_cache(path, plan, reporter):
    """The last known keys of the servers, for the next run (policy.cache_keys): [problems]."""
    try:
        cache_dir = os.path.dirname(path)
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)
        write_file(path, render_known_hosts([], set(), cache_keys(plan), header=CACHE_HEADER), reporter)
    except SshKeysError as error:
        return [str(error)]
    except OSError as error:
        return [f"cannot write {path}: {error.strerror or error}"]
    return []


def command_line_servers(specs):
    servers = []
    for spec in specs:
        try:
            servers.append(parse_server(spec))
        except ValueError as reason:
            raise SshKeysError(f"bad server {spec!r}: {reason}") from None
    return servers


def update_sshkeys(options, reporter):
    """Do the work; return the exit status (0, or 1 when a server did not answer)."""
    servers = command_line_servers(options.servers)
    extraservers_path = options.extraservers or DEFAULT_EXTRASERVERS
    servers += read_extraservers(extraservers_path, options.extraservers is not None, reporter)
    servers = sorted(set(servers))

    base = None if options.export else choose_base(options.base, options.ltsp_conf, reporter)
    chroots = [] if options.export else find_chroots(base, reporter)
    own_keys = read_own_host_keys(options.host_keys_dir, reporter)
    names = own_names(options.own_name, reporter)

    scanned = scan_servers(servers, options.timeout)
    answered = all(scanned[server] for server in servers)
    cache = {} if answered else (read_known_hosts_file(options.cache, reporter) or {})
    plan = plan_keys(servers, scanned, cache)

    if options.export:
        export(options.export, render_known_hosts(names, own_keys, plan.keys), reporter)
        for server in plan.silent:
            reporter.warning(silent_warning(plan, server))
        return 1 if plan.silent else 0

    if not chroots:
        reporter.warning(f"no chroot under {base} (a chroot is a directory with etc/)")
    problems, written, kept_by_server = update_chroots(base, chroots, names, own_keys, plan, reporter)
    # The cache last: a cache that cannot be written must not keep the chroots from being updated.
    if servers or os.path.lexists(options.cache):
        problems += write_cache(options.cache, plan, reporter)

    for server in plan.silent:
        reporter.warning(silent_warning(plan, server, kept_by_server.get(server)))
    if written:
        # LTSP 5's command only where the chroots are LTSP 5's: it does not exist on LTSP 20+.
        flavour = base_flavour(base, written, options.ltsp_conf)
        reporter.info(f"clients booting images see the change after: {rebuild_hint(flavour, written)}")
    if problems:
        raise SshKeysError("; ".join(problems))
    return 1 if plan.silent else 0


def main(argv=None):
    options = build_parser().parse_args(argv)
    reporter = Reporter(options.quiet)
    try:
        return update_sshkeys(options, reporter)
    except SshKeysError as error:
        if options.debug:
            traceback.print_exc()
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        # A bug: still one line unless --debug asks for the traceback.
        if options.debug:
            raise
        print(f"{PROG}: error: unexpected {type(error).__name__}: {error} (--debug shows where)", file=sys.stderr)
        return 2
