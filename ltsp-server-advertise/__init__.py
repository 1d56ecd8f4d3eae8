"""ltsp-server-advertise: the application-server side of ltsp-loadbalance.

A small daemon on TCP port 377 that answers every connection with one XML
document of this server's load (see docs/PROTOCOL.md), then closes.
"""

__version__ = "0.1.0"
