"""Holds every connection to ADDRESS:22 open, as sshd holds a login. Run inside a server's namespace."""

import socket
import sys

server = socket.create_server((sys.argv[1], 22), backlog=1024)
held = []
while True:
    connection, _ = server.accept()
    held.append(connection)
