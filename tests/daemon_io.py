"""Talking to a real ltsp-server-advertise in the tests: its config file, its document read to EOF, checked.

Shared by tests/test_daemon.py and tests/test_hostile_daemon.py.
"""

from __future__ import annotations

import socket
from pathlib import Path

from lxml import etree

from ltsp_lbcore import wire

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = etree.RelaxNG(etree.parse(str(ROOT / "docs" / "ltsp-server.rng")))


def write_conf(conf_dir, text):
    path = conf_dir / "advertise.conf"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path


def read_to_eof(sock, timeout):
    """Everything the daemon sends on an open socket until it closes (blocking, TIMEOUT s per read)."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def fetch(address, timeout=5.0):
    """Connect, read to EOF: the bytes the daemon sent."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        return read_to_eof(sock, timeout)


def valid(document):
    """Schema-valid and decodable: the ServerStats it carries."""
    tree = etree.fromstring(document)
    assert SCHEMA.validate(tree), SCHEMA.error_log
    return wire.decode(document)
