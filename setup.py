"""Installs ltsp-loadbalance: the shared core, the three programs and their commands.

The daemon's and the balancer's code live in ltsp-server-advertise/ and
ltsp-loadbalancer/ beside their unit files and default configs (the layout of
SPEC.md), so those packages are mapped by hand.

A plain ``pip install`` gives every command what it needs (the server
libraries are requirements, not extras). netifaces stays optional: it is
unmaintained, has no wheels for current Python, and get_hosts finds the MAC
from /sys without it. The Debian packages split the same code so that the
thin client needs python3 alone.
"""

import re
from pathlib import Path

from setuptools import setup

# The one place the version is written: ltsp_lbcore/__init__.py.
VERSION = re.search(
    r'^__version__ = "([^"]+)"$', Path(__file__).with_name("ltsp_lbcore").joinpath("__init__.py").read_text(), re.M
)[1]

setup(
    name="ltsp-loadbalance",
    version=VERSION,
    description="Spread LTSP thin-client logins across application servers",
    license="GPL-2.0-or-later",
    # The thin client's floor (LDM's releases: Ubuntu 18.04 has 3.6); the servers
    # need what their libraries need (python3-tornado: Debian 11's 3.9 and later).
    python_requires=">=3.6",
    packages=["ltsp_lbcore", "get_hosts", "ltsp_server_advertise", "ltsp_loadbalancer", "ltsp_update_sshkeys"],
    package_dir={"ltsp_server_advertise": "ltsp-server-advertise", "ltsp_loadbalancer": "ltsp-loadbalancer"},
    # The status page's templates, script and style: read at start by statuspage.py (Radicale ships its
    # web UI the same way). pybuild installs package data into dist-packages with the code.
    package_data={"ltsp_loadbalancer": ["templates/*.html", "static/*.css", "static/*.js"]},
    scripts=["ltsp-update-sshkeys"],
    install_requires=["psutil", "lxml", "tornado", "prometheus_client"],
    extras_require={"client": ["netifaces"]},
    entry_points={
        "console_scripts": [
            "get_hosts = get_hosts.cli:main",
            "ltsp-server-advertise = ltsp_server_advertise.cli:main",
            "ltsp-loadbalancer = ltsp_loadbalancer.cli:main",
        ]
    },
)
