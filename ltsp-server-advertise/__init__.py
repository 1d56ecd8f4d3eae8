"""ltsp-server-advertise: the application-server side of ltsp-loadbalance.

A small daemon on TCP port 377 that answers every connection with one XML
document of this server's load (see docs/PROTOCOL.md), then closes. Its
version is ltsp_lbcore.__version__.
"""
