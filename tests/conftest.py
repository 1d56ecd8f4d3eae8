"""Fixtures shared by the test files."""

import pytest
from fakeservers import FakeServer


@pytest.fixture
def serve():
    """serve(behaviour, host=...) starts a FakeServer (a real listening socket); all are closed after the test."""
    made = []

    def start(behaviour, host="127.0.0.1", **kwargs):
        server = FakeServer(behaviour, host, **kwargs)
        made.append(server)
        return server

    yield start
    for server in made:
        server.close()
