"""get_hosts configuration: the one table of LB_* variables, and where their values come from.

Rules:

- Every variable is a row of VARIABLES (name, Settings field, default,
  converter, help); the Settings type, defaults, validation and the
  documentation all come from that table. The converters of values the
  balancer reads too (LB_SKIP_SWAPPING, LB_MAX_LOAD, LB_MAX_RESPONSE_MS,
  milliseconds) are ltsp_lbcore.converters', shared with its config.
- The environment first (LTSP exports lts.conf to screen scripts), then
  lts.conf, then the default. An empty (or blank) value counts as unset, in the
  environment as in lts.conf (``LB_TIMEOUT=`` or ``LB_TIMEOUT =``): the next
  source decides. ``NONE`` unsets, as in lts.conf: the default applies and
  lts.conf is not consulted for that variable.
- The config file is ``--lts-conf FILE`` (load_settings' ``lts_conf_path``),
  else ``$LTS_CONF``, else /etc/lts.conf (LTSP 5), else /etc/ltsp/ltsp.conf
  (LTSP 20+); only the last two may be missing. Either format is read from
  any of these paths: they are told apart by their sections
  (ltspconf.looks_like_ltsp_conf); Settings.conf_format says which it was.
  LTSP 20+'s is evaluated as LTSP's own shell would (get_hosts.ltspconf).
- ``LB_SERVERS`` unset, empty or without one valid entry: ``SERVER`` alone.
  Neither: GetHostsError("no server pool: ...") naming where it looked and,
  when no file named the pool, the ``--lts-conf`` that would (an admin
  running get_hosts on the LTSP server, whose clients' lts.conf is in a
  chroot, meets this first).
- A bad value is a GetHostsError naming the variable, where it came from
  (the environment, or file:line) and the value, unless ``strict=False``:
  then it is a warning and the default applies.

- This client's identity (identity.client_identity) is looked up only when
  lts.conf has sections other than [Default], toward SERVER (else the first
  LB_SERVERS entry). Settings.identity: the one given or looked up, else None.

Imports ``collections`` and the small ltsp_lbcore modules only; os, lts.conf
parsing, identity lookups and socket (for IPv6 pool entries) are imported
when needed.
"""

from collections import namedtuple

from get_hosts.errors import GetHostsError
from ltsp_lbcore import converters
from ltsp_lbcore.numbers import is_plain_whole
from ltsp_lbcore.oldpython import record
from ltsp_lbcore.ports import ADVERTISE_PORT

DEFAULT_ALGORITHM = "two-choice"
DEFAULT_PORT = ADVERTISE_PORT
DEFAULT_LTS_CONF = "/etc/lts.conf"  # LTSP 5
DEFAULT_LTSP_CONF = "/etc/ltsp/ltsp.conf"  # LTSP 20+
DEFAULT_CONF_PATHS = (DEFAULT_LTS_CONF, DEFAULT_LTSP_CONF)
LTSP5, LTSP20 = "LTSP 5 lts.conf", "LTSP 20+ ltsp.conf"
ENVIRONMENT = "the environment"

PoolEntry = namedtuple("PoolEntry", "name host port")
DEFAULT_STATE_DIR = "/run/ltsp"
DEFAULT_RETRY_SECONDS = 60

# default_text: how the documentation shows the default.
Variable = namedtuple("Variable", "name field default default_text converter help")


# --- converters: text -> value, or ValueError whose message follows the quoted value ---


def to_text(text):
    return text.strip()


def to_algorithm(text):
    """Lower-cased name; the chooser checks it against its registry."""
    name = text.strip().lower()
    if not name:
        raise ValueError("is not an algorithm name")
    return name


def _whole(text, what):
    digits = text.strip()
    if not is_plain_whole(digits):
        raise ValueError(f"is not a whole number of {what}")
    return int(digits)


def to_port(text):
    port = _whole(text, "port")
    if not 1 <= port <= 65535:
        raise ValueError("is not a port (1-65535)")
    return port


# Shared with the balancer's config and its request fields (ltsp_lbcore.converters): the same words mean
# the same values on both sides.
MAX_MILLISECONDS = converters.MAX_MILLISECONDS
to_milliseconds = converters.milliseconds
to_optional_milliseconds = converters.optional_milliseconds
to_optional_load = converters.optional_load
to_boolean = converters.boolean


def to_directory(text):
    path = text.strip()
    if not path.startswith("/") or "\0" in path:
        raise ValueError("is not an absolute directory path")
    return path


def to_retry_seconds(text):
    value = _whole(text, "seconds")
    if value > 86400:
        raise ValueError("is more than 86400 seconds (a day)")
    return value


