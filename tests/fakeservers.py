"""Fake ltsp-server-advertise servers for the get_hosts tests: real sockets, no patching.

Each FakeServer is a real listening TCP socket on a loopback address (or any
address the test owns), served by a thread; every accepted connection gets
its own thread running a behaviour: send these bytes and close, stall, send
one byte at a time, and so on. The tests then probe them over the network
stack like get_hosts probes real servers.
"""

from __future__ import annotations

import socket
import threading
import time

from ltsp_lbcore import wire


def stats(**overrides):
    """A plausible ServerStats; OVERRIDES replace fields."""
    fields = {
        "hostname": "app.example",
        "state": "ready",
        "weight": 100,
        "rating": 20.0,
        "sample_age_ms": 50,
        "sessions": 4,
        "cpu_count": 8,
        "cpu_mhz": 2400.0,
        "load_1min": 2.0,
        "load_5min": 1.5,
        "load_15min": 1.0,
        "mem_total_bytes": 16 << 30,
        "mem_available_bytes": 8 << 30,
        "swap_used_bytes": 0,
        "swapping": False,
        "uptime_seconds": 1000.0,
    }
    fields.update(overrides)
    return wire.ServerStats(**fields)


def document(**overrides):
    """wire.encode(stats(**overrides)): the bytes a real daemon sends."""
    return wire.encode(stats(**overrides))


# --- behaviours: called with (connection, server) in the connection's thread ---


def send(data, delay=0.0):
    """Send DATA (after DELAY seconds) and close."""

    def behaviour(conn, server):
        if delay and server.stopped.wait(delay):
            return
        try:
            conn.sendall(data)
        except OSError as error:
            server.send_errors.append(error)

    return behaviour


def stall(conn, server):
    """Accept and never answer (a hung daemon)."""
    server.stopped.wait()


def dribble(data, interval=0.1):
    """Send DATA one byte every INTERVAL seconds."""

    def behaviour(conn, server):
        for i in range(len(data)):
            if server.stopped.wait(interval):
                return
            try:
                conn.sendall(data[i : i + 1])
            except OSError:
                return

    return behaviour


def http(status, body, reason="OK", content_type="text/plain"):
    """The bytes of an HTTP/1.1 response with BODY (bytes): what a balancer (or a hostile one) sends."""
    return f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n\r\n".encode() + body


def answer(response, before=None):
    """Read the request's head (kept in server.requests), wait for the event BEFORE if any (5 s at most),
    then send RESPONSE (bytes) and close: an HTTP server of one answer."""

    def behaviour(conn, server):
        data = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        server.requests = [*getattr(server, "requests", []), data]
        if before is not None:
            before.wait(5)
        conn.sendall(response)

    return behaviour


def send_then_stall(data):
    """Send DATA, then keep the connection open (never close)."""

    def behaviour(conn, server):
        conn.sendall(data)
        server.stopped.wait()

    return behaviour


class FakeServer:
    """One listening socket on HOST, port chosen by the kernel; BEHAVIOUR per connection.

    accept=False listens but never accepts: the kernel completes the handshake
    and the client waits forever for bytes.
    """

    def __init__(self, behaviour, host="127.0.0.1", port=0, accept=True):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.stopped = threading.Event()
        self.connections = 0
        self.send_errors = []
        self._threads = []
        self._conns = []
        if accept:
            thread = threading.Thread(target=self._accept_loop, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def pool_word(self):
        """How LB_SERVERS names this server."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _accept_loop(self):
        self.sock.settimeout(0.05)
        while not self.stopped.is_set():
            try:
                conn, _address = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn):
        conn.settimeout(None)
        try:
            self.behaviour(conn, self)
        finally:
            if not self.stopped.is_set():
                conn.close()

    def close(self):
        self.stopped.set()
        for thread in self._threads:
            thread.join(5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


def refused_port(host="127.0.0.1"):
    """A port on HOST where nothing listens: connecting is refused at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Elapsed:
    """with Elapsed() as t: ...; t.seconds."""

    def __enter__(self):
        self._start = time.monotonic()
        self.seconds = None
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self._start
