"""make demo: the whole system at work on this machine, in well under a minute.

Five application servers on loopback addresses 127.0.1.1-5, each a real
ltsp-server-advertise daemon with its own config: app1 as shipped, app2 with
WEIGHT 200, app3 drained, app4 dead (nothing listens there), app5 broken (its
daemon answers, but no sshd listens on its SSH_PORT: Failing). The others'
SSH_PORT is a port the demo holds open, a stand-in for sshd. Then get_hosts,
the real command a thin client runs, reads a real lts.conf naming that pool
and chooses: its --status table, each algorithm over 20 logins, --explain,
and a live drain with SIGHUP. Then the central balancer, ltsp-loadbalancer
on 127.0.1.10:8377, polling the same four: get_hosts asks it first and
prints its answer (one request instead of one per server), and when it is
stopped, get_hosts probes the pool itself. Nothing leaves loopback.
"""

from __future__ import annotations

import collections
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PORT = 377 if os.geteuid() == 0 else 3377  # the real port when we may bind it
SERVERS = {  # name: (address, config lines or None for a dead host)
    "app1": ("127.0.1.1", ""),
    "app2": ("127.0.1.2", "WEIGHT = 200\n"),
    "app3": ("127.0.1.3", "STATE = drain\n"),
    "app4": ("127.0.1.4", None),
    "app5": ("127.0.1.5", "# no sshd listens on its SSH_PORT: Failing\n"),
}
BROKEN_SSHD = "app5"
LOGINS = 20
BALANCER = ("127.0.1.10", 8377)
LAST_WORDS = 5  # stderr lines of a service shown when it dies or does not answer


def heading(text):
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def show(command, output):
    print(f"$ {command}")
    print(textwrap.indent(output.rstrip("\n"), "  "), flush=True)


def start_service(command, log_path):
    """COMMAND started with its stderr in LOG_PATH, for failed() to show."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)


def failed(what, service, log_path):
    """SystemExit naming WHAT, how SERVICE ended, and its last stderr lines: its own words on why."""
    if service.poll() is None:
        service.kill()
        service.wait()
        ending = "did not answer"
    else:
        ending = f"exited with status {service.returncode}"
    lines = pathlib.Path(log_path).read_text(errors="replace").splitlines()[-LAST_WORDS:]
    said = "\n".join(f"  {line}" for line in lines) if lines else "  (nothing on stderr)"
    return SystemExit(f"demo: {what} {ending}; its last words:\n{said}")


def wait_listening(address, daemon, log_path, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and daemon.poll() is None:
        try:
            socket.create_connection((address, PORT), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise failed(f"the daemon on {address}:{PORT}", daemon, log_path)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daemons(workdir, sshd_port):
    """The daemons; every one but BROKEN_SSHD checks SSH_PORT = SSHD_PORT (where the demo's stand-in listens)."""
    daemons = {}
    for name, (address, config) in SERVERS.items():
        if config is None:
            continue
        path = workdir / f"{name}.conf"
        ssh_port = free_port() if name == BROKEN_SSHD else sshd_port
        # As root each daemon binds port 377 and drops to nobody, as in production.
        path.write_text(f"# {name}: ltsp-server-advertise config for the demo\n{config}SSH_PORT = {ssh_port}\n")
        path.chmod(0o644)
        command = [sys.executable, "-m", "ltsp_server_advertise.cli", "--config", str(path)]
        command += ["--listen", f"{address}:{PORT}"]
        daemons[name] = start_service(command, workdir / f"{name}.log")
    try:
        for name, daemon in daemons.items():
            wait_listening(SERVERS[name][0], daemon, workdir / f"{name}.log")
    except SystemExit:
        stop_all(daemons.values())
        raise
    return daemons


def stop_all(services):
    for service in services:
        if service.poll() is None:
            service.kill()
            service.wait()


def start_balancer(workdir):
    """ltsp-loadbalancer polling the demo's pool every second; waits for its first poll."""
    conf = workdir / "balancer.conf"
    servers = " ".join(f"{address}:{PORT}" for address, _config in SERVERS.values())
    # ONE_LOGIN_SECONDS 0: the demo's thin clients are this one machine, one address, as a lab behind NAT
    # (the balancer would otherwise take each login as the same client asking again, in place of the last).
    conf.write_text(f"SERVERS = {servers}\nPOLL_SECONDS = 1\nONE_LOGIN_SECONDS = 0\n")
    conf.chmod(0o644)
    address, port = BALANCER
    command = [sys.executable, "-m", "ltsp_loadbalancer", "--config", str(conf), "--listen", f"{address}:{port}"]
    log_path = workdir / "balancer.log"
    balancer = start_service(command, log_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and balancer.poll() is None:
        try:
            with socket.create_connection(BALANCER, timeout=0.5) as sock:
                sock.sendall(b"GET /v1/hosts?peek=1 HTTP/1.0\r\n\r\n")  # a look, not a login
                if sock.recv(12).startswith(b"HTTP/1.1 200"):
                    return balancer
        except OSError:
            pass
        time.sleep(0.1)
    raise failed(f"ltsp-loadbalancer on {address}:{port}", balancer, log_path)


def show_balancer(lts_conf):
    """get_hosts through the balancer: its view, its answers, and the fallback once it is stopped."""
    address, port = BALANCER
    env = {"LB_BALANCER": f"{address}:{port}"}
    out, err = get_hosts(lts_conf, "--status", **env)
    show(f"LB_BALANCER={address}:{port} get_hosts --status   # one request: the balancer's view", out)
    out, err = get_hosts(lts_conf, "--explain", **env)
    show(f"LB_BALANCER={address}:{port} get_hosts --explain", err + out)
    firsts = collections.Counter()
    for _login in range(LOGINS):
        out, _err = get_hosts(lts_conf, "--first", **env)
        firsts[out.strip()] += 1
    names = {address: name for name, (address, _c) in SERVERS.items()}
    counts = "  ".join(f"{names.get(host, host)} {firsts[host]:>2}" for host in sorted(firsts))
    print(f"  {LOGINS} logins through the balancer, first choice: {counts}")
    print("  (it counts each login it hands out, so logins spread by capacity before any server's figures move)")


def get_hosts(lts_conf, *args, **env):
    """Run the real get_hosts as LDM would: a clean environment, lts.conf, stdout only."""
    # Every demo login is another thin client: no memory of the last one's host (LB_RETRY_SECONDS).
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LTS_CONF": str(lts_conf),
        "LB_RETRY_SECONDS": "0",
        **env,
    }
    command = [sys.executable, "-m", "get_hosts", *args]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=30)
    return done.stdout, done.stderr


