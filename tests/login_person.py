"""One person at one thin client logging in, trying once more when the login fails.

Run inside that client's network namespace by test_broken_server_storm.py
(each person is a thin client of their own, with their own address and
LB_STATE_DIR, so a balancer hears each of them as a distinct client). The
person runs get_hosts (--first, a fresh interpreter, as LDM's screen script
does); the login is a TCP connection to port 22 of the chosen host that must
bring the server's SSH banner within 3 s: refused, closed before the banner,
or silent is a failed login. After a failure ldm exits and the screen script
runs get_hosts again at once (LTSP's screen_session loop): the second and
last attempt. Writes one JSON line to stderr ({"attempts": [...]}), then
keeps a good login open until it is stopped (SIGTERM).

    python3 login_person.py
"""

import json
import socket
import subprocess
import sys
import threading
import time

ATTEMPTS = 2
BANNER_SECONDS = 3.0


def try_login(host):
    """(connection or None, error or None): a connection that brought the SSH banner is a login."""
    try:
        sock = socket.create_connection((host, 22), timeout=BANNER_SECONDS)
    except OSError as error:
        return None, f"connect: {error}"
    try:
        sock.settimeout(BANNER_SECONDS)
        banner = sock.recv(64)
    except OSError as error:
        sock.close()
        return None, f"no banner: {error}"
    if not banner.startswith(b"SSH-"):
        sock.close()
        return None, "closed before the banner"
    return sock, None


def main():
    attempts = []
    held = None
    for _ in range(ATTEMPTS):
        started = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "get_hosts", "--first", "--explain"], capture_output=True, text=True, timeout=30
        )
        host = out.stdout.strip()
        attempt = {"host": host, "rc": out.returncode, "ms": round((time.monotonic() - started) * 1000)}
        held, error = try_login(host) if host else (None, "no host")
        attempts.append(attempt)
        if held is not None:
            break
        attempt["error"] = error
        attempt["stderr"] = out.stderr[-400:]
    sys.stderr.write(json.dumps({"attempts": attempts}) + "\n")
    sys.stderr.flush()
    threading.Event().wait()  # keep the login open until the test stops us


if __name__ == "__main__":
    main()
