"""The project's services as real processes for tests: the daemon and the balancer, with their logs.

Each is started with ``python -m`` on loopback addresses (port 0 unless a
test names one), and found by its own "listening on" log lines.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from logged import LoggedProcess

LISTENING = re.compile(r"listening on (\S+):(\d+)$")


class _Service(LoggedProcess):
    """A service in a subprocess; its stderr is collected line by line."""

    def start(self, sockets=1):
        for line in self.wait_for(r"listening on ", count=sockets):
            host, port = LISTENING.search(line).groups()
            self.addresses.append((host.strip("[]"), int(port)))
        return self

    @property
    def address(self):
        return self.addresses[0]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def cpu_seconds(self):
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Daemon(_Service):
    """ltsp-server-advertise in a subprocess; its stderr is collected line by line.

    POPEN_OPTIONS (env, cwd...) go to subprocess.Popen. SSH_PORT: the login port its health check
    watches; 0 (the default here) turns the check off, since this machine runs no sshd on 22 and
    the tests of other things must not see every daemon Failing. None: the config file's.
    """

    def __init__(self, conf_path, listen=("127.0.0.1:0",), extra_args=(), command=None, ssh_port=0, **popen_options):
        args = [sys.executable, "-m", "ltsp_server_advertise.cli", "--config", str(conf_path)]
        args += [arg for address in listen for arg in ("--listen", address)]
        if ssh_port is not None:
            args += ["--ssh-port", str(ssh_port)]
        args += list(extra_args)
        super().__init__(command or args, "the daemon's log", **popen_options)
        self.addresses = []


class Balancer(_Service):
    """ltsp-loadbalancer in a subprocess, polling SERVERS (a string) unless the config file names them."""

    def __init__(self, conf_path, servers=None, listen=("127.0.0.1:0",), extra_args=(), **popen_options):
        args = [sys.executable, "-m", "ltsp_loadbalancer", "--config", str(conf_path)]
        args += [arg for address in listen for arg in ("--listen", address)]
        if servers is not None:
            args += ["--servers", servers]
        super().__init__([*args, *extra_args], "the balancer's log", **popen_options)
        self.addresses = []

    def request(self, method, path, body=None, headers=None, timeout=5.0):
        """(status, body text) of one HTTP request to the balancer."""
        host, port = self.address
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8")
        finally:
            connection.close()

    def wait_polls(self, count=1, timeout=10.0):
        """Wait until COUNT more polls finished (its /v1/pool counts them)."""
        import json
        import time

        start = json.loads(self.request("GET", "/v1/pool")[1])["polls"]
        deadline = time.monotonic() + timeout
        while json.loads(self.request("GET", "/v1/pool")[1])["polls"] < start + count:
            assert time.monotonic() < deadline, f"no {count} polls in {timeout} s"
            time.sleep(0.05)
