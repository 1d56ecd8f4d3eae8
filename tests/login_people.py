"""People at a class's thin clients logging in, each trying once more when a login fails.

Run inside the client's network namespace by test_broken_server_storm.py. Person i
sits down at a time drawn over SECONDS and runs get_hosts (--first, as a fresh
interpreter, as LDM's screen script does) with a state directory of their own
(each person is one thin client). The login is a TCP connection to port 22 of
the chosen host that must bring the server's SSH banner within 3 s: refused,
closed before the banner, or silent is a failed login. After a failure ldm
exits and the screen script runs get_hosts again at once (LTSP's
screen_session loop), which is the person's second attempt. Good logins keep
their connection open (the server's daemon counts it) until the test stops us.
Writes one JSON line to stderr: each person's attempts.

    python3 login_people.py PEOPLE SECONDS SEED STATE_BASE
"""

import json
import os
import random
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
    people, seconds, seed, state_base = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    starts = sorted(rng.uniform(0, seconds) for _ in range(people))
    results = [None] * people
    held = []
    lock = threading.Lock()

    def person(index):
        env = dict(os.environ, LB_STATE_DIR=os.path.join(state_base, f"client{index}"))
        attempts = []
        for _ in range(ATTEMPTS):
            started = time.monotonic()
            out = subprocess.run(
                [sys.executable, "-m", "get_hosts", "--first", "--explain"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            host = out.stdout.strip()
            attempt = {"host": host, "rc": out.returncode, "ms": round((time.monotonic() - started) * 1000)}
            sock, error = try_login(host) if host else (None, "no host")
            if sock is not None:
                with lock:
                    held.append(sock)
                attempts.append(attempt)
                break
            attempt["error"] = error
            attempt["stderr"] = out.stderr[-400:]
            attempts.append(attempt)
        results[index] = attempts

    threads = []
    origin = time.monotonic()
    for index, start in enumerate(starts):
        time.sleep(max(0.0, origin + start - time.monotonic()))
        thread = threading.Thread(target=person, args=(index,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    sys.stderr.write(json.dumps({"people": results, "held": len(held)}) + "\n")
    sys.stderr.flush()
    threading.Event().wait()  # keep the logins open until the test stops us


if __name__ == "__main__":
    main()
