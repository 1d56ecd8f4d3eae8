"""Where the listening sockets come from: bound here, or handed over by systemd.

Rules:

- ``bind_all`` turns config addresses ((host, port) pairs) into listening,
  non-blocking TCP sockets, IPv4 and IPv6. ``host`` '' means every address of
  both families (two sockets). An IPv6 socket is IPV6_V6ONLY, so ``[::]:377``
  and ``0.0.0.0:377`` (the default pair) bind side by side on every kernel,
  whatever net.ipv6.bindv6only says.
- Any failure to bind is an ServiceError naming the address and the reason,
  and sockets bound so far are closed. The one exception: an address of a
  family the kernel does not have (IPv6 disabled at boot) is skipped with a
  warning, as long as some address could be bound.
- ``from_systemd`` implements sd_listen_fds(3) itself (no python-systemd):
  only when LISTEN_PID is this process, LISTEN_FDS sockets from fd 3; the
  variables are then removed so no child inherits them. Every passed fd must
  be a listening TCP socket, else ServiceError.
- ``notify`` implements sd_notify(3): one datagram to $NOTIFY_SOCKET, silently
  nothing when not run by systemd's Type=notify.
"""

import errno
import logging
import os
import socket

from ltsp_lbcore.errors import ServiceError
from ltsp_lbcore.hostport import format_host_port

log = logging.getLogger(__name__)

# The kernel clamps this to net.core.somaxconn (4096 on current kernels). A
# morning storm sends about 1,400 SYNs at once; a short queue drops SYNs and
# the client retries only after a second, longer than its whole deadline.
LISTEN_BACKLOG = 4096
SD_LISTEN_FDS_START = 3


def describe(sock):
    """'127.0.0.1:377' or '[::1]:377' for a bound socket."""
    host, port = sock.getsockname()[:2]
    return format_host_port(host, port)


def _resolve(host, port):
    """(host, port) -> list of (family, sockaddr) to bind."""
    if host == "":
        return [(socket.AF_INET6, ("::", port, 0, 0)), (socket.AF_INET, ("0.0.0.0", port))]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ServiceError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    seen = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and (family, sockaddr) not in seen:
            seen.append((family, sockaddr))
    return seen


def _bind_one(family, sockaddr):
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def bind_all(addresses):
    """Config addresses -> list of listening sockets. ServiceError if any fails."""
    sockets = []
    try:
        for host, port in addresses:
            for family, sockaddr in _resolve(host, port):
                shown = format_host_port(sockaddr[0], port)
                try:
                    sockets.append(_bind_one(family, sockaddr))
                except OSError as error:
                    if error.errno == errno.EAFNOSUPPORT:
                        # A kernel booted with ipv6.disable=1: the default
                        # [::]:377 must not keep 0.0.0.0:377 from serving.
                        log.warning("not listening on %s: %s", shown, error.strerror)
                        continue
                    hint = (
                        " (port below 1024: run as root or with CAP_NET_BIND_SERVICE)"
                        if error.errno == errno.EACCES
                        else ""
                    )
                    raise ServiceError(f"cannot listen on {shown}: {error.strerror}{hint}") from None
        if not sockets:
            raise ServiceError("no address to listen on could be bound")
    except ServiceError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def from_systemd(environ=os.environ):
    """The sockets systemd passed (socket activation), or [] when there are none."""
    pid_text = environ.get("LISTEN_PID", "")
    count_text = environ.get("LISTEN_FDS", "")
    if not pid_text or not count_text:
        return []
    if not (pid_text.isdigit() and int(pid_text) == os.getpid()):
        # Meant for another process (we were started by the one it named).
        return []
    if not count_text.isdigit() or int(count_text) < 1:
        raise ServiceError(f"LISTEN_FDS is not a positive count (got {count_text!r})")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count_text)):
        try:
            sock = socket.socket(fileno=fd)
        except OSError as error:
            raise ServiceError(f"socket activation: fd {fd} is not a socket: {error.strerror}") from None
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6) or not listening:
            raise ServiceError(f"socket activation: fd {fd} is not a listening TCP socket (use ListenStream=)")
        os.set_inheritable(fd, False)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def notify(state, environ=os.environ):
    """Tell systemd (Type=notify) our state, e.g. 'READY=1'; nothing without systemd."""
    address = environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError as error:
        log.warning("cannot notify systemd (%s): %s", state, error.strerror)
