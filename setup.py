"""Installs both sides of ltsp-loadbalance and their commands.

The daemon's code lives in ltsp-server-advertise/ beside its unit file and
default config (the layout of SPEC.md), so the package is mapped by hand.
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
    python_requires=">=3.9",
    packages=["ltsp_lbcore", "get_hosts", "ltsp_server_advertise"],
    package_dir={"ltsp_server_advertise": "ltsp-server-advertise"},
    scripts=["ltsp-update-sshkeys"],
    install_requires=[],
    extras_require={
        "server": ["psutil", "lxml"],
        "client": ["netifaces"],
    },
    entry_points={
        "console_scripts": [
            "get_hosts = get_hosts.cli:main",
            "ltsp-server-advertise = ltsp_server_advertise.cli:main",
        ]
    },
)
