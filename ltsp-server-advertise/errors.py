"""The one exception type of ltsp-server-advertise.

cli.main() turns any ServiceError (this and the shared plumbing's) into one
`ltsp-server-advertise: error: ...` line and a non-zero exit; on SIGHUP a
config error keeps the running config and is logged instead.
"""

from ltsp_lbcore.errors import ServiceError


class AdvertiseError(ServiceError):
    """A problem the daemon can name: cannot collect statistics, cannot serve."""