VARIABLES = (
    Variable(
        "LB_SERVERS",
        "servers",
        None,
        "$SERVER alone",
        to_text,
        "The pool of application servers, space separated: host, host:port, [IPv6-address]:port "
        "(a bare IPv6 address has no port). Use the names ssh's known_hosts uses. "
        "Invalid and duplicate entries are skipped with a warning.",
    ),
    Variable(
        "LB_ALGORITHM",
        "algorithm",
        DEFAULT_ALGORITHM,
        DEFAULT_ALGORITHM,
        to_algorithm,
        "How usable servers are ordered: two-choice (the default: spreads a login storm evenly), random, "
        "best-rated, weighted, mac-hash, fixed (no probing) or loadbalancer (ask ltsp-loadbalancer, see "
        "LB_BALANCER; two-choice when it does not answer).",
    ),
    Variable("LB_PORT", "port", DEFAULT_PORT, str(DEFAULT_PORT), to_port, "Port of ltsp-server-advertise."),
    Variable(
        "LB_TIMEOUT",
        "timeout_ms",
        1000,
        "1000",
        to_milliseconds,
        "Hard bound on the whole probe (connect and read, all servers together), in milliseconds.",
    ),
    Variable(
        "LB_MAX_RESPONSE_MS",
        "max_response_ms",
        None,
        "none",
        to_optional_milliseconds,
        "Skip servers that answer slower than this many milliseconds.",
    ),
    Variable(
        "LB_MAX_LOAD",
        "max_load",
        None,
        "none",
        to_optional_load,
        "Skip servers whose load average per CPU is above this (a decimal such as 1.5).",
    ),
    Variable(
        "LB_SKIP_SWAPPING",
        "skip_swapping",
        True,
        "true",
        to_boolean,
        "Skip servers that are actively swapping (true/false, yes/no, y/n, 1/0, any case).",
    ),
    Variable(
        "LB_BALANCER",
        "balancer_text",
        None,
        "none",
        to_text,
        "ltsp-loadbalancer(s) to ask first, space separated: host or host:port (port 8377). All are asked "
        "at once and the first good answer is printed; when none answers within LB_BALANCER_TIMEOUT, "
        "get_hosts probes the pool itself. LB_ALGORITHM=loadbalancer without LB_BALANCER asks $SERVER:8377.",
    ),
    Variable(
        "LB_BALANCER_TIMEOUT",
        "balancer_timeout_ms",
        300,
        "300",
        to_milliseconds,
        "How long to wait for a balancer before probing the pool itself, in milliseconds: a login "
        "waits at most LB_BALANCER_TIMEOUT + LB_TIMEOUT.",
    ),
    Variable(
        "LB_STATE_DIR",
        "state_dir",
        DEFAULT_STATE_DIR,
        DEFAULT_STATE_DIR,
        to_directory,
        "Where this client remembers its last choice (a tmpfs; created when missing). Where it cannot be "
        "written nothing is remembered, silently.",
    ),
    Variable(
        "LB_RETRY_SECONDS",
        "retry_seconds",
        DEFAULT_RETRY_SECONDS,
        str(DEFAULT_RETRY_SECONDS),
        to_retry_seconds,
        "A run this soon after the last one means that login did not last (LDM runs get_hosts again when "
        "ldm exits): the host chosen last time goes last, and a balancer is told (failed=HOST). 0 turns "
        "this off.",
    ),
)


# What load_settings finds beside the variables' values: (field, default).
FOUND = (
    ("server", None),  # SERVER, stripped, or None
    ("lts_conf", None),  # the file read, or None
    ("warnings", ()),
    ("identity", None),  # identity.Identity: given or looked up, else None
    ("balancers", ()),  # LB_BALANCER as (host, port) pairs
    ("conf_format", None),  # LTSP5 or LTSP20, None when no file was read
    ("sources", None),  # variable name -> where its value came from
)
# One field per variable (LB_SERVERS: its PoolEntry list), then FOUND; every field has its default.
Settings = record(
    "Settings",
    [var.field for var in VARIABLES] + [field for field, _default in FOUND],
    defaults=[var.default for var in VARIABLES] + [default for _field, default in FOUND],
)
Settings.__doc__ = """One client's settings, generated from VARIABLES (and FOUND). sources: variable name
-> where its value came from (ENVIRONMENT or path:line), for the variables that were set; a warning about a
value found later (LB_ALGORITHM's) names it from there."""


def variables_help(width=78):
    """The table as plain text, one paragraph per variable: for --help, man pages and lts.conf.example."""
    lines = []
    for var in VARIABLES:
        lines.append(f"{var.name} (default: {var.default_text})")
        line = "   "
        for word in var.help.split():
            if len(line) + 1 + len(word) > width and line.strip():
                lines.append(line)
                line = "   "
            line += " " + word
        lines.append(line)
    return "\n".join(lines)


# --- the pool ---


