"""The one exception type of ltsp-server-advertise.

cli.main() turns any AdvertiseError into one `ltsp-server-advertise: error:
...` line and a non-zero exit; on SIGHUP a config error keeps the running
config and is logged instead.
"""


class AdvertiseError(Exception):
    """A problem the daemon can name: bad config value, cannot bind, no such user."""
