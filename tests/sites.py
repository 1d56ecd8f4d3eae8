"""Balancer sites for the tests: real balancers polling real daemons, and crafted /v1/pool documents.

``RealPool`` is a real balancer (``python -m ltsp_loadbalancer``) on
127.0.0.1:0 polling real ltsp-server-advertise daemons on loopback
addresses: one ready, one drained (STATE = drain), one twice as big
(WEIGHT = 200), and one address where nothing listens (Down: a bound socket
that never listens keeps the port ours). Each learns its port from its
"listening on" log line. Config files live in a world-readable directory:
started as root, both programs drop to nobody and must still read them on
SIGHUP. tests/conftest.py makes fixtures of it (``shared_pool``,
``real_pool``); the status page, metrics, browser and Prometheus tests use it.

``crafted_pool`` is a /v1/pool document no config can produce (hostile
names, unknown states), for the pure rendering tests and the browser's.
"""

from __future__ import annotations

import http.client as http_client
import json
import shutil
import signal
import socket
import tempfile
import time
from collections import namedtuple
from pathlib import Path
from typing import ClassVar

from services import Balancer, Daemon, is_login, login_source

POLL_SECONDS = 0.5
BALANCER_CONF = (
    f"POLL_SECONDS = {POLL_SECONDS}\n"
    "POLL_TIMEOUT_MS = 400\n"
    # Logins handed out stay pending for the whole test: the daemons' sessions never grow.
    "LOGIN_WINDOW_SECONDS = 600\n"
)


Answer = namedtuple("Answer", "status headers body")


def http(address, path, data=None, headers=None, timeout=10.0):
    """One request to ADDRESS (host, port): Answer(status, headers, body bytes), 4xx and 5xx included.

    A login (/v1/hosts, not a peek) goes as get_hosts sends it (its header), each from a loopback address of
    its own (services.login_source): one thin client each."""
    headers = dict(headers or {})
    source = None
    if path.startswith("/v1/hosts"):
        headers.setdefault("X-LTSP-Client", "get_hosts")  # what get_hosts sends: a login needs it
        if is_login(path) and address[0].startswith("127."):
            source = (login_source(), 0)
    if data is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    connection = http_client.HTTPConnection(address[0], address[1], timeout=timeout, source_address=source)
    try:
        connection.request("POST" if data is not None else "GET", path, body=data, headers=headers)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def world_readable_dir(prefix):
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def write_conf(path, text):
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    return path


def word(address):
    return f"{address[0]}:{address[1]}"


class RealPool:
    """A real balancer polling real daemons: ready, drained, WEIGHT = 200, and one Down address.

    ``names``: role -> the SERVERS word (host:port); ``daemons`` and
    ``confs``: role -> the daemon and its config file (the Down role has
    neither). Use as a context manager: everything started is stopped.
    """

    ROLES: ClassVar[dict] = {
        "ready": ("127.0.0.2", ""),
        "drain": ("127.0.0.3", "STATE = drain\n"),
        "heavy": ("127.0.0.4", "WEIGHT = 200\n"),
    }
    DOWN_HOST = "127.0.0.5"

    def __init__(self):
        self.dir = world_readable_dir("statuspage-test-")
        self.daemons, self.confs, self.names = {}, {}, {}
        self.balancer = None
        self._reserved = None

    def __enter__(self):
        try:
            for role, (host, text) in self.ROLES.items():
                self.confs[role] = write_conf(self.dir / f"{role}.conf", text)
                self.daemons[role] = Daemon(self.confs[role], (f"{host}:0",)).start()
                self.names[role] = word(self.daemons[role].address)
            # Bound, never listening: connecting is refused, and no other test can take the port meanwhile.
            self._reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._reserved.bind((self.DOWN_HOST, 0))
            self.names["down"] = word(self._reserved.getsockname())
            self.balancer_conf = self.dir / "balancer.conf"
            self._write_balancer_conf(("ready", "drain", "heavy", "down"))
            self.balancer = Balancer(self.balancer_conf).start()
            self.wait_for_pool(lambda pool: pool["polls"] >= 1)
            return self
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        for service in [self.balancer, *self.daemons.values()]:
            if service is not None:
                service.stop()
        if self._reserved is not None:
            self._reserved.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def address(self):
        return self.balancer.address

    @property
    def url(self):
        return f"http://{word(self.address)}/"

    def get(self, path, **kwargs):
        return http(self.address, path, **kwargs)

    def pool(self):
        return json.loads(self.get("/v1/pool").body)

    def row(self, pool, role):
        host, port = self.names[role].rsplit(":", 1)
        return next(s for s in pool["servers"] if (s["host"], s["port"]) == (host, int(port)))

    def wait_for_pool(self, predicate, timeout=15.0):
        """The first /v1/pool document for which PREDICATE is true (AssertionError after TIMEOUT s)."""
        deadline = time.monotonic() + timeout
        while True:
            pool = self.pool()
            if predicate(pool):
                return pool
            if time.monotonic() > deadline:
                raise AssertionError(f"the pool never got there in {timeout:g} s; last /v1/pool: {pool}")
            time.sleep(0.1)

    def _write_balancer_conf(self, roles):
        write_conf(self.balancer_conf, f"{BALANCER_CONF}SERVERS = {' '.join(self.names[role] for role in roles)}\n")

    def set_servers(self, roles):
        """Rewrite the balancer's SERVERS with the servers of ROLES and send it SIGHUP."""
        self._write_balancer_conf(roles)
        before = sum(1 for line in self.balancer.lines if "reloaded " in line)
        self.balancer.proc.send_signal(signal.SIGHUP)
        self.balancer.wait_for(r"reloaded ", count=before + 1)

    def set_state(self, role, state):
        """Rewrite ROLE's daemon config with STATE and send it SIGHUP, as an admin drains a server."""
        text = self.ROLES[role][1]
        text = "".join(line + "\n" for line in text.splitlines() if not line.startswith("STATE"))
        write_conf(self.confs[role], f"{text}STATE = {state}\n")
        self.daemons[role].proc.send_signal(signal.SIGHUP)
        self.daemons[role].wait_for(r"SIGHUP: reloading")


# --- crafted documents -----------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>"


def crafted_pool(host=HOSTILE, reason='"><img src=x onerror=alert(1)>', **fields):
    server = {
        "host": host,
        "port": 377,
        "state": "Down",
        "usable": False,
        "sessions": None,
        "capacity": None,
        "rating": None,
        "pending": 0,
        "handed_out_5min": 0,
        "sample_age_ms": None,
        "response_ms": None,
        "reason": reason,
        "stats": None,
    }
    server.update(fields)
    return {"servers": [server], "poll_seconds": 2.0, "last_poll_age_ms": 10, "polls": 1}
