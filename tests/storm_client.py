"""A thin-client host's morning: LOGINS real get_hosts runs over SECONDS, each followed by an ssh-like connection.

Run inside the client's network namespace by test_storm.py. Each login at
its scheduled time starts a fresh interpreter running get_hosts (as LDM
does), reads the first host, and 0.2-1 s later opens a TCP connection to
port 22 of that host and keeps it open, as an ssh login does: the server's
daemon counts it as a login in progress (its /proc/net/tcp). Writes one JSON
line to stderr (the host each login went to, how long each get_hosts took),
then keeps the connections open until it is stopped (SIGTERM).

    python3 storm_client.py LOGINS SECONDS SEED
"""

import json
import random
import socket
import subprocess
import sys
import threading
import time


def main():
    logins, seconds, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    starts = sorted(rng.uniform(0, seconds) for _ in range(logins))
    delays = [rng.uniform(0.2, 1.0) for _ in range(logins)]
    results = [None] * logins
    held = []
    lock = threading.Lock()

    def login(index):
        started = time.monotonic()
        command = [sys.executable, "-m", "get_hosts", "--first", "--explain"]
        out = subprocess.run(command, capture_output=True, text=True, timeout=30)
        elapsed_ms = (time.monotonic() - started) * 1000
        host = out.stdout.strip()
        # What get_hosts itself waited on the network (balancers, then the probe), start-up excluded.
        waited = [line.rsplit("waited ", 1)[1].split()[0] for line in out.stderr.splitlines() if "waited " in line]
        results[index] = {
            "host": host,
            "ms": round(elapsed_ms),
            "waited_ms": int(waited[-1]) if waited else None,
            "rc": out.returncode,
            "stderr": out.stderr[-300:],
        }
        time.sleep(delays[index])
        try:
            sock = socket.create_connection((host, 22), timeout=5)
        except OSError as error:
            results[index]["ssh_error"] = str(error)
            return
        with lock:
            held.append(sock)

    threads = []
    origin = time.monotonic()
    for index, start in enumerate(starts):
        time.sleep(max(0.0, origin + start - time.monotonic()))
        thread = threading.Thread(target=login, args=(index,))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    sys.stderr.write(json.dumps({"logins": results, "held": len(held)}) + "\n")
    sys.stderr.flush()
    threading.Event().wait()  # keep the connections open until the test stops us


if __name__ == "__main__":
    main()
