"""The states of a server, in the two vocabularies the project uses.

- Admin states: what the server's own config says (STATE in
  ltsp-server-advertise.conf) and what the document on port 377 carries.
  Only READY takes new sessions.
- Pool states: how a client or the balancer labels a server after reading
  its document (get_hosts --status, /v1/pool, the status page). The words are
  the LTSP load-balancing spec's.
"""

READY, DRAIN, MAINT = "ready", "drain", "maint"
ADMIN_STATES = (READY, DRAIN, MAINT)

IDLE, BUSY, SWAPPED, DRAINING, FAILING, DOWN = "Idle", "Busy", "Swapped", "Drain", "Failing", "Down"
# Failing: the daemon answers but the login service behind it does not work
# (the daemon's own check, or a balancer's outlier ejection). Skipped like Down.
POOL_STATES = (IDLE, BUSY, SWAPPED, DRAINING, FAILING, DOWN)
