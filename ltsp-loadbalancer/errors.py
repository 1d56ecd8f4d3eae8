"""The one exception type of ltsp-loadbalancer.

cli.main() turns any ServiceError (this and the shared plumbing's) into one
`ltsp-loadbalancer: error: ...` line and a non-zero exit; on SIGHUP a config
error keeps the running config and is logged instead.
"""

from ltsp_lbcore.errors import ServiceError


class BalancerError(ServiceError):
    """A problem the balancer can name."""
