"""ltsp_lbcore: what every component of ltsp-loadbalance shares.

get_hosts (thin client), ltsp-server-advertise (application servers),
ltsp-loadbalancer (the central balancer) and ltsp-update-sshkeys all import
this package, so it holds only facts they share and runs with python3 alone:
no psutil, no lxml, nothing imported at load time. It ships in the
thin-client package (ltsp-get-hosts), which the server packages depend on.

- ``wire``: the document on port 377 (encode, incremental decode, states).
- ``confsyntax``: the line syntax of lts.conf and of our config files.
- ``hostport``: THE host and host:port parser and validator.
- ``ports``: the default ports.
- ``files``: reading admin and chroot files safely (regular files, capped).
- ``schema``: the one config mechanism of the services (a key table).
- ``service``: binding, privilege drop, logging, reload for the services.

``__version__`` below is the one place the version is written: setup.py
reads it, and a test checks debian/changelog against it.
"""

__version__ = "0.1.0"
