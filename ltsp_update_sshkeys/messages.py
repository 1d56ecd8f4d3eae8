"""What ltsp-update-sshkeys tells the admin: its one error type, warnings and progress, all on stderr."""

import sys

PROG = "ltsp-update-sshkeys"


class SshKeysError(Exception):
    """A problem ltsp-update-sshkeys can name: bad option, bad server, unwritable file."""


class Reporter:
    """Messages on stderr: warnings always, progress unless --quiet (stdout may carry --export)."""

    def __init__(self, quiet):
        self.quiet = quiet

    def info(self, message):
        if not self.quiet:
            print(f"{PROG}: {message}", file=sys.stderr)

    def warning(self, message):
        print(f"{PROG}: warning: {message}", file=sys.stderr)


def shown(path):
    """A path for a message: as is when printable, else repr() (a directory name may hold escapes)."""
    return path if path.isprintable() else repr(path)
