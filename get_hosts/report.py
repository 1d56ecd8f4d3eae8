"""Output formats of get_hosts: the host line, --status, --json, --explain.

Rules:

- The host line holds pool names only (PoolEntry.name, never a port, never
  anything a server sent), once each, separated by single spaces, best first.
- Hosts are named as the pool names them; what a server advertises (its
  hostname, text quoted in a reason) only ever appears escaped: control and
  other non-printable characters become \\x.. / \\u.. escapes in text output,
  and JSON escapes everything outside printable ASCII.
- Rows of --status and --json come in preference order (the chosen order),
  then the skipped servers in pool order.
- --status names a row ``host:port`` (``[v6]:port``) when its port is not the
  default (LB_PORT; when not given, the one port every entry uses, else 377)
  or another entry has the same host: two daemons on one host must not look
  the same. The host line never carries a port.
"""

from get_hosts import choose
from ltsp_lbcore.ports import ADVERTISE_PORT

MAX_REASON_CHARS = 200


def escape(text, limit=MAX_REASON_CHARS):
    """TEXT with every non-printable character as a Python escape; cut at LIMIT characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def host_line(order, first_only=False):
    """The line LDM reads: pool names of ORDER (ProbeResults or PoolEntries), deduplicated."""
    names = []
    for item in order:
        name = getattr(item, "entry", item).name
        if name not in names:
            names.append(name)
    return names[0] if first_only else " ".join(names)


def rows(choice):
    """Verdicts in display order, each with its rank (1-based, None when not chosen)."""
    chosen = {id(result): rank for rank, result in enumerate(choice.order, 1)}
    ranked = sorted(
        (v for v in choice.verdicts if id(v.result) in chosen),
        key=lambda v: chosen[id(v.result)],
    )
    others = [v for v in choice.verdicts if id(v.result) not in chosen]
    return [(v, chosen.get(id(v.result))) for v in ranked + others]


def _number(value, digits):
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


STATUS_COLUMNS = ("HOST", "STATE", "RATING", "SESSIONS", "LOAD/CPU", "RESPONSE-MS", "REASON")


def _same_host(host):
    from ltsp_lbcore.hostport import host_key

    try:
        return host_key(host)
    except ValueError:
        return host.lower()


def display_names(entries, default_port=None):
    """PoolEntry -> the name --status shows: the pool name, with its port where the name alone is ambiguous.

    A port is shown when it is not DEFAULT_PORT, or when two entries share a
    host. DEFAULT_PORT None: the port every entry uses (LB_PORT, as a pool
    without ports gives it), else 377.
    """
    from ltsp_lbcore.hostport import format_host_port

    if default_port is None:
        ports = {entry.port for entry in entries}
        default_port = ports.pop() if len(ports) == 1 else ADVERTISE_PORT
    hosts = [_same_host(entry.name) for entry in entries]
    count = {}
    for host in hosts:
        count[host] = count.get(host, 0) + 1
    names = {}
    for entry, host in zip(entries, hosts):
        shared = count[host] > 1
        port = entry.port if shared or entry.port != default_port else None
        names[entry] = format_host_port(entry.name, port)
    return names


def status_table(choice, default_port=None):
    """--status: an aligned table, a header line then one line per pool member."""
    table = [STATUS_COLUMNS]
    shown = display_names([verdict.result.entry for verdict in choice.verdicts], default_port)
    for verdict, _rank in rows(choice):
        result = verdict.result
        stats = result.stats
        table.append(
            (
                escape(shown[result.entry], 253),
                verdict.label,
                _number(stats.rating if stats else None, 1),
                str(stats.sessions) if stats and stats.sessions is not None else "-",
                _number(stats.load_per_cpu if stats else None, 2),
                _number(result.response_ms, 0),
                escape(verdict.reason),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(STATUS_COLUMNS) - 1)]
    lines = []
    for row in table:
        cells = [
            # Names and states to the left, figures to the right.
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def status_json(choice, algorithm, probe_ms=None, client_key_source=None):
    """--json: the same facts as --status, plus the host line as a list."""
    import json

    servers = []
    for verdict, rank in rows(choice):
        result = verdict.result
        stats = result.stats
        servers.append(
            {
                "host": result.entry.name,
                "port": result.entry.port,
                "state": verdict.label,
                "usable": verdict.tier is not choose.SKIPPED,
                "rank": rank,
                "rating": stats.rating if stats else None,
                "capacity": stats.capacity if stats else None,
                "sessions": stats.sessions if stats else None,
                "load_per_cpu": round(stats.load_per_cpu, 3) if stats and stats.load_per_cpu is not None else None,
                "response_ms": round(result.response_ms, 1) if result.response_ms is not None else None,
                "weight": stats.weight if stats else None,
                "advertised_hostname": stats.hostname if stats else None,
                "reason": verdict.reason,
            }
        )
    document = {
        "algorithm": algorithm,
        "hosts": host_line(choice.order).split(" "),
        "fallback": choice.fallback,
        "probe_ms": round(probe_ms, 1) if probe_ms is not None else None,
        "client_key": client_key_source,
        "servers": servers,
    }
    return json.dumps(document, indent=2, ensure_ascii=True)


def explain_lines(choice, algorithm):
    """--explain: why each server was kept or skipped, one line each."""
    lines = []
    for verdict, rank in rows(choice):
        result = verdict.result
        name = escape(result.entry.name, 253)
        where = f"{name} port {result.entry.port}"
        answered = f", answered in {result.response_ms:.0f} ms" if result.response_ms is not None else ""
        if choice.fallback:
            lines.append(f"{rank}. {where}: {verdict.label}: {escape(verdict.reason)}{answered} (fallback)")
        elif rank is not None:
            tier = "kept" if verdict.tier == choose.PREFERRED else "kept as a last resort"
            lines.append(f"{rank}. {where}: {tier}, {verdict.label}: {escape(verdict.reason)}{answered}")
        else:
            lines.append(f"-. {where}: skipped, {verdict.label}: {escape(verdict.reason)}{answered}")
    return lines