def parse_pool(text, default_port=DEFAULT_PORT):
    """'app1 app2:3377 [2001:db8::1]:377 fd00::5' -> ([PoolEntry], [warning]); bad and duplicate entries skipped."""
    from ltsp_lbcore.hostport import host_key, parse_host_port

    entries, warnings, seen = [], [], {}
    for word in (text or "").split():
        try:
            host, port = parse_host_port(word, default_port)
        except ValueError as problem:
            warnings.append(f"skipping pool entry {word!r}: {problem}")
            continue
        entry = PoolEntry(host, host, port)
        key = (host_key(entry.host), entry.port)
        if key in seen:
            warnings.append(f"skipping pool entry {word!r}: same server as {seen[key]!r}")
            continue
        seen[key] = word
        entries.append(entry)
    return entries, warnings


# --- putting it together ---


def _lts_conf_path(environ, lts_conf_path):
    """(path, must_exist) or (None, False): --lts-conf, $LTS_CONF, else the first of DEFAULT_CONF_PATHS there is."""
    if lts_conf_path:
        return lts_conf_path, True
    if environ.get("LTS_CONF"):
        return environ["LTS_CONF"], True
    import os

    for path in DEFAULT_CONF_PATHS:
        if os.path.lexists(path):
            return path, False
    return None, False


def _read_conf(environ, lts_conf_path, identity, warnings):
    """(KEY -> Entry for this client, the path read or None, the identity used or None, its format or None)."""
    path, _must_exist = _lts_conf_path(environ, lts_conf_path)
    if path is None:
        return {}, None, identity, None
    from get_hosts import ltsconf, ltspconf

    text = ltsconf.read_text(path)
    if ltspconf.looks_like_ltsp_conf(text, default=path.endswith("ltsp.conf")):
        entries, identity = _ltsp_conf_entries(text, path, environ, identity, warnings)
        return entries, path, identity, LTSP20
    conf = ltsconf.parse_lts_conf(path, text)
    warnings.extend(conf.warnings + ltsconf.empty_section_warnings(conf))
    if identity is None and conf.has_client_sections():
        from get_hosts.identity import client_identity

        identity = client_identity(_toward(environ, conf.default_value))
    return ltsconf.lts_conf_entries(conf, identity), path, identity, LTSP5


def _ltsp_conf_entries(text, path, environ, identity, warnings):
    """(entries, identity) of an LTSP 20+ ltsp.conf, evaluated as LTSP's own shell would for this client."""
    from get_hosts import ltspconf

    if identity is None:
        from get_hosts.identity import client_identity

        # Where the servers are may itself come from [clients] or [common]: read them once without an identity.
        common = ltspconf.ltsp_conf_entries(text, path, None, environ)
        identity = client_identity(_toward(environ, lambda name: common[name].value if name in common else None))
    entries = ltspconf.ltsp_conf_entries(text, path, identity, environ, wanted=read_from_ltsp_conf)
    warnings.extend(entries.warnings)
    return entries, identity


def read_from_ltsp_conf(name):
    """The ltsp.conf variables get_hosts reads (HOSTNAME picks the host's section): a line that can touch
    none of them is none of get_hosts' business, so LTSP's other settings do not warn at every login."""
    return name.startswith("LB_") or name in ("SERVER", "HOSTNAME")


def _toward(environ, conf_value):
    """Where the servers are, before the sections are known: SERVER, else the first pool entry.

    CONF_VALUE(name): the value the file gives every client (lts.conf's [Default]), or None.
    """
    for name in ("SERVER", "LB_SERVERS"):
        for text in (environ.get(name), conf_value(name)):
            if text and text != "NONE":
                entries, _ = parse_pool(text, DEFAULT_PORT)
                if entries:
                    return entries[0].host
    return None


def _lookup(name, environ, entries):
    """(text or None, source) for NAME: environment, then lts.conf; None when unset."""
    value = environ.get(name)
    if value and value.strip():
        return (None if value == "NONE" else value), ENVIRONMENT
    entry = entries.get(name)
    if entry is not None and entry.value.strip():
        return entry.value, f"{entry.path}:{entry.lineno}"
    return None, None


