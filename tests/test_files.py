"""ltsp_lbcore.files over the family of file types and link placements, on real files. Nothing is mocked."""

import errno
import os
import pickle
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading

import pytest
from machine import ROOT

from ltsp_lbcore.files import UnusableFile, file_kind, open_directory, read_regular_file

MAX = 64
TEXT = b"server ssh-ed25519 AAAA\n"


def make(tmp_path, kind):
    """Create tmp_path/'f' as one member of the family; return its path."""
    path = tmp_path / "f"
    target = tmp_path / "target"
    if kind == "regular":
        path.write_bytes(TEXT)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "exactly max":
        path.write_bytes(b"x" * MAX)
    elif kind == "oversize":
        path.write_bytes(b"x" * (MAX + 1))
    elif kind == "huge":
        with open(path, "wb") as huge:
            huge.truncate(1 << 30)  # sparse: a gigabyte that costs nothing
    elif kind == "symlink to regular":
        target.write_bytes(TEXT)
        path.symlink_to(target)
    elif kind == "relative symlink to regular":
        target.write_bytes(TEXT)
        path.symlink_to("target")
    elif kind == "symlink to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "symlink to /dev/null":
        path.symlink_to("/dev/null")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink to fifo":
        os.mkfifo(target)
        path.symlink_to(target)
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink to directory":
        target.mkdir()
        path.symlink_to(target)
    elif kind == "socket":
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(path))
    elif kind == "symlink to socket":
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(str(target))
        path.symlink_to(target)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nothing")
    elif kind == "symlink loop":
        path.symlink_to(path)
    elif kind == "missing":
        pass
    else:
        raise AssertionError(kind)
    return path


# (kind, with follow_symlinks=True, with follow_symlinks=False): bytes, or the reason after "path: ", or an exception.
LINK = "is a symbolic link (not followed)"
FAMILY = [
    ("regular", TEXT, TEXT),
    ("empty", b"", b""),
    ("exactly max", b"x" * MAX, b"x" * MAX),
    ("oversize", f"is larger than {MAX} bytes", f"is larger than {MAX} bytes"),
    ("huge", f"is larger than {MAX} bytes", f"is larger than {MAX} bytes"),
    ("symlink to regular", TEXT, LINK),
    ("relative symlink to regular", TEXT, LINK),
    ("symlink to /dev/zero", "is a character device, not a regular file", LINK),
    ("symlink to /dev/null", b"", LINK),
    ("fifo", "is a FIFO, not a regular file", "is a FIFO, not a regular file"),
    ("symlink to fifo", "is a FIFO, not a regular file", LINK),
    ("directory", "is a directory, not a regular file", "is a directory, not a regular file"),
    ("symlink to directory", "is a directory, not a regular file", LINK),
    ("socket", "is a socket, not a regular file", "is a socket, not a regular file"),
    ("symlink to socket", "is a socket, not a regular file", LINK),
    ("dangling symlink", FileNotFoundError, LINK),
    ("symlink loop", "Too many levels of symbolic links", LINK),
    ("missing", FileNotFoundError, FileNotFoundError),
]


