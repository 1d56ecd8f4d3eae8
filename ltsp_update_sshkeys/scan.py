"""Fetching the extra servers' keys: one ssh-keyscan process per server, all at once, each with a deadline."""

import concurrent.futures
import math
import shutil
import subprocess

from ltsp_lbcore.ports import SSH_PORT
from ltsp_update_sshkeys.keys import parse_keyscan_output
from ltsp_update_sshkeys.messages import SshKeysError

# ssh-keyscan's own -T covers a silent peer; the slack covers a slow DNS
# lookup or a stuck process, so the whole run always ends.
KEYSCAN_SLACK_SECONDS = 5.0
KEYSCAN_TYPES = "rsa,ecdsa,ed25519"
# Enough for any real pool; beyond it the scans queue and the run gets longer.
MAX_PARALLEL_SCANS = 64


def keyscan_command(keyscan, server, timeout_seconds):
    """The ssh-keyscan command line for one server (a validated Server: no word of it starts with '-')."""
    command = [keyscan, "-t", KEYSCAN_TYPES, "-T", str(max(1, math.ceil(timeout_seconds)))]
    if server.port != SSH_PORT:
        command += ["-p", str(server.port)]
    command.append(server.host)
    return command


def scan_server(keyscan, server, timeout_seconds):
    """Keys one ssh-keyscan process fetched from a server; empty if it did not answer."""
    try:
        # run() kills the process when the timeout expires, so nothing outlives the run.
        result = subprocess.run(
            keyscan_command(keyscan, server, timeout_seconds),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout_seconds + KEYSCAN_SLACK_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return set()
    return parse_keyscan_output(result.stdout.decode("ascii", errors="replace"))


def scan_servers(servers, timeout_seconds):
    """Fetch every server's keys at once: server -> keys (empty when it did not answer).

    One process each (not one ssh-keyscan for all) because ssh-keyscan's
    output names hosts as it resolved them, and we need them as listed.
    """
    if not servers:
        return {}
    keyscan = shutil.which("ssh-keyscan")
    if keyscan is None:
        raise SshKeysError("ssh-keyscan not found in PATH (install openssh-client)")
    workers = min(len(servers), MAX_PARALLEL_SCANS)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {server: pool.submit(scan_server, keyscan, server, timeout_seconds) for server in servers}
        return {server: future.result() for server, future in futures.items()}