def load_settings(environ, lts_conf_path=None, identity=None, strict=True, use_lts_conf=True):
    """Settings for this client from ENVIRON (a mapping), then lts.conf (see module rules).

    IDENTITY (identity.Identity) picks the lts.conf sections; without it,
    client_identity() is asked only when lts.conf has sections other than
    [Default]. STRICT false turns a bad value into a warning and the default.
    USE_LTS_CONF false reads the environment alone (what LTSP exported from
    lts.conf), for when lts.conf itself cannot be read. Raises GetHostsError
    (ltsconf.LtsConfError for lts.conf).
    """
    warnings = []
    entries, conf_path, conf_format = {}, None, None
    if use_lts_conf:
        entries, conf_path, identity, conf_format = _read_conf(environ, lts_conf_path, identity, warnings)
    values = {}
    sources = {}
    pool_text = pool_source = None
    for var in VARIABLES:
        text, source = _lookup(var.name, environ, entries)
        if source is not None:
            sources[var.name] = source
        if var.name == "LB_SERVERS":
            pool_text, pool_source = text, source
            continue
        value = var.default
        if text is not None:
            try:
                value = var.converter(text)
            except ValueError as error:
                message = f"{var.name} in {source}: {text!r} {converters.is_not(error)}"
                if strict:
                    raise GetHostsError(message) from None
                warnings.append(f"{message}; using the default, {var.default_text}")
        values[var.field] = value
    server, server_source = _lookup("SERVER", environ, entries)
    if server_source is not None:
        sources["SERVER"] = server_source
    server = server.strip() if server and server.strip() else None
    servers = _pool(pool_text, pool_source, server, server_source, values["port"], warnings)
    if not servers:
        raise GetHostsError(no_pool_message(environ, lts_conf_path, conf_path, conf_format, use_lts_conf))
    balancers = _balancers(values, server, warnings)
    return Settings(
        servers=servers,
        server=server,
        lts_conf=conf_path,
        warnings=warnings,
        identity=identity,
        balancers=balancers,
        conf_format=conf_format,
        sources=sources,
        **values,
    )


def _pool(pool_text, pool_source, server, server_source, port, warnings):
    """The pool: LB_SERVERS, else SERVER; [] when neither is set (GetHostsError when one is set but useless)."""
    servers = []
    if pool_text is not None:
        servers, problems = parse_pool(pool_text, port)
        warnings.extend(f"LB_SERVERS in {pool_source}: {problem}" for problem in problems)
        if not servers and server:
            warnings.append(f"LB_SERVERS in {pool_source} has no valid entry; using SERVER ({server})")
    if not servers and server:
        servers, problems = parse_pool(server, port)
        warnings.extend(f"SERVER in {server_source}: {problem}" for problem in problems)
    if not servers and pool_text is not None:
        raise GetHostsError(f"no server pool: LB_SERVERS in {pool_source} has no valid entry ({pool_text!r})")
    if not servers and server:
        raise GetHostsError(f"no server pool: SERVER in {server_source} is not a host ({server!r})")
    return servers


# An LTSP 5 server: its clients' lts.conf, one per architecture, in the TFTP directory (NBD images)
# or in the chroot (NFS, or an image rebuilt after each change).
LTSP5_CLIENT_CONFS = ("/var/lib/tftpboot/ltsp/*/lts.conf", "/opt/ltsp/*/etc/lts.conf")


def no_pool_message(environ, lts_conf_path, conf_path, conf_format, use_lts_conf=True):
    """The error when neither LB_SERVERS nor SERVER names a host: where get_hosts looked, and the way out."""
    looked = ["the environment"]
    if conf_path is not None:
        looked.append(f"{conf_path} ({conf_format})")
    elif use_lts_conf and not lts_conf_path and not environ.get("LTS_CONF"):
        looked.append(" and ".join(f"{path} (absent)" for path in DEFAULT_CONF_PATHS))
    message = f"no server pool: LB_SERVERS and SERVER are both unset in {', '.join(looked)}"
    if conf_path is not None and (lts_conf_path or environ.get("LTS_CONF")):
        # The admin named this file: it is the one to fix.
        section = "[clients]" if conf_format == LTSP20 else "[Default]"
        return f"{message}; set LB_SERVERS in its {section} section"
    import glob

    found = [path for pattern in LTSP5_CLIENT_CONFS for path in sorted(glob.glob(pattern))][:3]
    patterns = [pattern.replace("*", "<arch>", 1) for pattern in LTSP5_CLIENT_CONFS]
    ltsp5 = " or ".join(f"--lts-conf {path}" for path in found or patterns)
    return (
        f"{message}; on an LTSP server, read the clients' file: {ltsp5} (LTSP 5), "
        f"or set LB_SERVERS in [clients] of {DEFAULT_LTSP_CONF} (LTSP 20+, read by default)"
    )


def _balancers(values, server, warnings):
    """LB_BALANCER as (host, port) pairs; LB_ALGORITHM=loadbalancer alone asks SERVER:8377."""
    from ltsp_lbcore.hostport import parse_host_port
    from ltsp_lbcore.ports import BALANCER_PORT

    text = values["balancer_text"]
    if text is None and values["algorithm"] == "loadbalancer":
        text = server
        if not text:
            warnings.append("LB_ALGORITHM is loadbalancer but neither LB_BALANCER nor SERVER names one")
    found = []
    for word in (text or "").split():
        try:
            found.append(tuple(parse_host_port(word, BALANCER_PORT)))
        except ValueError as problem:
            warnings.append(f"LB_BALANCER: skipping {word!r}: {problem}")
    return tuple(found)
