"""Fill the generated parts of the man pages from the tables they document.

get_hosts.8 lists every LB_* variable from get_hosts.settings.VARIABLES,
ltsp-server-advertise.conf.5 every key from ltsp_server_advertise.config.SCHEMA
and ltsp-loadbalancer.8 every key from ltsp_loadbalancer.config.SCHEMA,
between the lines ``.\\" BEGIN GENERATED <name>`` and ``.\\" END GENERATED``.
The rest of each page is written by hand. tests/test_packaging.py checks that
the shipped pages are what this renders, so they cannot drift from the code.

    .venv/bin/python docs/man/generate.py    # rewrite the generated parts in place
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN = '.\\" BEGIN GENERATED {name} (docs/man/generate.py; do not edit by hand)'
END = '.\\" END GENERATED'

# A dash that starts an option (--listen, -S) is a minus sign in roff; a
# hyphen inside a word (two-choice, thin-client) stays a hyphen.
_OPTION_DASHES = re.compile(r"(?<![\w-])(--?)(?=\w)")


def roff_text(text):
    """Plain text -> roff text: backslashes, option dashes, and a leading '.' or "'"."""
    text = text.replace("\\", "\\e")
    text = _OPTION_DASHES.sub(lambda match: "\\-" * len(match.group(1)), text)
    lines = []
    for line in text.split("\n"):
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _sentences(text):
    """One sentence per line, as roff sources should be (a period then a space ends one)."""
    return re.sub(r"(?<=[a-z0-9)][.:]) +(?=[A-Z])", "\n", text)


def lb_variables():
    """The LB_* variables of get_hosts.8, one .TP paragraph each."""
    from get_hosts.settings import VARIABLES

    parts = []
    for var in VARIABLES:
        parts.append(".TP\n")
        parts.append(f".B {var.name}\n")
        parts.append(roff_text(_sentences(var.help)) + "\n")
        parts.append(f"Default: \\fB{roff_text(var.default_text)}\\fR.\n")
    return "".join(parts)


# Paths of the source tree that the help text names -> where the package installs them.
INSTALLED_DOCS = {
    "docs/PROTOCOL.md": "/usr/share/doc/ltsp-server-advertise/PROTOCOL.md",
    "docs/placement.md": "/usr/share/doc/ltsp-server-advertise/placement.md",
}


def config_keys(schema):
    """The keys of a service's config SCHEMA, one .TP paragraph each."""
    parts = []
    for key in schema:
        help_text = key.help
        for source, installed in INSTALLED_DOCS.items():
            help_text = help_text.replace(source, installed)
        parts.append(".TP\n")
        parts.append(f"\\fB{key.name}\\fR = \\fI{roff_text(key.default)}\\fR\n")
        parts.append(roff_text(_sentences(help_text)) + "\n")
    return "".join(parts)


def daemon_keys():
    from ltsp_server_advertise.config import SCHEMA

    return config_keys(SCHEMA)


def balancer_keys():
    from ltsp_loadbalancer.config import SCHEMA

    return config_keys(SCHEMA)


# page file name -> {generated part name: renderer}
PAGES = {
    "get_hosts.8": {"LB-VARIABLES": lb_variables},
    "ltsp-server-advertise.conf.5": {"CONFIG-KEYS": daemon_keys},
    "ltsp-loadbalancer.8": {"CONFIG-KEYS": balancer_keys},
}


def render_page(text, renderers):
    """TEXT with every generated part replaced by its renderer's output; ValueError when a marker is missing."""
    for name, render in renderers.items():
        begin = BEGIN.format(name=name)
        pattern = re.compile(re.escape(begin) + r"\n.*?" + re.escape(END) + r"\n", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"no generated part {name!r} (lines {begin!r} ... {END!r})")
        text = pattern.sub(lambda _match, b=begin, r=render: f"{b}\n{r()}{END}\n", text, count=1)
    return text


def main():
    changed = []
    for page, renderers in PAGES.items():
        path = HERE / page
        old = path.read_text(encoding="utf-8")
        new = render_page(old, renderers)
        if new != old:
            path.write_text(new, encoding="utf-8")
            changed.append(page)
    print("rewrote: " + (", ".join(changed) if changed else "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
