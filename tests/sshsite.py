"""ltsp-update-sshkeys as the tests run it: the real script on a site of its own in a temporary directory.

``Site`` names a base with chroots, a cache, an extraservers file and this
server's own host keys (made with the real ssh-keygen), and runs the script
on them; tests/conftest.py makes the ``own_keys`` and ``site`` fixtures of it
for tests/test_sshkeys.py and tests/test_hostile_sshkeys.py.
"""

import os
import subprocess
import sys
from pathlib import Path

from ltsp_update_sshkeys.keys import HEADER

SCRIPT = Path(__file__).resolve().parent.parent / "ltsp-update-sshkeys"
KEY_TYPES = ("ed25519", "ecdsa", "rsa")


def generate_host_keys(directory):
    """ssh_host_<type>_key(.pub) in directory; returns {key_type: blob} from the .pub files."""
    directory.mkdir(parents=True, exist_ok=True)
    keys = {}
    for key_type in KEY_TYPES:
        path = directory / f"ssh_host_{key_type}_key"
        size = ["-b", "2048"] if key_type == "rsa" else []  # 2048 is enough for a test and fast
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, *size, "-N", "", "-C", "test", "-f", str(path)], check=True)
        algorithm, blob = path.with_suffix(".pub").read_text().split()[:2]
        keys[algorithm] = blob
    return keys


class Site:
    def __init__(self, root, base, host_keys_dir, own_keys):
        self.root = root
        self.base = base
        self.host_keys_dir = host_keys_dir
        self.own_keys = own_keys
        self.cache = root / "ssh_known_hosts.auto"
        self.extraservers = root / "extraservers"

    def known_hosts(self, chroot="i386"):
        return self.base / chroot / "etc" / "ssh" / "ssh_known_hosts"

    def run(self, *arguments, timeout=60, env=None):
        """The real command with this site's paths (env: extra environment); returns the CompletedProcess."""
        command = [
            sys.executable,
            str(SCRIPT),
            "--base",
            str(self.base),
            "--cache",
            str(self.cache),
            "--extraservers",
            str(self.extraservers),
            "--host-keys-dir",
            str(self.host_keys_dir),
            "--timeout",
            "2",
            *arguments,
        ]
        environment = dict(os.environ, **(env or {}))
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, env=environment)

    def expected_text(self, own_names, *servers):
        names = ",".join(own_names)
        own = [f"{names} {algorithm} {self.own_keys[algorithm]}\n" for algorithm in sorted(self.own_keys)]
        extra = [line for server in sorted(servers, key=lambda s: s.port) for line in server.lines()]
        return HEADER + "".join(own) + "".join(extra)


def own_names_written(text):
    """The names of the own-key lines (those carrying `server`)."""
    for line in text.splitlines():
        if line.startswith("server,") or line.startswith("server "):
            return line.split()[0].split(",")
    raise AssertionError(f"no line for `server` in:\n{text}")
