"""get_hosts: the thin-client side of ltsp-loadbalance.

Runs at every login from the LTSP chroot with python3 alone, so this package
imports nothing at load time; each run imports only the modules it needs.
What it shares with the servers (wire format, config syntax, host:port
parsing, the version) lives in ltsp_lbcore.
"""
