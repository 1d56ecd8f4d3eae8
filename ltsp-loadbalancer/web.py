"""The admin's view: the status page and the Prometheus metrics (issue 12 fills this in)."""


def extra_routes(balancer, poller):
    """(tornado routes, log_function) to add to the API's application."""
    return [], None
