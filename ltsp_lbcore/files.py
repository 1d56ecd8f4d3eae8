"""Reading the admin's files and the chroots' files without surprises.

A config file, a key file or a chroot's known_hosts can be, by mistake or
on purpose, a FIFO (reading it hangs), a device (/dev/zero never ends), a
directory, a socket, a huge file, or a symbolic link that resolves to the
server's own files when seen from outside a chroot. Rules:

- read_regular_file() returns the bytes of a regular file and nothing
  else. It stats the path first and never opens anything but a regular
  file (opening a device can have side effects), then opens it with
  O_RDONLY|O_NONBLOCK|O_CLOEXEC (a FIFO swapped in meanwhile opens without
  hanging), fstats the open file and checks it is the same regular file,
  and reads at most max_bytes + 1 bytes to tell an oversized file.
- /dev/null (the null device, by its device number) reads as empty, as
  everywhere: ``--config /dev/null`` is how an admin says "no file".
- With follow_symlinks=False a symbolic link in the last component is
  refused (O_NOFOLLOW), not followed. open_directory() walks a directory
  path below a base one component at a time with O_NOFOLLOW|O_DIRECTORY,
  so no component is a link; the fd it returns is then used with dir_fd.
- A missing file raises FileNotFoundError unchanged: callers treat missing
  as "use the defaults". Everything else that makes a file unusable raises
  UnusableFile, whose message is one line naming the path and what it is:
  ``/etc/x: is a FIFO, not a regular file``.

Imports os and stat only.
"""

import os
import stat

MODE_KINDS = (
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class UnusableFile(OSError):
    """A file that exists but cannot be used: not a regular file, too big, a link not followed, unreadable.

    A subclass of OSError because that is what it is to every caller: a
    file that cannot be read, which they already handle (skip with a
    warning, or one error line). FileNotFoundError is never wrapped, so
    ``except FileNotFoundError`` before ``except OSError`` still means
    "missing: use the defaults". str() is ``path: reason``; ``path`` and
    ``reason`` are attributes, ``errno`` is set when the system gave one.
    """

    def __init__(self, path, reason, errno=None):
        if errno is None:
            super().__init__(reason)
        else:
            super().__init__(errno, reason)
        self.path = os.fsdecode(path)
        self.reason = reason
        self.filename = self.path

    def __str__(self):
        return f"{self.path}: {self.reason}"

    def __reduce__(self):
        return (type(self), (self.path, self.reason, self.errno))


def file_kind(mode):
    """'a regular file', 'a FIFO'... for an st_mode."""
    for test, kind in MODE_KINDS:
        if test(mode):
            return kind
    return "an unknown kind of file"


def _reason_for(error):
    return error.strerror or str(error)


def is_null_device(status):
    """True for the stat of /dev/null itself (same device number), whatever its name."""
    if not stat.S_ISCHR(status.st_mode):
        return False
    try:
        return status.st_rdev == os.stat(os.devnull).st_rdev
    except OSError:  # no /dev/null to compare with (a bare chroot): no device is it
        return False


def read_regular_file(path, max_bytes, follow_symlinks=True, *, dir_fd=None, shown_as=None):
    """The bytes of the regular file at path, at most max_bytes of them.

    follow_symlinks=False refuses a symbolic link as the last component.
    dir_fd: path is relative to this open directory (see open_directory);
    shown_as: the name errors give (default: path).
    Raises FileNotFoundError when it does not exist, else UnusableFile.
    """
    shown = shown_as if shown_as is not None else os.fsdecode(path)
    try:
        before = os.stat(path, dir_fd=dir_fd, follow_symlinks=follow_symlinks)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnusableFile(shown, _reason_for(error), error.errno) from None
    if stat.S_ISLNK(before.st_mode):
        raise UnusableFile(shown, "is a symbolic link (not followed)")
    if is_null_device(before):
        return b""
    if not stat.S_ISREG(before.st_mode):
        raise UnusableFile(shown, f"is {file_kind(before.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnusableFile(shown, _reason_for(error), error.errno) from None
    try:
        opened = os.fstat(descriptor)
        if not stat.S_ISREG(opened.st_mode):
            raise UnusableFile(shown, f"is {file_kind(opened.st_mode)}, not a regular file")
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise UnusableFile(shown, "was replaced while being opened")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(descriptor, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        if isinstance(error, UnusableFile):
            raise
        raise UnusableFile(shown, _reason_for(error), error.errno) from None
    finally:
        os.close(descriptor)
    if size > max_bytes:
        raise UnusableFile(shown, f"is larger than {max_bytes} bytes")
    return b"".join(chunks)


def open_directory(base, relative, create_mode=None):
    """An fd (O_RDONLY|O_DIRECTORY) of base/relative, no component of relative being a symbolic link.

    base itself is opened normally (the admin chose it, links included);
    each component of relative ('amd64/etc/ssh') is then opened below the
    previous one with O_NOFOLLOW, so a link anywhere in it is refused, not
    followed. A missing component is created with create_mode when given
    (mkdir relative to the open parent: no link is followed there either),
    else FileNotFoundError. Other problems: UnusableFile naming the
    component's path and what it is. The caller closes the fd.
    """
    parts = [part for part in relative.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"'.' and '..' are not components of a path below a base (got {relative!r})")
    directory_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        descriptor = os.open(base, directory_flags)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise UnusableFile(base, _reason_for(error), error.errno) from None
    shown = os.fsdecode(base)
    try:
        for part in parts:
            shown = os.path.join(shown, part)
            if create_mode is not None:
                _make_directory(part, create_mode, descriptor)
            try:
                child = os.open(part, directory_flags | os.O_NOFOLLOW, dir_fd=descriptor)
            except FileNotFoundError as error:
                raise FileNotFoundError(error.errno, error.strerror, shown) from None
            except OSError as error:
                raise _directory_problem(shown, part, descriptor, error) from None
            os.close(descriptor)
            descriptor = child
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _make_directory(name, mode, parent):
    """mkdir name below the open parent; False when something of that name is already there."""
    try:
        os.mkdir(name, mode, dir_fd=parent)
    except FileExistsError:
        return False
    return True


def _directory_problem(shown, part, parent, error):
    """UnusableFile for a component that did not open as a directory: say what it is."""
    try:
        mode = os.stat(part, dir_fd=parent, follow_symlinks=False).st_mode
    except OSError:
        return UnusableFile(shown, _reason_for(error), error.errno)
    if stat.S_ISLNK(mode):
        return UnusableFile(shown, "is a symbolic link (not followed)", error.errno)
    if not stat.S_ISDIR(mode):
        return UnusableFile(shown, f"is {file_kind(mode)}, not a directory", error.errno)
    return UnusableFile(shown, _reason_for(error), error.errno)
