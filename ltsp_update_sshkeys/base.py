"""Which directory holds the chroots: --base, else the one the installed LTSP uses.

With LTSP 20+ (its ltsp command is installed, or --ltsp-conf names its
ltsp.conf): the BASE_DIR that ltsp.conf sets on the server, as LTSP's own
shell would set it (get_hosts.ltspconf: lines before any section, [common],
[server] and the sections their INCLUDE= lines name, shell quoting), else
/srv/ltsp. Otherwise /opt/ltsp (LTSP 5) when it exists, else /srv/ltsp when
it exists. default_base() takes a root that tests point at a temporary tree.
"""

import os

from get_hosts.ltspconf import LtspConfError, ltsp_conf_server_entries
from ltsp_lbcore.files import read_regular_file
from ltsp_update_sshkeys.files import MAX_CONFIG_BYTES
from ltsp_update_sshkeys.messages import PROG, SshKeysError, shown

LTSP5_BASE = "/opt/ltsp"
LTSP20_BASE = "/srv/ltsp"
# LTSP 20+ installs its one command here (/usr/sbin/ltsp links to it); LTSP 5 has no such file.
LTSP20_COMMANDS = ("/usr/share/ltsp/ltsp", "/usr/sbin/ltsp")
LTSP20_CONF = "/etc/ltsp/ltsp.conf"
# LTSP 20+'s `ltsp initrd` copies /etc/ltsp into ltsp.img; its login (pamltsp) reads this file.
LTSP20_INITRD_KNOWN_HOSTS = "/etc/ltsp/ssh_known_hosts"
# LTSP 5's ltsp-build-client marks each chroot with this file; its NBD images are rebuilt by this command.
LTSP5_CHROOT_MARK = "etc/ltsp_chroot"
LTSP5_UPDATE_IMAGE = "/usr/sbin/ltsp-update-image"
LTSP5, LTSP20 = "LTSP 5", "LTSP 20+"


def under(root, path):
    """path (absolute) seen below root: tests point root at a temporary directory."""
    return os.path.join(root, path.lstrip("/")) if root != "/" else path


def ltsp20_installed(root="/"):
    """The ltsp command of LTSP 20+, or None."""
    for command in LTSP20_COMMANDS:
        if os.path.isfile(under(root, command)):
            return command
    return None


def ltsp_conf_base_dir(path, must_exist=False):
    """BASE_DIR as the ltsp command sets it on the server from the ltsp.conf at path: (value, line) or None.

    None when the file does not set it (or is missing and need not exist).
    SshKeysError when it cannot be read, or the value is not known here
    (shell expansion, a command) or not an absolute path.
    """
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        if must_exist:
            raise SshKeysError(f"cannot read ltsp.conf {path}: no such file") from None
        return None
    except OSError as error:
        raise SshKeysError(f"cannot read BASE_DIR from {error}; give --base") from None
    try:
        entries = ltsp_conf_server_entries(data, path)
    except LtspConfError as error:
        raise SshKeysError(f"cannot read BASE_DIR from {error}; give --base") from None
    if "BASE_DIR" in entries.unknown:
        raise SshKeysError(f"cannot tell BASE_DIR: {entries.why_unknown['BASE_DIR']}; give --base")
    entry = entries.get("BASE_DIR")
    if entry is None:
        return None
    if not entry.value.startswith("/"):
        raise SshKeysError(
            f"cannot tell BASE_DIR from {path}:{entry.lineno} ({entry.value!r} is not an absolute path); give --base"
        )
    return entry.value, entry.lineno


def default_base(root="/", ltsp_conf=None):
    """(base, why) for the installed LTSP; see the module rules. ltsp_conf: --ltsp-conf (LTSP 20+, must exist)."""
    command = ltsp20_installed(root)
    if command or ltsp_conf is not None:
        conf = ltsp_conf if ltsp_conf is not None else under(root, LTSP20_CONF)
        setting = ltsp_conf_base_dir(conf, must_exist=ltsp_conf is not None)
        if setting:
            value, number = setting
            return under(root, value), f"LTSP 20+: BASE_DIR in {conf}:{number}"
        if command:
            return under(root, LTSP20_BASE), f"LTSP 20+ is installed ({command})"
        return under(root, LTSP20_BASE), f"LTSP 20+: no BASE_DIR in {conf}"
    if os.path.isdir(under(root, LTSP5_BASE)):
        return under(root, LTSP5_BASE), "LTSP 5 layout"
    if os.path.isdir(under(root, LTSP20_BASE)):
        return under(root, LTSP20_BASE), f"LTSP 20+ layout ({LTSP5_BASE} does not exist)"
    return under(root, LTSP5_BASE), f"neither {LTSP5_BASE} (LTSP 5) nor {LTSP20_BASE} (LTSP 20+) exists"


def choose_base(base, ltsp_conf, reporter):
    """The base to use: --base as given, else default_base()'s, which must exist."""
    if base is not None:
        return base
    base, why = default_base(ltsp_conf=ltsp_conf)
    if not os.path.isdir(base):
        hint = f"; for LTSP 20+ images use --export {LTSP20_INITRD_KNOWN_HOSTS}, then ltsp initrd"
        raise SshKeysError(f"base directory {shown(base)} does not exist ({why}): give --base{hint}")
    reporter.info(f"base {shown(base)} ({why})")
    return base


def base_flavour(base, chroots, ltsp_conf=None, root="/"):
    """LTSP5, LTSP20 or None (cannot tell) for the chroots just written under base.

    The chroot's own mark first (LTSP 5's etc/ltsp_chroot), then what is
    installed (LTSP 20+'s ltsp, or --ltsp-conf given; LTSP 5's
    ltsp-update-image), then the base's usual path.
    """
    if any(os.path.isfile(os.path.join(base, chroot, LTSP5_CHROOT_MARK)) for chroot in chroots):
        return LTSP5
    if ltsp_conf is not None or ltsp20_installed(root):
        return LTSP20
    if os.path.isfile(under(root, LTSP5_UPDATE_IMAGE)):
        return LTSP5
    real = os.path.realpath(base)
    for path, flavour in ((under(root, LTSP5_BASE), LTSP5), (under(root, LTSP20_BASE), LTSP20)):
        if real == os.path.realpath(path):
            return flavour
    return None


def rebuild_hint(flavour, chroots):
    """What the admin runs so that clients booting images see the new keys, for FLAVOUR (None: both said)."""
    names = " ".join(chroots)
    ltsp20 = f"ltsp image {names} (or, for every image without a rebuild: {PROG} --export "
    ltsp20 += f"{LTSP20_INITRD_KNOWN_HOSTS} && ltsp initrd)"
    if flavour == LTSP20:
        return ltsp20
    if flavour == LTSP5:
        return f"ltsp-update-image {names} (LTSP 5 NBD images)"
    return f"{ltsp20} on LTSP 20+; ltsp-update-image {names} on LTSP 5"
