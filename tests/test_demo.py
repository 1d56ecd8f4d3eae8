"""make demo is what a newcomer runs first: it must keep working, whole."""

import importlib.util
import pathlib
import re
import socket
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_runs_and_shows_the_system_at_work():
    done = subprocess.run([sys.executable, str(ROOT / "demo" / "demo.py")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # The status table: app3 drained, app4 dead, app5 failing (no sshd), app1 and app2 usable.
    assert re.search(r"127\.0\.1\.3\s+Drain", out)
    assert re.search(r"127\.0\.1\.4\s+Down .*refused", out)
    assert re.search(r"127\.0\.1\.5\s+Failing .*sshd: nothing listens on port \d+", out)
    assert re.search(r"127\.0\.1\.2\s+Idle", out)
    # Over every algorithm's logins, the drained, the dead and the failing server never came first.
    table = out.split("who gets the first choice", 1)[1].split("==", 1)[0]
    for algorithm in ("two-choice", "weighted", "random", "best-rated", "mac-hash", "fixed"):
        row = next(line for line in table.splitlines() if line.strip().startswith(algorithm))
        assert "app3" not in row and "app4" not in row and "app5" not in row, row
    # The live drain took app2 out without a restart.
    after_drain = out.split("drain app2 live", 1)[1]
    assert re.search(r"127\.0\.1\.2\s+Drain", after_drain)
    # The balancer answered, app3, app4 and app5 never first; stopped, get_hosts probed by itself.
    balancer = out.split("the central balancer", 1)[1].split("the balancer stopped", 1)[0]
    assert "balancer 127.0.1.10:8377 answered in" in balancer
    first_choices = next(line for line in balancer.splitlines() if "logins through the balancer" in line)
    assert not {"app3", "app4", "app5"} & set(first_choices.split()), first_choices
    stopped = out.split("the balancer stopped", 1)[1].split("==", 1)[0]
    assert "no balancer answered: probing the pool itself" in stopped
    # With every daemon gone, LDM still gets the whole pool.
    assert "127.0.1.1 127.0.1.2 127.0.1.3 127.0.1.4 127.0.1.5\n" in out.split("every server gone", 1)[1]


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_under_test", ROOT / "demo" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def free_port(host):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def test_a_daemon_that_dies_at_start_is_shown_with_its_own_error(conf_dir, monkeypatch):
    demo = load_demo()
    monkeypatch.setattr(demo, "SERVERS", {"app1": ("127.0.1.1", "WEIGHT = heavy\n")})
    monkeypatch.setattr(demo, "PORT", free_port("127.0.1.1"))
    with pytest.raises(SystemExit) as stopped:
        demo.start_daemons(conf_dir, sshd_port=22)
    message = str(stopped.value)
    assert message.startswith(f"demo: the daemon on 127.0.1.1:{demo.PORT} exited with status 2; its last words:\n")
    assert f"  ltsp-server-advertise: error: {conf_dir / 'app1.conf'}:2: invalid value for WEIGHT" in message


def test_a_balancer_that_cannot_start_is_shown_with_its_own_error(conf_dir, monkeypatch):
    demo = load_demo()
    with socket.socket() as taken:
        taken.bind(("127.0.1.10", 0))
        taken.listen()
        monkeypatch.setattr(demo, "BALANCER", taken.getsockname())
        with pytest.raises(SystemExit) as stopped:
            demo.start_balancer(conf_dir)
    message = str(stopped.value)
    host, port = demo.BALANCER
    assert message.startswith(f"demo: ltsp-loadbalancer on {host}:{port} exited with status 1; its last words:\n")
    last = message.splitlines()[-1]
    assert last.startswith("  ltsp-loadbalancer: error: ") and "in use" in last, message
