"""The one exception type of get_hosts.

cli.main() turns any GetHostsError into one `get_hosts: error: ...` line and
exit code 2; anything else escaping is a bug (traceback with --debug).
"""


class GetHostsError(Exception):
    """A problem get_hosts can name: bad lts.conf, no pool, unknown algorithm."""
