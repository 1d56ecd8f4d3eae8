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
"""

import logging
import os
import pwd
import resource

from ltsp_lbcore.errors import ConfigError, ServiceError

log = logging.getLogger(__name__)


def drop_to(user_name, config_path=None):
    """If running as root, become user_name (and its primary group). Returns the uid now in force."""
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
    log.info("running as user %s (uid %d, gid %d)", user_name, entry.pw_uid, entry.pw_gid)
    return entry.pw_uid


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
