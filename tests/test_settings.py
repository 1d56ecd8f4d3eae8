"""LB_* settings: the table, converters, pool parsing, environment before lts.conf. Real files, no mocks."""

import os
import socket
import textwrap

import pytest
from machine import run_python_without_site

from get_hosts.errors import GetHostsError
from get_hosts.identity import Identity
from get_hosts.ltsconf import LtsConfError
from get_hosts.settings import (
    DEFAULT_ALGORITHM,
    DEFAULT_LTS_CONF,
    VARIABLES,
    PoolEntry,
    Settings,
    load_settings,
    parse_pool,
    variables_help,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = Identity("ltsp12", "198.18.10.12", "00:1a:2b:3c:4d:5e", "eth0")


def conf(tmp_path, text, name="lts.conf"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load(environ, path=None, identity=CLIENT, **kwargs):
    return load_settings(environ, path, identity, **kwargs)


# --- pool parsing ---

P = PoolEntry

POOL = [
    ("app1", [P("app1", "app1", 377)], []),
    ("app1 app2", [P("app1", "app1", 377), P("app2", "app2", 377)], []),
    ("  app1\tapp2\n ", [P("app1", "app1", 377), P("app2", "app2", 377)], []),
    ("app1:3377", [P("app1", "app1", 3377)], []),
    ("App-1.school.example_x", [P("App-1.school.example_x", "App-1.school.example_x", 377)], []),
    ("198.18.0.1:1", [P("198.18.0.1", "198.18.0.1", 1)], []),
    ("a:65535", [P("a", "a", 65535)], []),
    ("[2001:db8::10]:3377", [P("2001:db8::10", "2001:db8::10", 3377)], []),
    ("[2001:db8::10]", [P("2001:db8::10", "2001:db8::10", 377)], []),
    ("2001:db8::10", [P("2001:db8::10", "2001:db8::10", 377)], []),
    ("::1", [P("::1", "::1", 377)], []),
    ("fe80::1%eth0", [P("fe80::1%eth0", "fe80::1%eth0", 377)], []),
    ("[fe80::1%eth0]:9", [P("fe80::1%eth0", "fe80::1%eth0", 9)], []),
    ("::ffff:198.18.0.1", [P("::ffff:198.18.0.1", "::ffff:198.18.0.1", 377)], []),
    ("", [], []),
    ("a:0", [], ["'a:0': port 0 is out of range (1-65535)"]),
    ("a:65536", [], ["'a:65536': port 65536 is out of range"]),
    ("a:", [], ["'a:': port '' is not a number"]),
    ("a:x1", [], ["'a:x1': port 'x1' is not a number"]),
    ("a:-1", [], ["'a:-1': port '-1' is not a number"]),
    (":377", [], ["':377': no host"]),
    ("[]:377", [], ["'[]:377': empty brackets"]),
    ("[]", [], ["'[]': empty brackets"]),
    ("[::1", [], ["'[::1': '[' without ']'"]),
    ("[::1]377", [], ["'[::1]377': '377' after ']'"]),
    ("[::1]:0", [], ["'[::1]:0': port 0 is out of range"]),
    ("[app1]:377", [], ["'[app1]:377': brackets are for IPv6 addresses"]),
    ("2001:db8::zz", [], ["'2001:db8::zz': not an IPv6 address"]),
    ("1:2:3", [], ["'1:2:3': not an IPv6 address"]),
    ("fe80::1%", [], ["'fe80::1%': bad IPv6 zone"]),
    ("-oProxyCommand=x", [], ["'-oProxyCommand=x': '=' is not allowed in a host name"]),
    ("-app", [], ["'-app': a host name cannot start with '-' or '.'"]),
    (".app", [], ["'.app': a host name cannot start with '-' or '.'"]),
    ("app;rm", [], ["'app;rm': ';' is not allowed in a host name"]),
    ("app,app2", [], ["'app,app2': ',' is not allowed in a host name"]),
    ("sérveur", [], ["'sérveur': 'é' is not allowed in a host name"]),
    ("a" * 254, [], ["host name longer than 253 characters"]),
    ("app1 bad:port app2", [P("app1", "app1", 377), P("app2", "app2", 377)], ["'bad:port'"]),
    ("app1 app1", [P("app1", "app1", 377)], ["'app1': same server as 'app1'"]),
    ("app1 APP1:377", [P("app1", "app1", 377)], ["'APP1:377': same server as 'app1'"]),
    ("app1 app1:378", [P("app1", "app1", 377), P("app1", "app1", 378)], []),
    ("::1 [0::1]:377", [P("::1", "::1", 377)], ["'[0::1]:377': same server as '::1'"]),
]


@pytest.mark.parametrize(("text", "entries", "warnings"), POOL, ids=[p[0][:30] or "empty" for p in POOL])
def test_parse_pool(text, entries, warnings):
    got, got_warnings = parse_pool(text, 377)
    assert got == entries
    assert len(got_warnings) == len(warnings)
    for warning, expected in zip(got_warnings, warnings):
        assert warning.startswith("skipping pool entry ")
        assert expected in warning


def test_pool_port_default_comes_from_the_caller():
    assert parse_pool("a b:5", 3377)[0] == [P("a", "a", 3377), P("b", "b", 5)]


# --- converters, through load_settings so the messages are the real ones ---

GOOD = [
    ("LB_ALGORITHM", "Mac-Hash", "algorithm", "mac-hash"),
    ("LB_ALGORITHM", " fixed ", "algorithm", "fixed"),
    ("LB_ALGORITHM", "no-such-one", "algorithm", "no-such-one"),  # the chooser validates names
    ("LB_PORT", "3377", "port", 3377),
    ("LB_PORT", "65535", "port", 65535),
    ("LB_TIMEOUT", "250", "timeout_ms", 250),
    ("LB_TIMEOUT", " 1 ", "timeout_ms", 1),
    ("LB_MAX_RESPONSE_MS", "150", "max_response_ms", 150),
    ("LB_MAX_RESPONSE_MS", "none", "max_response_ms", None),
    ("LB_MAX_LOAD", "1.5", "max_load", 1.5),
    ("LB_MAX_LOAD", "2", "max_load", 2.0),
    ("LB_MAX_LOAD", "0", "max_load", 0.0),
    ("LB_MAX_LOAD", ".5", "max_load", 0.5),
    ("LB_MAX_LOAD", "None", "max_load", None),
    ("LB_STATE_DIR", " /run/ltsp/lb ", "state_dir", "/run/ltsp/lb"),
    ("LB_RETRY_SECONDS", "0", "retry_seconds", 0),
    ("LB_RETRY_SECONDS", "120", "retry_seconds", 120),
]
for word, value in [("True", True), ("FALSE", False), ("y", True), ("N", False), ("Yes", True), ("no", False)]:
    GOOD.append(("LB_SKIP_SWAPPING", word, "skip_swapping", value))
GOOD += [("LB_SKIP_SWAPPING", "1", "skip_swapping", True), ("LB_SKIP_SWAPPING", "0", "skip_swapping", False)]


@pytest.mark.parametrize(("name", "text", "field", "value"), GOOD)
def test_converter_accepts(name, text, field, value):
    settings = load({"SERVER": "s", name: text})
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)


BAD = [
    ("LB_TIMEOUT", "abc", "is not a whole number of milliseconds"),
    ("LB_TIMEOUT", "1.5", "is not a whole number of milliseconds"),
    ("LB_TIMEOUT", "-5", "is not a whole number of milliseconds"),
    ("LB_TIMEOUT", "0", "is not a positive number of milliseconds"),
    ("LB_TIMEOUT", "1000ms", "is not a whole number of milliseconds"),
    ("LB_TIMEOUT", "١٠٠", "is not a whole number of milliseconds"),  # non-ASCII digits
    ("LB_PORT", "0", "is not a port (1-65535)"),
    ("LB_PORT", "70000", "is not a port (1-65535)"),
    ("LB_PORT", "ssh", "is not a whole number of port"),
    ("LB_MAX_RESPONSE_MS", "fast", "is not a whole number of milliseconds"),
    ("LB_MAX_RESPONSE_MS", "0", "is not a positive number of milliseconds"),
    ("LB_MAX_LOAD", "high", "is not a load average per CPU"),
    ("LB_MAX_LOAD", "-1", "is not a load average per CPU"),
    ("LB_MAX_LOAD", "nan", "is not a load average per CPU"),
    ("LB_MAX_LOAD", "inf", "is not a load average per CPU"),
    ("LB_MAX_LOAD", "1e3", "is not a load average per CPU"),
    ("LB_SKIP_SWAPPING", "maybe", "is not a boolean"),
    ("LB_SKIP_SWAPPING", "2", "is not a boolean"),
    ("LB_STATE_DIR", "run/ltsp", "is not an absolute directory path"),
    ("LB_RETRY_SECONDS", "-1", "is not a whole number of seconds"),
    ("LB_RETRY_SECONDS", "90000", "is more than 86400 seconds (a day)"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD)
def test_converter_rejects_naming_variable_source_and_value(name, text, message):
    with pytest.raises(GetHostsError) as caught:
        load({"SERVER": "s", name: text})
    assert str(caught.value).startswith(f"{name} in the environment: {text!r} {message}")


def test_bad_value_in_lts_conf_names_file_and_line(tmp_path):
    path = conf(tmp_path, "[Default]\nSERVER = s\n\nLB_TIMEOUT = abc\n")
    with pytest.raises(GetHostsError) as caught:
        load({}, path)
    assert str(caught.value) == f"LB_TIMEOUT in {path}:4: 'abc' is not a whole number of milliseconds"


def test_bad_value_from_an_included_file_names_that_file(tmp_path):
    inner = conf(tmp_path, "LB_PORT = 99999\n", "inc.conf")
    path = conf(tmp_path, "[Default]\nSERVER = s\ninclude inc.conf\n")
    with pytest.raises(GetHostsError, match=rf"^LB_PORT in {inner}:1: '99999' is not a port"):
        load({}, path)


def test_not_strict_turns_bad_values_into_warnings_and_defaults():
    settings = load({"SERVER": "s", "LB_TIMEOUT": "abc", "LB_SKIP_SWAPPING": "maybe"}, strict=False)
    assert settings.timeout_ms == 1000
    assert settings.skip_swapping is True
    assert settings.warnings == [
        "LB_TIMEOUT in the environment: 'abc' is not a whole number of milliseconds; using the default, 1000",
        "LB_SKIP_SWAPPING in the environment: 'maybe' is not a boolean (true/false, yes/no, y/n, 1/0); "
        "using the default, true",
    ]


# --- sources and precedence ---


def test_defaults_with_server_alone(tmp_path):
    settings = load({"SERVER": "192.168.67.1"}, conf(tmp_path, "# nothing set here\n"))
    assert settings == Settings(
        servers=[P("192.168.67.1", "192.168.67.1", 377)],
        algorithm=DEFAULT_ALGORITHM,
        port=377,
        timeout_ms=1000,
        max_response_ms=None,
        max_load=None,
        skip_swapping=True,
        server="192.168.67.1",
        lts_conf=str(tmp_path / "lts.conf"),
        warnings=[],
        identity=CLIENT,  # given, so passed on
        conf_format="LTSP 5 lts.conf",  # no section names LTSP 20+, and the path is no ltsp.conf
        sources={"SERVER": "the environment"},
    )


def test_sources_name_where_each_value_came_from(tmp_path):
    path = conf(tmp_path, "[Default]\n  LB_SERVERS = a b\n  LB_ALGORITHM = nope\n")
    settings = load({"LB_TIMEOUT": "500"}, path)
    assert settings.sources == {"LB_SERVERS": f"{path}:2", "LB_ALGORITHM": f"{path}:3", "LB_TIMEOUT": "the environment"}


def test_default_algorithm_is_the_herd_safe_one():
    # docs/placement.md: the login-storm simulation chose it; choose.py has it.
    from get_hosts import choose

    assert DEFAULT_ALGORITHM == "two-choice"
    assert DEFAULT_ALGORITHM in choose.ALGORITHMS


def test_environment_beats_lts_conf(tmp_path):
    path = conf(
        tmp_path, "[Default]\nLB_SERVERS = f1 f2\nLB_TIMEOUT = 500\nLB_PORT = 1\n[ltsp12]\nLB_ALGORITHM = fixed\n"
    )
    settings = load({"LB_SERVERS": "e1", "LB_TIMEOUT": "700", "LB_ALGORITHM": "random"}, path)
    assert settings.servers == [P("e1", "e1", 1)]  # LB_PORT from the file still applies
    assert (settings.timeout_ms, settings.algorithm, settings.port) == (700, "random", 1)


def test_lts_conf_host_section_applies(tmp_path):
    path = conf(tmp_path, "[Default]\nLB_SERVERS = a b\n[00:1A:2B:3C:4D:5E]\nLB_SERVERS = c\nLB_MAX_LOAD = 2.5\n")
    settings = load({}, path)
    assert settings.servers == [P("c", "c", 377)]
    assert settings.max_load == 2.5


def test_empty_environment_value_is_unset_and_lts_conf_decides(tmp_path):
    path = conf(tmp_path, "[Default]\nLB_SERVERS = f1\nLB_TIMEOUT = 500\n")
    settings = load({"LB_SERVERS": "", "LB_TIMEOUT": " ", "LB_ALGORITHM": "\t"}, path)
    assert settings.servers == [P("f1", "f1", 377)]
    assert (settings.timeout_ms, settings.algorithm) == (500, DEFAULT_ALGORITHM)


def test_empty_lts_conf_value_is_unset(tmp_path):
    settings = load({"SERVER": "s"}, conf(tmp_path, '[Default]\nLB_TIMEOUT =\nLB_SERVERS = " "\n'))
    assert settings.timeout_ms == 1000
    assert settings.servers == [P("s", "s", 377)]


def test_none_in_environment_unsets_even_when_lts_conf_sets(tmp_path):
    path = conf(tmp_path, "[Default]\nSERVER = s\nLB_MAX_LOAD = 3.0\nLB_TIMEOUT = 500\n")
    settings = load({"LB_MAX_LOAD": "NONE", "LB_TIMEOUT": "NONE"}, path)
    assert (settings.max_load, settings.timeout_ms) == (None, 1000)


def test_none_in_lts_conf_unsets(tmp_path):
    path = conf(tmp_path, "[Default]\nSERVER = s\nLB_MAX_LOAD = 3.0\n[ltsp12]\nLB_MAX_LOAD = NONE\n")
    assert load({}, path).max_load is None


def test_server_from_lts_conf(tmp_path):
    settings = load({}, conf(tmp_path, "[Default]\nSERVER = 198.18.0.1\n"))
    assert settings.server == "198.18.0.1"
    assert settings.servers == [P("198.18.0.1", "198.18.0.1", 377)]


def test_server_from_environment_beats_lts_conf(tmp_path):
    settings = load({"SERVER": "envserver"}, conf(tmp_path, "[Default]\nSERVER = fileserver\n"))
    assert settings.servers == [P("envserver", "envserver", 377)]


def test_server_kept_alongside_a_pool():
    settings = load({"SERVER": "boot", "LB_SERVERS": "a"})
    assert (settings.server, [e.name for e in settings.servers]) == ("boot", ["a"])


def test_server_uses_lb_port():
    assert load({"SERVER": "s", "LB_PORT": "3377"}).servers == [P("s", "s", 3377)]


def test_no_pool_at_all():
    with pytest.raises(GetHostsError) as caught:
        load({})
    assert str(caught.value).startswith("no server pool: LB_SERVERS and SERVER are both unset in the environment")


def test_pool_without_valid_entry_falls_back_to_server():
    settings = load({"SERVER": "boot", "LB_SERVERS": "bad:x -worse"})
    assert settings.servers == [P("boot", "boot", 377)]
    assert settings.warnings == [
        "LB_SERVERS in the environment: skipping pool entry 'bad:x': port 'x' is not a number",
        "LB_SERVERS in the environment: skipping pool entry '-worse': a host name cannot start with '-' or '.'",
        "LB_SERVERS in the environment has no valid entry; using SERVER (boot)",
    ]


def test_pool_without_valid_entry_and_no_server_is_an_error(tmp_path):
    path = conf(tmp_path, "[Default]\nLB_SERVERS = a:0\n")
    with pytest.raises(GetHostsError, match=rf"^no server pool: LB_SERVERS in {path}:2 has no valid entry \('a:0'\)$"):
        load({}, path)


def test_invalid_server_is_an_error():
    with pytest.raises(GetHostsError, match=r"^no server pool: SERVER in the environment is not a host \('-x'\)$"):
        load({"SERVER": "-x"})


def test_pool_warnings_name_where_the_pool_came_from(tmp_path):
    path = conf(tmp_path, "[Default]\n\nLB_SERVERS = a a b:99999\n")
    settings = load({}, path)
    assert settings.servers == [P("a", "a", 377)]
    assert settings.warnings == [
        f"LB_SERVERS in {path}:3: skipping pool entry 'a': same server as 'a'",
        f"LB_SERVERS in {path}:3: skipping pool entry 'b:99999': port 99999 is out of range (1-65535)",
    ]


def test_empty_section_is_a_warning(tmp_path):
    path = conf(tmp_path, "[Default]\nSERVER = s\n[ltsp99]\n")
    assert load({}, path).warnings == [f"{path}:3: empty section [ltsp99] (ignored)"]


# --- which lts.conf ---


def test_lts_conf_argument_beats_environment(tmp_path):
    a = conf(tmp_path, "[Default]\nSERVER = from-arg\n", "a.conf")
    b = conf(tmp_path, "[Default]\nSERVER = from-env\n", "b.conf")
    settings = load({"LTS_CONF": b}, a)
    assert (settings.server, settings.lts_conf) == ("from-arg", a)


def test_lts_conf_from_environment(tmp_path):
    b = conf(tmp_path, "[Default]\nSERVER = from-env\n", "b.conf")
    settings = load({"LTS_CONF": b})
    assert (settings.server, settings.lts_conf) == ("from-env", b)


def test_missing_lts_conf_argument_is_an_error(tmp_path):
    with pytest.raises(LtsConfError, match="cannot read"):
        load({"SERVER": "s"}, str(tmp_path / "missing.conf"))


def test_missing_lts_conf_from_environment_is_an_error(tmp_path):
    with pytest.raises(LtsConfError, match=r"missing\.conf: cannot read"):
        load({"SERVER": "s", "LTS_CONF": str(tmp_path / "missing.conf")})


def test_missing_etc_lts_conf_is_fine():
    if os.path.exists(DEFAULT_LTS_CONF):
        pytest.skip(f"{DEFAULT_LTS_CONF} exists on this machine")
    settings = load({"SERVER": "s"}, None)
    assert (settings.lts_conf, settings.servers) == (None, [P("s", "s", 377)])


def test_lts_conf_errors_are_get_hosts_errors(tmp_path):
    with pytest.raises(GetHostsError, match=r"lts\.conf:2: LIKE = 'nowhere' names no section"):
        load({"SERVER": "s"}, conf(tmp_path, "[Default]\nLIKE = nowhere\n"))


def test_a_bad_lts_conf_line_is_a_warning(tmp_path):
    settings = load({"SERVER": "s"}, conf(tmp_path, "garbage here\n"))
    assert [w for w in settings.warnings if "lts.conf:1: " in w and "(line skipped)" in w]


def test_identity_found_by_itself_when_lts_conf_has_host_sections(tmp_path):
    hostname = socket.gethostname()
    path = conf(tmp_path, f"[Default]\nSERVER = 127.0.0.1\nLB_PORT = 1\n[{hostname}]\nLB_PORT = 2\n")
    assert load_settings({}, path).port == 2


def test_identity_given_is_used(tmp_path):
    path = conf(tmp_path, "[Default]\nSERVER = s\nLB_PORT = 1\n[other]\nLB_PORT = 2\n")
    assert load_settings({}, path, CLIENT._replace(hostname="other")).port == 2
    assert load_settings({}, path, CLIENT).port == 1


def test_cheap_path_imports_no_identity_socket_or_re(tmp_path):
    path = conf(tmp_path, "[Default]\nSERVER = s\nLB_TIMEOUT = 300\n")
    code = (
        "import sys; from get_hosts.settings import load_settings; "
        f"s = load_settings({{}}, {path!r}); "
        "print(s.timeout_ms, sorted(m for m in ('re', 'socket', 'get_hosts.identity', 'fnmatch', 'typing', "
        "'dataclasses', 'argparse', 'json', 'ipaddress') if m in sys.modules))"
    )
    assert run_python_without_site(code) == "300 []"


def test_host_sections_make_it_look_up_the_identity(tmp_path):
    path = conf(tmp_path, "[Default]\nSERVER = 127.0.0.1\n[some-other-host]\nX = 1\n")
    code = (
        f"import sys; from get_hosts.settings import load_settings; load_settings({{}}, {path!r}); "
        "print('get_hosts.identity' in sys.modules)"
    )
    assert run_python_without_site(code) == "True"


# --- the table and its documentation ---


def test_table_names_every_variable_of_the_spec():
    assert [v.name for v in VARIABLES] == [
        "LB_SERVERS",
        "LB_ALGORITHM",
        "LB_PORT",
        "LB_TIMEOUT",
        "LB_MAX_RESPONSE_MS",
        "LB_MAX_LOAD",
        "LB_SKIP_SWAPPING",
        "LB_BALANCER",
        "LB_BALANCER_TIMEOUT",
        "LB_STATE_DIR",
        "LB_RETRY_SECONDS",
    ]
    assert {v.field for v in VARIABLES} <= set(Settings._fields)


def test_settings_are_generated_from_the_table():
    assert Settings._fields[: len(VARIABLES)] == tuple(var.field for var in VARIABLES)
    defaults = Settings()
    assert all(getattr(defaults, var.field) == var.default for var in VARIABLES)


@pytest.mark.parametrize(
    ("variable", "key", "text", "value"),
    [
        ("LB_SKIP_SWAPPING", "SKIP_SWAPPING", "yes", True),
        ("LB_SKIP_SWAPPING", "SKIP_SWAPPING", "FALSE", False),
        ("LB_SKIP_SWAPPING", "SKIP_SWAPPING", "0", False),
        ("LB_MAX_LOAD", "MAX_LOAD", "1.5", 1.5),
        ("LB_MAX_LOAD", "MAX_LOAD", "None", None),
        ("LB_MAX_RESPONSE_MS", "MAX_RESPONSE_MS", "150", 150),
        ("LB_MAX_RESPONSE_MS", "MAX_RESPONSE_MS", "none", None),
    ],
)
def test_the_balancer_reads_the_same_words_as_get_hosts(variable, key, text, value):
    """One converter for a setting both sides have: the same value, of the same type (a real boolean)."""
    from ltsp_loadbalancer import config

    (var,) = [var for var in VARIABLES if var.name == variable]
    assert var.converter is config.SCHEMA.by_name[key].converter
    on_balancer = getattr(config.SCHEMA.parse_text(f"{key} = {text}\n", "b.conf"), key.lower())
    on_client = getattr(load({"SERVER": "s", variable: text}), var.field)
    assert on_balancer == on_client == value and type(on_balancer) is type(on_client) is type(value)


@pytest.mark.parametrize(
    ("variable", "key", "text", "what"),
    [
        ("LB_SKIP_SWAPPING", "SKIP_SWAPPING", "maybe", "a boolean (true/false, yes/no, y/n, 1/0)"),
        ("LB_MAX_LOAD", "MAX_LOAD", "high", "a load average per CPU (a decimal number such as 1.5), or none"),
        ("LB_MAX_RESPONSE_MS", "MAX_RESPONSE_MS", "0", "a positive number of milliseconds"),
    ],
)
def test_a_bad_shared_value_is_named_alike_on_both_sides(variable, key, text, what):
    from ltsp_loadbalancer import config

    from ltsp_lbcore.errors import ConfigError

    with pytest.raises(ConfigError) as on_balancer:
        config.SCHEMA.parse_text(f"{key} = {text}\n", "b.conf")
    assert str(on_balancer.value) == f"b.conf:1: invalid value for {key}: {text!r} (expected {what})"
    with pytest.raises(GetHostsError) as on_client:
        load({"SERVER": "s", variable: text})
    assert str(on_client.value) == f"{variable} in the environment: {text!r} is not {what}"


def test_table_defaults_are_what_the_converters_make_of_their_text():
    for var in VARIABLES:
        if var.default is not None and var.name != "LB_SERVERS":
            assert var.converter(var.default_text) == var.default, var.name


def test_variables_help_lists_each_variable_with_its_default():
    text = variables_help()
    for var in VARIABLES:
        assert f"{var.name} (default: {var.default_text})" in text
    assert "LB_TIMEOUT (default: 1000)" in text
    assert all(len(line) <= 78 for line in text.splitlines())


def test_identity_is_looked_up_toward_the_first_pool_entry_without_server(tmp_path):
    # Toward 127.0.0.1 this client's IP is 127.0.0.1, so the [127.0.0.1] section applies.
    path = conf(tmp_path, "[Default]\nLB_SERVERS = 127.0.0.1:5 app2\nLB_PORT = 1\n[127.0.0.1]\nLB_PORT = 2\n")
    settings = load_settings({}, path)
    assert settings.port == 2
    assert (settings.identity.ip, settings.identity.interface) == ("127.0.0.1", "lo")


def test_identity_is_reported_only_when_used(tmp_path):
    assert load({"SERVER": "s"}, conf(tmp_path, "[Default]\nA = 1\n"), identity=None).identity is None
    assert load({"SERVER": "s"}, conf(tmp_path, "[Default]\nA = 1\n"), identity=CLIENT).identity == CLIENT


def test_no_pool_lists_the_ltsp5_chroots_lts_conf_found(tmp_path, monkeypatch):
    from get_hosts import settings as settings_module

    for arch in ("amd64", "i386"):
        (tmp_path / arch / "etc").mkdir(parents=True)
        (tmp_path / arch / "etc" / "lts.conf").write_text("[Default]\n")
    patterns = (str(tmp_path / "tftp" / "*" / "lts.conf"), str(tmp_path / "*" / "etc" / "lts.conf"))
    monkeypatch.setattr(settings_module, "LTSP5_CLIENT_CONFS", patterns)
    message = settings_module.no_pool_message({}, None, None, None)
    found = f"--lts-conf {tmp_path}/amd64/etc/lts.conf or --lts-conf {tmp_path}/i386/etc/lts.conf (LTSP 5)"
    assert found in message
