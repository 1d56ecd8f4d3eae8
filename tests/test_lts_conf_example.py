"""lts.conf.example, read by get_hosts' own reader, so it cannot rot."""

import pathlib

import pytest

from get_hosts.identity import Identity
from get_hosts.ltsconf import read_lts_conf
from get_hosts.settings import DEFAULT_ALGORITHM, VARIABLES, load_settings

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "lts.conf.example"

# (who, identity, {variable: expected value in the Settings})
CLIENTS = [
    (
        "any client: the site pool from [Default]",
        Identity("ws17", "198.18.0.17", "02:00:00:00:00:17", "eth0"),
        {
            "servers": ["app1", "app2", "app3", "app4", "2001:db8::10"],
            "algorithm": "two-choice",
            "max_load": 3.0,
            "max_response_ms": None,
            "timeout_ms": 1000,
            "balancers": (("198.18.0.1", 8377), ("198.18.0.2", 8377)),
            "balancer_timeout_ms": 300,
        },
    ),
    (
        "lab 2 by MAC (upper case in the file, lower case here), through LIKE",
        Identity("ws40", "198.18.0.40", "00:1a:2b:3c:4d:01", "eth0"),
        {"servers": ["lab2-app1", "lab2-app2"], "algorithm": "mac-hash", "max_load": None},
    ),
    (
        "lab 2 by a glob host name, NONE unsets the site's LB_MAX_LOAD",
        Identity("lab2-ws07", "198.18.0.41", "02:00:00:00:00:41", "eth0"),
        {"servers": ["lab2-app1", "lab2-app2"], "algorithm": "mac-hash", "max_load": None},
    ),
    (
        "the old room: stricter limits, the site pool",
        Identity("oldroom-3", "198.18.0.42", "02:00:00:00:00:42", "eth0"),
        {"servers": ["app1", "app2", "app3", "app4", "2001:db8::10"], "max_response_ms": 150, "max_load": 1.5},
    ),
    (
        "a client pinned by IP to one server, no probing",
        Identity("ws77", "198.18.0.77", "02:00:00:00:00:77", "eth0"),
        {"servers": ["app4"], "algorithm": "fixed"},
    ),
]


@pytest.mark.parametrize(("who", "identity", "expected"), CLIENTS, ids=[row[0] for row in CLIENTS])
def test_each_section_gives_its_clients_what_the_comments_say(who, identity, expected):
    settings = load_settings({}, str(EXAMPLE), identity=identity)  # strict: any bad value raises
    assert settings.warnings == []
    for field, value in expected.items():
        got = getattr(settings, field)
        if field == "servers":
            got = [entry.name for entry in got]
        assert got == value, (who, field)


def test_the_pinned_client_reaches_its_server_on_its_own_port():
    identity = Identity("ws77", "198.18.0.77", "02:00:00:00:00:77", "eth0")
    [entry] = load_settings({}, str(EXAMPLE), identity=identity).servers
    assert (entry.host, entry.port) == ("app4", 3377)


def test_every_lb_variable_is_documented_with_its_default():
    text = EXAMPLE.read_text()
    for variable in VARIABLES:
        assert f"# {variable.name}:" in text, variable.name
        assert "Default:" in text.split(f"# {variable.name}:", 1)[1].split("\n\n", 1)[0], variable.name
    assert f"Default: {DEFAULT_ALGORITHM}." in text


def test_the_xdmcp_kiosk_section_reads():
    values = read_lts_conf(str(EXAMPLE), Identity("kiosk1", None, None, None))
    assert values["SCREEN_07"] == "xdmcp"
    assert values["LB_SERVERS"] == "app1 app2"
