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


_LOGIN_SOURCES = iter(range(1 << 30))


def login_source():
    """A loopback address no login used lately (127.0.1.1, 127.0.1.2, ...): the balancer counts one login per
    client address within a few seconds, and each /v1/hosts login of a test stands for a thin client of its own."""
    n = next(_LOGIN_SOURCES) % (250 * 250)
    return f"127.0.{n // 250 + 1}.{n % 250 + 1}"


def is_login(path):
    """Whether a request to PATH counts a login (a /v1/hosts request that is not a peek)."""
    return path.startswith("/v1/hosts") and "peek=" not in path


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
        source = (login_source(), 0) if is_login(path) and host.startswith("127.") else None
        connection = http.client.HTTPConnection(host, port, timeout=timeout, source_address=source)
        headers = dict(headers or {})
        if path.startswith("/v1/hosts"):
            headers.setdefault("X-LTSP-Client", "get_hosts")  # what get_hosts sends: a login needs it
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8")
        finally:
            connection.close()

    def pool_after_poll(self):
        """/v1/pool's document once one more poll finished: the admin's views are built once per poll (views.py),
        so what a login changed shows from the next poll on."""
        import json

        self.wait_polls(1)
        return json.loads(self.request("GET", "/v1/pool")[1])

    def wait_polls(self, count=1, timeout=10.0):
        """Wait until COUNT more polls finished (its /v1/pool counts them)."""
        import json
        import time

        start = json.loads(self.request("GET", "/v1/pool")[1])["polls"]
        deadline = time.monotonic() + timeout
        while json.loads(self.request("GET", "/v1/pool")[1])["polls"] < start + count:
            assert time.monotonic() < deadline, f"no {count} polls in {timeout} s"
            time.sleep(0.05)


PROMETHEUS = "/usr/bin/prometheus"  # Debian's prometheus package (make test apt-gets it as root)


class Prometheus(LoggedProcess):
    """A real Prometheus scraping TARGETS ({job: ["host:port", ...]}) every SCRAPE_SECONDS, on loopback only.

    Its storage is STORAGE_DIR (a temporary directory the caller removes); it listens on 127.0.0.1 at a
    port free when it starts, and scrapes itself too (job "prometheus"). ``query`` and ``query_range``
    use its HTTP API. Stop it with ``stop``.
    """

    def __init__(self, storage_dir, targets, scrape_seconds=1):
        import socket

        with socket.socket() as probe:  # a port free now; Prometheus takes it at once
            probe.bind(("127.0.0.1", 0))
            self.address = probe.getsockname()
        targets = {**targets, "prometheus": [f"{self.address[0]}:{self.address[1]}"]}
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: [{', '.join(map(repr, hosts))}]\n"
            for job, hosts in targets.items()
        )
        Path(storage_dir).mkdir(parents=True, exist_ok=True)
        config = Path(storage_dir) / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {scrape_seconds}s\n  scrape_timeout: {scrape_seconds}s\n"
            f"  evaluation_interval: {scrape_seconds}s\nscrape_configs:\n{jobs}"
        )
        command = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={Path(storage_dir) / 'data'}",
            f"--web.listen-address={self.address[0]}:{self.address[1]}",
            "--log.level=warn",
        ]
        super().__init__(command, "Prometheus' log")

    def start(self, timeout=30.0):
        """Wait until its API answers."""
        import time
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.address[0]}:{self.address[1]}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = "\n".join(self.lines[-20:])
                raise AssertionError(f"Prometheus did not start (exit {self.proc.poll()}); its log:\n{log}")
            time.sleep(0.2)

    def api(self, path, **params):
        """The data of one /api/v1 answer (AssertionError naming the query when it is an error)."""
        import json
        import urllib.error
        import urllib.parse
        import urllib.request

        url = f"http://{self.address[0]}:{self.address[1]}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                document = json.load(answer)
        except urllib.error.HTTPError as error:
            document = json.load(error)
        assert document["status"] == "success", (params, document)
        return document["data"]

    def query(self, expr):
        """An instant query now: [(labels dict, value float)]."""
        return [(row["metric"], float(row["value"][1])) for row in self.api("query", query=expr)["result"]]

    def query_range(self, expr, start, end, step=1.0):
        """A range query: [(labels dict, [value float, ...])]."""
        data = self.api("query_range", query=expr, start=start, end=end, step=step)["result"]
        return [(row["metric"], [float(value) for _when, value in row["values"]]) for row in data]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
