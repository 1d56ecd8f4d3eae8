"""The default TCP ports: one place for every component and document."""

ADVERTISE_PORT = 377  # ltsp-server-advertise: one XML document per connection
BALANCER_PORT = 8377  # ltsp-loadbalancer: the HTTP API, status page and metrics
SSH_PORT = 22  # LDM logs in over ssh; known_hosts names other ports as [host]:port
