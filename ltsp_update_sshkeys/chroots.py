"""The chroots under the base: which directories they are, and writing each one's ssh_known_hosts.

No symbolic link below the base is followed: resolved from outside the
chroot, a link would lead into the server's own files. Everything below the
base is opened through ltsp_lbcore.files.open_directory and *at() calls.
"""

import os
import stat
from dataclasses import dataclass

from ltsp_lbcore.files import UnusableFile, file_kind, open_directory
from ltsp_update_sshkeys.files import read_known_hosts_file, replace_file
from ltsp_update_sshkeys.keys import render_known_hosts
from ltsp_update_sshkeys.messages import SshKeysError, shown
from ltsp_update_sshkeys.policy import chroot_keys

SSH_DIR_MODE = 0o755
# Directories under the base that look like chroots but never are.
NOT_CHROOTS = frozenset({"images"})


@dataclass(frozen=True)
class Chroot:
    """A chroot directory: its name under the base and its path."""

    name: str
    path: str

    @property
    def known_hosts(self):
        return os.path.join(self.path, "etc", "ssh", "ssh_known_hosts")


def find_chroots(base, reporter):
    """Chroot directories directly under base, sorted by name: real directories with etc, see NOT_CHROOTS."""
    try:
        entries = sorted(os.scandir(base), key=lambda entry: entry.name)
    except FileNotFoundError:
        raise SshKeysError(f"base directory {base} does not exist") from None
    except OSError as error:
        raise SshKeysError(f"cannot list base directory {base}: {error.strerror}") from None
    chroots = []
    for entry in entries:
        if entry.name in NOT_CHROOTS or entry.name.startswith("."):
            continue
        try:
            if entry.is_symlink():
                if os.path.isdir(os.path.join(entry.path, "etc")):  # it would have been a chroot
                    reporter.warning(f"skipping chroot {shown(entry.path)}: is a symbolic link (not followed)")
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            os.lstat(os.path.join(entry.path, "etc"))
        except OSError:
            continue  # no etc: not a chroot
        chroots.append(Chroot(entry.name, entry.path))
    return chroots


def update_chroot(base, chroot, own_name_list, own_keys, plan, reporter):
    """Write one chroot's ssh_known_hosts -> (True written, False unchanged, None skipped (warned), kept).

    kept: server -> how many keys were kept from this chroot's own file (policy.chroot_keys).
    """
    path = chroot.known_hosts
    try:
        ssh_fd = open_directory(base, f"{chroot.name}/etc/ssh", create_mode=SSH_DIR_MODE)
    except (UnusableFile, FileNotFoundError) as error:
        reporter.warning(f"skipping chroot {shown(chroot.path)}: {error}")
        return None, {}
    try:
        current = os.stat("ssh_known_hosts", dir_fd=ssh_fd, follow_symlinks=False)
    except FileNotFoundError:
        current = None
    except OSError as error:
        os.close(ssh_fd)
        reporter.warning(f"skipping chroot {shown(chroot.path)}: {path}: {error.strerror}")
        return None, {}
    try:
        if current is not None and not stat.S_ISREG(current.st_mode):
            mode = current.st_mode
            kind = "a symbolic link (not followed)" if stat.S_ISLNK(mode) else f"{file_kind(mode)}, not a regular file"
            reporter.warning(f"skipping chroot {shown(chroot.path)}: {shown(path)}: is {kind}")
            return None, {}
        remembered = {}
        if plan.per_chroot and current is not None:
            remembered = read_known_hosts_file(path, reporter, ssh_fd, "ssh_known_hosts") or {}
        keys, kept = chroot_keys(plan, remembered)
        text = render_known_hosts(own_name_list, own_keys, keys)
        written = replace_file(ssh_fd, "ssh_known_hosts", text.encode("utf-8"), path)
    finally:
        os.close(ssh_fd)
    reporter.info(f"{'wrote' if written else 'unchanged'} {shown(path)}")
    return written, kept


def update_chroots(base, chroots, own_name_list, own_keys, plan, reporter):
    """Write every chroot's known_hosts -> ([problems], [names of the chroots changed], kept_by_server).

    kept_by_server: server -> {chroot name: keys kept from its own file}, for the silent-server warning.
    """
    problems, written, failed = [], [], []
    kept_by_server = {}
    for chroot in chroots:
        try:
            changed, kept = update_chroot(base, chroot, own_name_list, own_keys, plan, reporter)
        except OSError as error:
            # One broken chroot must not stop the others from being updated.
            reporter.warning(f"cannot write {shown(chroot.known_hosts)}: {error.strerror or error}")
            failed.append(shown(chroot.path))
            continue
        if changed:
            written.append(chroot.name)
        for server, count in kept.items():
            kept_by_server.setdefault(server, {})[chroot.name] = count
    if failed:
        problems.append(f"{len(failed)} of {len(chroots)} chroots not updated: {', '.join(failed)}")
    return problems, written, kept_by_server
