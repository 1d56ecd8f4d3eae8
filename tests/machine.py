"""What this test machine can do, asked once for every test file that needs to know."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ipv6_loopback_works():
    """True when a socket can bind [::1] (some containers have no IPv6 at all)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def netns_skip_reason():
    """Why network-namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    return None


def run_python_without_site(code):
    """Run CODE with this interpreter and -S (as LDM's launcher starts get_hosts); its stripped stdout."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
