"""Giving up root once the sockets are bound.

Rules:

- Only a process started as root drops anything; otherwise (systemd's
  DynamicUser, a developer's shell) this is a no-op that says so at debug level.
- The order is the safe one: supplementary groups, then the group, then the
  user (after setuid we could no longer change groups). The user's primary
  group is kept; supplementary groups are dropped, not taken from
  /etc/group: the services need none of them.
- Afterwards we check that root cannot be regained; if it can, that is an
  a ServiceError, never a daemon quietly running as root.
- A user that does not exist is a ConfigError naming the USER key.
- The code may be readable by root alone (a clone or a pip install under
  /root): every module a service needs later is imported before the drop
  (PRELOAD, and what the service's startup loads). Should one still be
  imported after it from a directory the user cannot read, that import
  fails with UnreadableCode naming the directory, the user and the fix (a
  ServiceError: at start, the service's one error line), not with "No
  module named ..." deep in a traceback.
"""

import importlib
import logging
import os
import pwd
import resource
import sys

from ltsp_lbcore.errors import ConfigError, ServiceError

log = logging.getLogger(__name__)


class UnreadableCode(ServiceError, ModuleNotFoundError):
    """A module imported after the drop lives in a directory the user we became cannot read."""


def drop_to(user_name, config_path=None, preload=()):
    """If running as root, become user_name (and its primary group). Returns the uid now in force.

    PRELOAD names the modules the service imports late (inside a function,
    or a library's lazy import): they are imported first, as root.
    """
    for name in preload:
        importlib.import_module(name)
    if os.geteuid() != 0:
        log.debug("not started as root: no privileges to drop (running as uid %d)", os.geteuid())
        return os.geteuid()
    try:
        entry = pwd.getpwnam(user_name)
    except KeyError:
        where = f"{config_path}: " if config_path else ""
        raise ConfigError(
            f"{where}USER {user_name!r} does not exist on this system", config_path, None, "USER", user_name
        ) from None
    if entry.pw_uid == 0:
        raise ConfigError(
            f"USER {user_name!r} is root: choose an unprivileged user", config_path, None, "USER", user_name
        )
    try:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except OSError as error:
        raise ServiceError(f"cannot become user {user_name!r}: {error.strerror}") from None
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise ServiceError(f"dropped to {user_name!r} but could become root again: refusing to run")
    sys.meta_path.append(_ImportGuard(user_name))
    log.info("running as user %s (uid %d, gid %d)", user_name, entry.pw_uid, entry.pw_gid)
    return entry.pw_uid


class _ImportGuard:
    """The last finder after the drop: it speaks only when no other finder found a module.

    Python's own finders skip a directory they cannot list as if it were
    empty: a lazy import from an unreadable tree is then "No module named
    tornado.platform". Here it names the directory, the user and the fix.
    """

    def __init__(self, user_name):
        self.user_name = user_name

    def find_spec(self, fullname, path=None, target=None):
        for directory in sys.path if path is None else path:
            reason = _unreadable(directory or ".")
            if reason is not None:
                raise UnreadableCode(
                    f"cannot read {directory or os.getcwd()} as user {self.user_name} ({reason}) to import "
                    f"{fullname}: install the package, or make the tree readable",
                    name=fullname,
                    path=directory,
                )
        return None


def _unreadable(directory):
    """Why DIRECTORY cannot be listed (strerror), or None: readable, or absent (not a permission problem)."""
    try:
        os.scandir(directory).close()
    except PermissionError as error:
        return error.strerror
    except OSError:
        return None
    return None


def ensure_open_files(needed):
    """Raise the soft RLIMIT_NOFILE toward `needed` (never above the hard limit). Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (OSError, ValueError) as error:  # a seccomp filter, a container
                log.warning("cannot raise the open files limit to %d: %s", target, error)
        if soft < needed:
            log.warning(
                "only %d file descriptors allowed (hard limit); MAX_CLIENTS wants about %d: "
                "clients beyond that wait until descriptors free up",
                soft,
                needed,
            )
    return soft