def main():
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ltsp-lb-demo-") as tmp:
        workdir = pathlib.Path(tmp)
        # The daemons drop to nobody and re-read their config on SIGHUP, as
        # they read /etc/ltsp (0755, files 0644) in production.
        workdir.chmod(0o755)
        heading(f"five application servers on loopback, port {PORT}")
        # A stand-in for sshd: the daemons' health check sees it listen (it never connects to it).
        sshd = socket.create_server(("127.0.0.1", 0))
        daemons = start_daemons(workdir, sshd.getsockname()[1])
        try:
            for name, (address, config) in SERVERS.items():
                what = "dead: nothing listens" if config is None else (config.strip() or "as shipped")
                print(f"  {name}  {address:<10}  {what}")
            # The check needs two looks (2 s apart) before it calls sshd missing: a restart is not an outage.
            time.sleep(2.5)

            heading("what app2 advertises (ltsp-server-advertise --once)")
            once = subprocess.run(
                [sys.executable, "-m", "ltsp_server_advertise.cli", "--config", str(workdir / "app2.conf"), "--once"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            show("ltsp-server-advertise --config app2.conf --once", once.stdout)

            lts_conf = workdir / "lts.conf"
            pool = " ".join(address for address, _config in SERVERS.values())
            lts_conf.write_text(f'[Default]\n    LB_SERVERS = "{pool}"\n    LB_PORT = {PORT}\n')
            heading("the thin client's lts.conf")
            show(f"cat {lts_conf.name}", lts_conf.read_text())

            heading("get_hosts --status: the state of the pool at a glance")
            out, err = get_hosts(lts_conf, "--status")
            show("get_hosts --status", out)

            heading("what LDM gets: LDM_SERVER=$(get_hosts)")
            out, err = get_hosts(lts_conf)
            show("get_hosts", out + err)

            heading(f"each algorithm over {LOGINS} logins: who gets the first choice")
            print(
                "  app3 is drained, app4 dead and app5 failing: none may ever get a login. The servers are one machine,"
            )
            print("  so app2's WEIGHT 200 doubles its capacity next to app1. No session lands in a demo, so")
            print("  two-choice (the default) always finds app2 the emptier; in a storm app2 fills until it is")
            print("  as full as app1 (make bench: benchmarks/login_storm.py). mac-hash: this machine is one")
            print("  client, one MAC, so it keeps one server: that is its point.")
            for algorithm in ("two-choice", "weighted", "random", "best-rated", "mac-hash", "fixed"):
                firsts = collections.Counter()
                for _login in range(LOGINS):
                    out, _err = get_hosts(lts_conf, "--first", LB_ALGORITHM=algorithm)
                    firsts[out.strip()] += 1
                names = {address: name for name, (address, _c) in SERVERS.items()}
                counts = "  ".join(f"{names.get(host, host)} {firsts[host]:>2}" for host in sorted(firsts))
                print(f"  {algorithm:<11} {counts}")

            heading("get_hosts --explain: why each server was kept or skipped")
            out, err = get_hosts(lts_conf, "--explain")
            show("get_hosts --explain", err + out)

            heading("the central balancer: ltsp-loadbalancer on 127.0.1.10:8377, LB_BALANCER in lts.conf")
            balancer = start_balancer(workdir)
            try:
                show_balancer(lts_conf)
            finally:
                balancer.terminate()
                balancer.wait(timeout=10)
            heading("the balancer stopped: get_hosts probes the pool itself, no login waits for it")
            out, err = get_hosts(lts_conf, "--explain", LB_BALANCER=f"{BALANCER[0]}:{BALANCER[1]}")
            show(f"LB_BALANCER={BALANCER[0]}:{BALANCER[1]} get_hosts --explain", err + out)

            heading("drain app2 live: STATE = drain, then SIGHUP (no restart)")
            conf = workdir / "app2.conf"
            conf.write_text(conf.read_text() + "STATE = drain\n")
            daemons["app2"].send_signal(signal.SIGHUP)
            time.sleep(0.5)
            out, _err = get_hosts(lts_conf, "--status")
            show("get_hosts --status", out)
            out, err = get_hosts(lts_conf)
            show("get_hosts", out + err)

            heading("every server gone: the login screen still gets the whole pool")
            for daemon in daemons.values():
                daemon.terminate()
            for daemon in daemons.values():
                daemon.wait(timeout=10)
            out, err = get_hosts(lts_conf)
            show("get_hosts", out + err)
        finally:
            stop_all(daemons.values())
            sshd.close()
    print(f"\ndemo finished in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
