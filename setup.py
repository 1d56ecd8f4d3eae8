"""Installs both sides of ltsp-loadbalance and their commands.

The daemon's code lives in ltsp-server-advertise/ beside its unit file and
default config (the layout of SPEC.md), so the package is mapped by hand.
"""

from setuptools import setup

setup(
    name="ltsp-loadbalance",
    version="0.1.0",
    description="Spread LTSP thin-client logins across application servers",
    license="GPL-2.0-or-later",
    python_requires=">=3.9",
    packages=["get_hosts", "ltsp_server_advertise"],
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
