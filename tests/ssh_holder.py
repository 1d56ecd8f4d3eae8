"""An sshd stand-in on ADDRESS:22, run inside a server's namespace.

python3 ssh_holder.py ADDRESS          holds every connection open after sending an SSH banner, as
                                       sshd holds a login (the server's daemon counts it)
python3 ssh_holder.py ADDRESS --close  accepts and closes at once: sshd up, every login failing
"""

import socket
import sys

BANNER = b"SSH-2.0-ltsp-loadbalance-test\r\n"

server = socket.create_server((sys.argv[1], 22), backlog=1024)
closing = sys.argv[2:] == ["--close"]
held = []
while True:
    connection, _ = server.accept()
    if closing:
        connection.close()
        continue
    try:
        connection.sendall(BANNER)
    except OSError:
        connection.close()
        continue
    held.append(connection)
