"""A small LAN of network namespaces for tests: one bridge, hosts on it, processes in them.

Layout: the bridge lives in a namespace of its own (the "switch"), so nothing
is added to the root namespace and no packet of the test can leave the LAN:
the hosts have no route but their /24. Each host is a namespace holding
``eth0`` (one end of a veth pair) with one address; the other end is a port
of the bridge. Every name carries a random tag, so parallel runs and leftovers
of a killed run do not collide.

``Lan.close`` stops every process started through it (SIGTERM, then SIGKILL),
then deletes every namespace it created; deleting a namespace deletes its
interfaces, and the veth peers with them. It is safe to call twice and after
a half-finished setup.
"""

from __future__ import annotations

import secrets
import signal
import subprocess

from logged import LoggedProcess


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


class Process(LoggedProcess):
    """A long-running command inside a namespace; its stderr is collected line by line."""

    def __init__(self, namespace, command, env=None):
        self.namespace = namespace
        # ip netns exec execs the command itself: self.proc.pid is the command's pid.
        super().__init__(["ip", "netns", "exec", namespace, *command], f"namespace {namespace}", env=env)

    def signal(self, signum):
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL if it lingers. Returns the exit status."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._reader.join(timeout=2)


class Host:
    def __init__(self, namespace, address, port):
        self.namespace = namespace
        self.address = address
        self.port = port  # the bridge port (in the switch namespace) this host's cable plugs into
        self.mac = None


class Lan:
    """One bridge in its own namespace, and hosts (namespaces) plugged into it."""

    def __init__(self, prefix="lb", prefix_len=24):
        self.tag = secrets.token_hex(3)
        self.prefix = prefix
        self.prefix_len = prefix_len
        self.switch = f"{prefix}sw-{self.tag}"
        self.bridge = f"{prefix}br{self.tag}"
        self.namespaces = []  # every namespace we created, in creation order
        self.processes = []
        self.hosts = {}
        try:
            self._add_namespace(self.switch)
            ip("-n", self.switch, "link", "add", self.bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", self.bridge, "up")
        except BaseException:
            self.close()  # the caller never gets the object: leave nothing behind
            raise

    def _add_namespace(self, name):
        self.namespaces.append(name)  # before creating it: close() deletes it even if a later step fails
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, label, address):
        """A namespace LABEL-TAG with eth0 at ADDRESS, cabled to the bridge. Returns the Host."""
        namespace = f"{self.prefix}{label}-{self.tag}"
        port = f"p{label}"[:15]
        self._add_namespace(namespace)
        host = Host(namespace, address, port)
        self.hosts[label] = host
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("-n", self.switch, "link", "set", port, "master", self.bridge, "up")
        ip("-n", namespace, "addr", "add", f"{address}/{self.prefix_len}", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        host.mac = ip("-n", namespace, "-br", "link", "show", "eth0").stdout.split()[2]
        return host

    def start(self, host, command, env=None):
        """COMMAND (a list) running inside HOST's namespace, as a Process."""
        process = Process(host.namespace, command, env=env)
        self.processes.append(process)
        return process

    def run(self, host, command, env=None, timeout=60):
        """COMMAND inside HOST's namespace, to completion: the CompletedProcess."""
        return subprocess.run(
            ["ip", "netns", "exec", host.namespace, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def power_off(self, host):
        """The host vanishes: its processes die, its namespace and cable are gone; the bridge port with them."""
        for process in self.processes:
            if process.namespace == host.namespace:
                process.proc.kill()
                process.stop()
        ip("netns", "del", host.namespace)
        self.namespaces.remove(host.namespace)

    def close(self):
        """Stop every process, then delete every namespace we made. Errors are collected, not raised early."""
        problems = []
        for process in self.processes:
            try:
                process.stop()
            except Exception as error:  # keep cleaning up
                problems.append(f"stopping a process in {process.namespace}: {error}")
        self.processes.clear()
        for name in reversed(self.namespaces):
            result = ip("netns", "del", name, check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {name}: {result.stderr.strip()}")
        self.namespaces.clear()
        return problems

    def leftovers(self):
        """Namespaces or links in the root namespace still carrying our tag."""
        names = ip("netns", "list").stdout + ip("link").stdout
        return [line for line in names.splitlines() if self.tag in line]


def idle_daemon_command(idle_loadavg, conf, address, *extra_args):
    """ltsp-server-advertise on ADDRESS:377 with config CONF, reading IDLE_LOADAVG as /proc/loadavg.

    The namespaces share one machine's load, so each daemon reads an idle load
    average instead (bound in the daemon's own mount namespace by ``ip netns
    exec``): its capacity then follows its WEIGHT alone.
    """
    import sys

    command = ["sh", "-c", 'mount --bind "$0" /proc/loadavg && exec "$@"', str(idle_loadavg)]
    command += [sys.executable, "-m", "ltsp_server_advertise.cli", "--config", str(conf)]
    return [*command, "--listen", f"{address}:377", *extra_args]