def read_in_thread(path, follow_symlinks):
    """read_regular_file in a thread that must end within 10 s (a FIFO read would hang forever)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = read_regular_file(path, MAX, follow_symlinks)
        except Exception as error:  # the test looks at which
            outcome["value"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), f"reading {path} hangs"
    return outcome["value"]


@pytest.mark.parametrize("follow_symlinks", [True, False], ids=["follow", "nofollow"])
@pytest.mark.parametrize(("kind", "followed", "not_followed"), FAMILY, ids=[row[0] for row in FAMILY])
def test_the_family_of_file_types(tmp_path, kind, followed, not_followed, follow_symlinks):
    path = make(tmp_path, kind)
    expected = followed if follow_symlinks else not_followed

    got = read_in_thread(str(path), follow_symlinks)

    if isinstance(expected, bytes):
        assert got == expected
    elif expected is FileNotFoundError:
        assert type(got) is FileNotFoundError
    else:
        assert isinstance(got, UnusableFile), got
        assert str(got) == f"{path}: {expected}"
        assert "\n" not in str(got)


def test_dev_zero_and_dev_null_themselves():
    with pytest.raises(UnusableFile) as raised:
        read_regular_file("/dev/zero", MAX)
    assert str(raised.value) == "/dev/zero: is a character device, not a regular file"
    assert read_regular_file("/dev/null", MAX) == b""


def test_unusable_file_is_an_oserror_but_never_a_missing_file(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UnusableFile) as raised:
        read_regular_file(tmp_path / "fifo", MAX)
    error = raised.value
    assert isinstance(error, OSError)
    assert not isinstance(error, FileNotFoundError)
    assert (error.path, error.reason, error.filename) == (
        str(tmp_path / "fifo"),
        "is a FIFO, not a regular file",
        error.path,
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy)) == (UnusableFile, str(error))


def test_an_os_error_keeps_its_errno_and_strerror(tmp_path):
    path = make(tmp_path, "symlink loop")
    with pytest.raises(UnusableFile) as raised:
        read_regular_file(path, MAX)
    assert raised.value.errno == errno.ELOOP


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(
    os.geteuid() == 0 and not os.path.exists(SYSTEM_PYTHON), reason=f"root reads any file, and no {SYSTEM_PYTHON}"
)
def test_permission_denied_names_the_path():
    """As root, the reader runs as nobody (a file of mode 0 in a directory anyone may enter)."""
    directory = tempfile.mkdtemp(prefix="unreadable.", dir="/tmp")
    try:
        os.chmod(directory, 0o755)
        path = os.path.join(directory, "secret")
        with open(path, "wb") as secret:
            secret.write(TEXT)
        os.chmod(path, 0)
        code = (
            "from ltsp_lbcore.files import UnusableFile, read_regular_file\n"
            f"try:\n    read_regular_file({path!r}, {MAX})\n"
            "except UnusableFile as error:\n    print(error, error.errno)\n"
        )
        as_nobody = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
        done = subprocess.run(
            [SYSTEM_PYTHON if os.geteuid() == 0 else sys.executable, "-S", "-c", code],
            env={"PYTHONPATH": ROOT, "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **as_nobody,
        )
        assert (done.stdout, done.stderr) == (f"{path}: Permission denied {errno.EACCES}\n", "")
    finally:
        shutil.rmtree(directory)


def test_relative_to_an_open_directory_with_the_name_errors_show(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "known_hosts").write_bytes(TEXT)
    os.mkfifo(tmp_path / "d" / "fifo")
    directory = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert read_regular_file("known_hosts", MAX, False, dir_fd=directory) == TEXT
        with pytest.raises(UnusableFile) as raised:
            read_regular_file("fifo", MAX, False, dir_fd=directory, shown_as="/srv/ltsp/x/fifo")
        assert str(raised.value) == "/srv/ltsp/x/fifo: is a FIFO, not a regular file"
    finally:
        os.close(directory)


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        (stat.S_IFREG, "a regular file"),
        (stat.S_IFDIR, "a directory"),
        (stat.S_IFLNK, "a symbolic link"),
        (stat.S_IFIFO, "a FIFO"),
        (stat.S_IFCHR, "a character device"),
        (stat.S_IFBLK, "a block device"),
        (stat.S_IFSOCK, "a socket"),
        (0, "an unknown kind of file"),
    ],
)
def test_file_kind(mode, kind):
    assert file_kind(mode | 0o644) == kind


# ---------------------------------------------------------------- open_directory: link placements


def chroot_tree(tmp_path, placement):
    """base/amd64/etc/ssh with one component replaced as placement says; returns (base, outside dir)."""
    base = tmp_path / "base"
    outside = tmp_path / "outside"
    (outside / "etc" / "ssh").mkdir(parents=True)
    chroot = base / "amd64"
    if placement == "chroot is a symlink":
        base.mkdir()
        chroot.symlink_to(outside)
        return base, outside
    (chroot / "etc").mkdir(parents=True)
    if placement == "etc is a symlink":
        (chroot / "etc").rmdir()
        (chroot / "etc").symlink_to(outside / "etc")
    elif placement == "etc/ssh is a symlink":
        (chroot / "etc" / "ssh").symlink_to(outside / "etc" / "ssh")
    elif placement == "etc/ssh is a relative symlink":
        (chroot / "etc" / "ssh").symlink_to("../../../outside/etc/ssh")
    elif placement == "etc/ssh is a dangling symlink":
        (chroot / "etc" / "ssh").symlink_to("/nonexistent")
    elif placement == "etc/ssh is a file":
        (chroot / "etc" / "ssh").write_text("")
    elif placement == "etc/ssh is a fifo":
        os.mkfifo(chroot / "etc" / "ssh")
    elif placement == "etc/ssh is missing":
        pass
    elif placement == "all real":
        (chroot / "etc" / "ssh").mkdir()
    else:
        raise AssertionError(placement)
    return base, outside


PLACEMENTS = [
    # (placement, the reason, the component it names); None: opens
    ("all real", None, None),
    ("etc/ssh is missing", None, None),  # created (create_mode given)
    ("chroot is a symlink", "is a symbolic link (not followed)", "amd64"),
    ("etc is a symlink", "is a symbolic link (not followed)", "amd64/etc"),
    ("etc/ssh is a symlink", "is a symbolic link (not followed)", "amd64/etc/ssh"),
    ("etc/ssh is a relative symlink", "is a symbolic link (not followed)", "amd64/etc/ssh"),
    ("etc/ssh is a dangling symlink", "is a symbolic link (not followed)", "amd64/etc/ssh"),
    ("etc/ssh is a file", "is a regular file, not a directory", "amd64/etc/ssh"),
    ("etc/ssh is a fifo", "is a FIFO, not a directory", "amd64/etc/ssh"),
]


@pytest.mark.parametrize(("placement", "reason", "component"), PLACEMENTS, ids=[row[0] for row in PLACEMENTS])
def test_open_directory_never_follows_a_link_below_the_base(tmp_path, placement, reason, component):
    base, outside = chroot_tree(tmp_path, placement)
    before = sorted(str(path.relative_to(outside)) for path in outside.rglob("*"))

    if reason is None:
        descriptor = open_directory(str(base), "amd64/etc/ssh", create_mode=0o755)
        try:
            assert os.path.samestat(os.fstat(descriptor), os.stat(base / "amd64" / "etc" / "ssh"))
        finally:
            os.close(descriptor)
    else:
        with pytest.raises(UnusableFile) as raised:
            os.close(open_directory(str(base), "amd64/etc/ssh", create_mode=0o755))
        assert str(raised.value) == f"{base / component}: {reason}"
    assert sorted(str(path.relative_to(outside)) for path in outside.rglob("*")) == before  # nothing made there


def test_open_directory_without_create_mode_reports_the_missing_path(tmp_path):
    (tmp_path / "amd64" / "etc").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as raised:
        open_directory(str(tmp_path), "amd64/etc/ssh")
    assert raised.value.filename == str(tmp_path / "amd64" / "etc" / "ssh")
    assert not (tmp_path / "amd64" / "etc" / "ssh").exists()


def test_the_base_itself_may_be_a_link(tmp_path):
    (tmp_path / "real" / "amd64" / "etc").mkdir(parents=True)
    (tmp_path / "opt_ltsp").symlink_to(tmp_path / "real")
    os.close(open_directory(str(tmp_path / "opt_ltsp"), "amd64/etc"))


@pytest.mark.parametrize("relative", ["../x", "amd64/../../x", "./amd64"])
def test_open_directory_refuses_dot_components(tmp_path, relative):
    with pytest.raises(ValueError, match="are not components of a path below a base"):
        open_directory(str(tmp_path), relative)


def test_no_descriptor_leaks(tmp_path):
    base, _ = chroot_tree(tmp_path, "etc/ssh is a symlink")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with pytest.raises(UnusableFile):
            open_directory(str(base), "amd64/etc/ssh")
        with pytest.raises(UnusableFile):
            read_regular_file(make_fifo_once(tmp_path), MAX)
    assert len(os.listdir("/proc/self/fd")) == before


def make_fifo_once(tmp_path):
    path = tmp_path / "leak_fifo"
    if not path.exists():
        os.mkfifo(path)
    return path
