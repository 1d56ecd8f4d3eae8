"""known_hosts text: reading keys out of it and writing it, byte for byte the same for the same keys. No I/O."""

import base64
import binascii
import re
from dataclasses import dataclass

HEADER = (
    "# Written by ltsp-update-sshkeys: edits here are lost on its next run.\n"
    "# Add servers to /etc/ltsp/extraservers instead.\n"
)
CACHE_HEADER = "# ltsp-update-sshkeys: last known keys of the extra servers.\n"

KEY_TYPE_RE = re.compile(r"\A[a-z0-9][a-z0-9@.-]*\Z")


@dataclass(frozen=True, order=True)
class HostKey:
    """One public host key: its type (``ssh-ed25519``...) and base64 blob."""

    key_type: str
    blob: str

    def line(self, names):
        return f"{names} {self.key_type} {self.blob}\n"


def split_lines(text):
    """Lines split on newlines only (str.splitlines also splits on \\x1c, \\x85, \\u2028...)."""
    return text.split("\n")


def fields_of(line):
    """A line's fields split on spaces, tabs and a CR only (str.split() also splits on \\x1c-\\x1f)."""
    return [field for field in line.replace("\t", " ").replace("\r", " ").split(" ") if field]


def parse_key_fields(key_type, blob):
    """A HostKey from a known_hosts/pub key type and blob, or None when they are not one."""
    if not KEY_TYPE_RE.match(key_type):
        return None
    try:
        base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    return HostKey(key_type, blob)


def parse_public_key(text):
    """The HostKey of an ssh_host_*_key.pub file's text (``type blob comment``), or None."""
    fields = fields_of(text)
    return parse_key_fields(*fields[:2]) if len(fields) >= 2 else None


def parse_keyscan_output(text):
    """The keys in what one ssh-keyscan printed; the host names it printed are not trusted, so not read."""
    keys = set()
    for line in split_lines(text):
        fields = fields_of(line)
        if len(fields) >= 3 and not fields[0].startswith("#"):
            key = parse_key_fields(fields[1], fields[2])
            if key is not None:
                keys.add(key)
    return keys


def parse_known_hosts(text):
    """Map each name of plain known_hosts lines to its keys.

    Hashed names (``|1|``) and marked lines (``@revoked``, ``@cert-authority``)
    are ignored: this tool never writes them.
    """
    keys_by_name = {}
    for line in split_lines(text):
        fields = fields_of(line)
        if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
            continue
        key = parse_key_fields(fields[1], fields[2])
        if key is None:
            continue
        for name in fields[0].split(","):
            keys_by_name.setdefault(name.lower(), set()).add(key)
    return keys_by_name


def render_known_hosts(own_name_list, own_keys, keys_by_server, header=HEADER):
    """The known_hosts text: header, own keys under all own names, then each server by name."""
    lines = [header]
    if own_keys:
        names = ",".join(own_name_list)
        lines += [key.line(names) for key in sorted(own_keys)]
    for server in sorted(keys_by_server, key=lambda s: (s.host, s.port)):
        lines += [key.line(server.known_hosts_name) for key in sorted(keys_by_server[server])]
    return "".join(lines)
