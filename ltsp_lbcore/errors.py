"""The error base of the services, and the config error they share.

A program's own exception type (AdvertiseError) derives from ServiceError,
so the shared service plumbing (binding, privilege drop, config) can raise
errors its main() already turns into one ``prog: error: ...`` line and an
exit status; the balancer raises none of its own.
"""


class ServiceError(Exception):
    """A problem a service can name: cannot bind, no such user, bad config."""


class ConfigError(ServiceError):
    """The config file (or a command-line override) cannot be used as written."""

    def __init__(self, message, path=None, lineno=None, key=None, value=None):
        super().__init__(message)
        self.path = path
        self.lineno = lineno
        self.key = key
        self.value = value
