"""ltsp-update-sshkeys: make every thin client trust every server's SSH host key.

Rules (the man page, docs/man/ltsp-update-sshkeys.8, says the same for admins):

- Servers come from the extraservers file (default /etc/ltsp/extraservers;
  ``host``, ``host:port``, ``[v6addr]:port`` or a bare IPv6 address a line,
  ``#`` comments, blank lines) and from the command line. Every server and
  every --own-name goes through ltsp_lbcore.hostport: only a host name, an
  IPv4 or IPv6 address (a zone being a plain interface name) and a port
  1-65535 in ASCII digits ever reach a file or a command line. A missing
  default file means no extra servers; a bad line is a warning naming
  file:line and the value, and is skipped. A bad command-line server or own
  name is an error.
- Keys are fetched with one ``ssh-keyscan -t rsa,ecdsa,ed25519`` process per
  server, all at once, each killed at --timeout + KEYSCAN_SLACK_SECONDS.
- Each server is named as ssh names it in known_hosts: ``host`` for port 22,
  ``[host]:port`` otherwise; host names are lower-cased without a trailing
  dot and IPv6 addresses written one way, so a server listed twice is
  scanned once.
- This server's own keys (/etc/ssh/ssh_host_*_key.pub) are named ``server``
  (the LTSP default for SERVER and LDM_SERVER), socket.gethostname(), its
  short form, the addresses `hostname -I` prints (no packets sent) and every
  --own-name.
- The base: --base, else the one the installed LTSP uses: with LTSP 20+
  (its ``ltsp`` command, /usr/share/ltsp/ltsp, is installed, or --ltsp-conf
  names its ltsp.conf) the BASE_DIR that ltsp.conf sets on the server, as
  LTSP's own shell would (lines before any section, [common], [server], their
  INCLUDE= sections; get_hosts.ltspconf evaluates it), else /srv/ltsp; else
  /opt/ltsp (LTSP 5) if it exists, else /srv/ltsp if it exists.
  base.default_base() decides, below a root that tests point elsewhere.
- A chroot is a real directory (not a symlink) directly under the base
  that has ``etc``; ``images`` (LTSP's squashfs store) and names starting
  with ``.`` are never chroots. No symbolic link below the base is ever
  followed: a chroot that is a symlink, or whose etc, etc/ssh or
  etc/ssh/ssh_known_hosts is a symlink or not a directory / regular file,
  is skipped with a warning naming the path (resolved from outside the
  chroot, a link would lead into the server's own files). etc/ssh is
  created when missing. Squashfs images cannot be written in place: the
  admin rebuilds them (``ltsp image``) or ships --export's file in
  ltsp.img (``ltsp initrd``); --help says how.
- Every chroot gets the same etc/ssh/ssh_known_hosts (see the last-known
  rule for the one exception): a fixed header, the own keys, then the extra
  servers by name; keys sorted, so the bytes depend only on the keys. Files
  are written beside and renamed (a reader never sees half a file), mode
  0644, and left untouched (bytes and mtime) when unchanged. A file is
  never written or chmod-ed through a symlink: the rename replaces the
  directory entry itself.
- Last known keys (policy.py). A server that does not answer keeps the keys
  the cache (default /etc/ltsp/ssh_known_hosts.auto, the file LTSP5 used for
  scanned keys) records for it. When the cache has none, each chroot keeps
  the keys its own current ssh_known_hosts has for that server, for that
  chroot only: one chroot's file never puts keys into another chroot or
  into the cache, which records only keys that ssh-keyscan fetched. The
  cache and chroot files are read as regular files only, never through a
  symlink, at most MAX_KNOWN_HOSTS_BYTES. A silent server is named on
  stderr and the exit status is 1, after everything else has been written.
- --export FILE (``-`` for stdout) writes the same known_hosts text (last
  known keys from the cache only) and touches neither the chroots nor the
  cache.

Exit status: 0 all done, 1 some server did not answer (everything else was
written), 2 an error (one ``ltsp-update-sshkeys: error: ...`` line).

Modules, one concern each: messages (the error type, stderr), names (servers
as ssh names them), keys (known_hosts text, no I/O), policy (which keys each
host keeps, no I/O), scan (ssh-keyscan), ownnames (this server's names),
files (safe reads, atomic writes), base (which directory holds the chroots),
chroots (finding and writing them), cli (options and the run).
"""
