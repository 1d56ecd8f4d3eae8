"""The files ltsp-update-sshkeys reads and writes: read safely (ltsp_lbcore.files), written atomically.

Reads are of regular files only, capped in size; a known_hosts file is never
read through a symbolic link. Writes go to a new file beside the target,
fsynced and renamed over it: a reader sees the old file or the new one, and a
link in the target's place is replaced, never written or chmod-ed through.
"""

import contextlib
import glob
import os
import stat

from ltsp_lbcore.files import UnusableFile, read_regular_file
from ltsp_update_sshkeys.keys import parse_known_hosts, parse_public_key, split_lines
from ltsp_update_sshkeys.messages import SshKeysError
from ltsp_update_sshkeys.names import ASCII_SPACE, parse_server

KNOWN_HOSTS_MODE = 0o644
# Size caps of what is read: far above any real file, far below trouble.
MAX_CONFIG_BYTES = 1 << 20  # extraservers, ltsp.conf
MAX_PUBLIC_KEY_BYTES = 64 << 10  # one ssh_host_*_key.pub
MAX_KNOWN_HOSTS_BYTES = 8 << 20  # the cache, a chroot's ssh_known_hosts (thousands of servers)


def read_extraservers(path, must_exist, reporter):
    """Servers listed in an extraservers file; bad lines are warned about and skipped."""
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if must_exist:
            raise SshKeysError(f"cannot read extraservers file {path}: no such file") from None
        return []
    except OSError as error:
        raise SshKeysError(f"cannot read extraservers file {error}") from None
    servers = []
    for number, line in enumerate(split_lines(data.decode("utf-8", errors="replace")), start=1):
        value = line.split("#", 1)[0].strip(ASCII_SPACE)
        if not value:
            continue
        try:
            servers.append(parse_server(value))
        except ValueError as reason:
            reporter.warning(f"{path}:{number}: skipping bad server {value!r}: {reason}")
    return servers


def read_own_host_keys(host_keys_dir, reporter):
    """This server's public host keys from ssh_host_*_key.pub files."""
    keys = set()
    for path in sorted(glob.glob(os.path.join(glob.escape(host_keys_dir), "ssh_host_*_key.pub"))):
        try:
            text = read_regular_file(path, MAX_PUBLIC_KEY_BYTES).decode("ascii", errors="replace")
        except UnusableFile as error:
            reporter.warning(f"cannot read host key {error}")
            continue
        except OSError as error:
            reporter.warning(f"cannot read host key {path}: {error.strerror}")
            continue
        key = parse_public_key(text)
        if key is None:
            reporter.warning(f"{path}: not a public key, skipped")
            continue
        keys.add(key)
    if not keys:
        reporter.warning(f"no host keys found in {host_keys_dir}/ssh_host_*_key.pub")
    return keys


def read_known_hosts_file(path, reporter, directory_fd=None, name=None):
    """Keys by name from a known_hosts file read safely; {} when missing (None when unusable, warned)."""
    try:
        data = read_regular_file(
            name or path, MAX_KNOWN_HOSTS_BYTES, follow_symlinks=False, dir_fd=directory_fd, shown_as=path
        )
    except FileNotFoundError:
        return {}
    except UnusableFile as error:
        reporter.warning(f"no last known keys from {error}")
        return None
    return parse_known_hosts(data.decode("ascii", errors="replace"))


def replace_file(directory_fd, name, data, shown_as):
    """Make directory_fd/name a regular file holding data, mode 0644; True if it was written.

    Left alone (bytes and mtime) when it already is exactly that. Otherwise
    data goes to a new temporary file beside it (O_EXCL|O_NOFOLLOW), is
    fsynced and renamed over name: a reader sees the old file or the new
    one, never half of one, and whatever name was (a link included) is
    replaced, never written or chmod-ed through.
    """
    with contextlib.suppress(OSError):
        current = os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
        same_kind = stat.S_ISREG(current.st_mode) and current.st_mode & 0o7777 == KNOWN_HOSTS_MODE
        if same_kind and read_regular_file(name, len(data), False, dir_fd=directory_fd, shown_as=shown_as) == data:
            return False
    temporary = f".{name}.{os.urandom(6).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(temporary, flags, KNOWN_HOSTS_MODE, dir_fd=directory_fd)
    try:
        try:
            os.fchmod(descriptor, KNOWN_HOSTS_MODE)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=directory_fd)
        raise
    os.fsync(directory_fd)  # the rename itself must survive a crash too
    return True


def write_file(path, text, reporter):
    """Write an admin-named file (the cache, --export FILE) atomically; its directory is the admin's."""
    directory = os.path.dirname(path) or "."
    try:
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            written = replace_file(directory_fd, os.path.basename(path), text.encode("utf-8"), path)
        finally:
            os.close(directory_fd)
    except OSError as error:
        raise SshKeysError(f"cannot write {path}: {error.strerror or error}") from None
    reporter.info(f"{'wrote' if written else 'unchanged'} {path}")
