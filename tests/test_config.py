"""The daemon's config: the schema table, the file, and every error naming file, line, key and value.

Real files under tmp_path; the CLI is run as a real process for its exit
codes and its one error line.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ltsp_server_advertise import config, rating

from ltsp_lbcore import confsyntax, schema
from ltsp_lbcore.errors import ConfigError
from ltsp_lbcore.hostport import format_host_port

SHIPPED_CONF = Path(__file__).resolve().parent.parent / "ltsp-server-advertise" / "ltsp-server-advertise.conf"


def write(tmp_path, text, name="advertise.conf"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


# --- the table ------------------------------------------------------------------


def test_every_key_has_a_valid_default_and_help():
    assert [key.name for key in config.SCHEMA] == list(config.SCHEMA.by_name)
    for key in config.SCHEMA:
        assert confsyntax.is_key(key.name) and key.name == key.name.upper()
        key.converter(key.default)  # raises if the table's default is not a valid value
        assert len(key.help) > 30, key.name


def test_defaults_are_the_documented_ones():
    defaults = config.SCHEMA.defaults()
    assert defaults.state == "ready"
    assert defaults.weight == 100
    assert defaults.sample_seconds == 1.0  # docs/placement.md
    assert defaults.max_clients == 1024
    assert defaults.listen == (("::", 377), ("0.0.0.0", 377))
    assert defaults.allow == (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    assert defaults.user == "nobody"
    assert defaults.session_cpu_mhz == rating.DEFAULT_SESSION_CPU_MHZ
    assert defaults.session_memory_mb * config.MIB == rating.DEFAULT_SESSION_MEMORY_BYTES
    assert defaults.write_timeout_seconds > 0


def test_missing_file_means_defaults(tmp_path):
    path = str(tmp_path / "absent.conf")
    assert config.SCHEMA.load(path) == config.SCHEMA.defaults(path)


def test_every_key_can_be_set(tmp_path):
    path = write(
        tmp_path,
        """# a comment
state = drain
WEIGHT=50   # half a server
SAMPLE_SECONDS = 0.5
MAX_CLIENTS = 10
WRITE_TIMEOUT_SECONDS = 1.5
ALLOW = "192.168.67.0/24 fd00::/8 10.1.2.3"
LISTEN = 127.0.0.1:3377 [::1]:3377 :4377 server.lan:377
USER = ltsp-advertise
SSH_PORT = 2222
HEALTH_COMMAND = /usr/local/sbin/check-logins --ldap "ldap 1"
HEALTH_SECONDS = 30
SESSION_CPU_MHZ = 500
SESSION_MEMORY_MB = 1024
""",
    )
    loaded = config.SCHEMA.load(path)
    assert loaded == config.SCHEMA.Config(
        state="drain",
        weight=50,
        sample_seconds=0.5,
        max_clients=10,
        write_timeout_seconds=1.5,
        allow=tuple(ipaddress.ip_network(n) for n in ("192.168.67.0/24", "fd00::/8", "10.1.2.3/32")),
        listen=(("127.0.0.1", 3377), ("::1", 3377), ("", 4377), ("server.lan", 377)),
        user="ltsp-advertise",
        ssh_port=2222,
        health_command=("/usr/local/sbin/check-logins", "--ldap", "ldap 1"),
        health_seconds=30.0,
        session_cpu_mhz=500,
        session_memory_mb=1024,
        path=path,
    )


# --- errors: file, line, key and value, Radicale-like -------------------------------

BAD_VALUES = [
    ("WEIGHT", "abc", "expected a whole number >= 0"),
    ("WEIGHT", "-5", "expected a whole number >= 0"),
    ("WEIGHT", "1.5", "expected a whole number >= 0"),
    ("WEIGHT", "", "expected a whole number >= 0"),
    ("STATE", "draining", "expected one of ready, drain, maint"),
    ("STATE", "READY", "expected one of ready, drain, maint"),
    ("SAMPLE_SECONDS", "0", "expected a number of seconds from 0.1 to 3600"),
    ("SAMPLE_SECONDS", "nan", "expected a number of seconds from 0.1 to 3600"),
    ("SAMPLE_SECONDS", "1e3", "expected a number of seconds from 0.1 to 3600"),
    ("MAX_CLIENTS", "0", "expected a whole number >= 1 and <= 65536"),
    ("MAX_CLIENTS", "100000", "expected a whole number >= 1 and <= 65536"),
    ("WRITE_TIMEOUT_SECONDS", "-1", "expected a number of seconds from 0.1 to 300"),
    ("ALLOW", "192.168.300.0/24", "expected networks like"),
    ("ALLOW", "", "expected networks like"),
    ("ALLOW", "everyone", "expected networks like"),
    ("LISTEN", "::1:377", "expected host:port, [v6addr]:port or :port"),
    ("LISTEN", "127.0.0.1", "expected host:port, [v6addr]:port or :port"),
    ("LISTEN", "127.0.0.1:65536", "expected host:port, [v6addr]:port or :port"),
    ("LISTEN", "[::1]", "expected host:port, [v6addr]:port or :port"),
    ("LISTEN", "[nope]:377", "expected host:port, [v6addr]:port or :port"),
    ("LISTEN", "", "expected at least one address"),
    ("USER", "two words", "expected a user name"),
    ("SESSION_CPU_MHZ", "0", "expected a whole number >= 1"),
    ("SESSION_MEMORY_MB", "lots", "expected a whole number >= 1"),
    ("SSH_PORT", "65536", "expected a whole number >= 0 and <= 65535"),
    ("SSH_PORT", "ssh", "expected a whole number >= 0 and <= 65535"),
    ("HEALTH_COMMAND", "/usr/local/sbin/check 'ldap", "expected a command line (no closing quotation)"),
    ("HEALTH_SECONDS", "0", "expected a number of seconds from 1 to 3600"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VALUES)
def test_bad_value_names_file_line_key_and_value(tmp_path, key, value, expected):
    path = write(tmp_path, f"# header\n\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        config.SCHEMA.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: invalid value for {key}: {value!r} ({expected}")
    assert message.endswith(")")
    assert (caught.value.path, caught.value.lineno, caught.value.key, caught.value.value) == (path, 3, key, value)


def test_the_radicale_like_example_verbatim(tmp_path):
    path = write(tmp_path, "STATE = ready\n\nWEIGHT = abc\n")
    with pytest.raises(ConfigError) as caught:
        config.SCHEMA.load(path)
    assert str(caught.value) == f"{path}:3: invalid value for WEIGHT: 'abc' (expected a whole number >= 0)"


def test_unknown_key_is_refused_with_its_value(tmp_path):
    path = write(tmp_path, "STATE = ready\nWIEGHT = 50\n")
    with pytest.raises(ConfigError) as caught:
        config.SCHEMA.load(path)
    assert str(caught.value).startswith(f"{path}:2: unknown key WIEGHT = '50' (known keys: STATE, WEIGHT,")
    assert (caught.value.lineno, caught.value.key, caught.value.value) == (2, "WIEGHT", "50")


def test_key_given_twice_is_refused(tmp_path):
    path = write(tmp_path, "WEIGHT = 50\nweight = 60\n")
    with pytest.raises(ConfigError, match=r":2: WEIGHT = '60' is set twice \(first on line 1\)$"):
        config.SCHEMA.load(path)


def test_sections_are_refused_by_name(tmp_path):
    path = write(tmp_path, "WEIGHT = 50\n[Default]\nSTATE = drain\n")
    with pytest.raises(ConfigError) as caught:
        config.SCHEMA.load(path)
    assert str(caught.value).startswith(f"{path}:2: sections are not used in this file: [Default]")


def test_include_is_refused(tmp_path):
    path = write(tmp_path, 'include "/etc/other.conf"\n')
    with pytest.raises(ConfigError, match=r":1: include is not supported in this file: '/etc/other.conf'"):
        config.SCHEMA.load(path)


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "STATE = ready\nWEIGHT 50\n")
    with pytest.raises(ConfigError, match=r"^.*advertise\.conf:2: expected KEY = VALUE, got 'WEIGHT 50'$"):
        config.SCHEMA.load(path)


def test_non_utf8_file_names_the_line(tmp_path):
    path = write(tmp_path, b"STATE = ready\nUSER = caf\xe9\n")
    with pytest.raises(ConfigError, match=r"advertise\.conf:2: the file is not UTF-8$"):
        config.SCHEMA.load(path)


def test_unreadable_file_is_an_error_not_defaults(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read the config file: .*: is a directory, not a regular file$"):
        config.SCHEMA.load(str(tmp_path))


def test_override_names_its_origin():
    with pytest.raises(ConfigError) as caught:
        config.SCHEMA.override(config.SCHEMA.defaults(), "LISTEN", "nonsense", "--listen")
    assert (
        str(caught.value)
        == "--listen: invalid value for LISTEN: 'nonsense' (expected host:port, [v6addr]:port or :port)"
    )


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:377", ("127.0.0.1", 377)),
        ("[::1]:377", ("::1", 377)),
        ("[::]:0", ("::", 0)),
        (":377", ("", 377)),
        ("app1.school.lan:3377", ("app1.school.lan", 3377)),
        ("[fe80::1%eth0]:377", ("fe80::1%eth0", 377)),
    ],
)
def test_listen_address_forms(text, address):
    assert schema.listen_address(text) == address
    if address[0]:
        assert format_host_port(*address) == text  # the one formatter writes it back


# --- the shipped file is what the table renders -------------------------------------


def test_shipped_default_file_is_generated_from_the_table():
    assert SHIPPED_CONF.read_text(encoding="utf-8") == config.SCHEMA.render_default_file(), (
        "regenerate it: python3 -m ltsp_server_advertise.config > ltsp-server-advertise/ltsp-server-advertise.conf"
    )


def test_shipped_file_means_defaults_and_its_commented_values_are_valid(tmp_path):
    path = str(SHIPPED_CONF)
    assert config.SCHEMA.load(path) == config.SCHEMA.defaults(path)
    uncommented = "".join(
        line[1:] if line.startswith("#") and line[1:].split(" = ")[0] in config.SCHEMA.by_name else line
        for line in SHIPPED_CONF.read_text(encoding="utf-8").splitlines(keepends=True)
    )
    path = write(tmp_path, uncommented)
    assert config.SCHEMA.load(path) == config.SCHEMA.defaults(path)
    assert uncommented.count("\n#") < SHIPPED_CONF.read_text(encoding="utf-8").count("\n#")


def test_every_key_is_in_the_shipped_file_and_in_help():
    shipped = SHIPPED_CONF.read_text(encoding="utf-8")
    help_text = subprocess.run(
        [sys.executable, "-m", "ltsp_server_advertise.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for key in config.SCHEMA:
        assert f"\n#{key.name} = {key.default}".rstrip() + "\n" in shipped
        assert f"  {key.name} = {key.default}\n" in help_text


# --- the command line turns a config error into one line and exit 2 --------------------


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ltsp_server_advertise.cli", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_cli_config_error_is_one_line_and_exit_2(tmp_path):
    path = write(tmp_path, "STATE = ready\n\nWEIGHT = abc\n")
    result = run_cli("--config", path, "--once")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"ltsp-server-advertise: error: {path}:3: invalid value for WEIGHT: 'abc' (expected a whole number >= 0)"
    ]


def test_cli_bad_listen_is_exit_2(tmp_path):
    result = run_cli("--config", str(tmp_path / "absent.conf"), "--listen", "127.0.0.1")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "ltsp-server-advertise: error: --listen: invalid value for LISTEN: '127.0.0.1' "
        "(expected host:port, [v6addr]:port or :port)"
    )
    assert "Traceback" not in result.stderr


def test_cli_debug_shows_the_traceback(tmp_path):
    path = write(tmp_path, "[Default]\n")
    result = run_cli("--config", path, "--once", "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("ltsp-server-advertise: error: ")


def test_cli_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "ltsp-server-advertise 0.1.0"


def test_a_huge_bad_value_is_still_one_readable_line():
    # A SERVERS line of a 1,000-server site is 20 KB: the error quotes its start, and the reason whole.
    from ltsp_loadbalancer import config as balancer_config

    text = "SERVERS = " + " ".join(f"app{i}" for i in range(3000)) + " app7\n"
    with pytest.raises(ConfigError) as caught:
        balancer_config.SCHEMA.parse_text(text, "/etc/ltsp/ltsp-loadbalancer.conf")
    message = str(caught.value)
    assert "\n" not in message and len(message) < 500
    assert message.startswith("/etc/ltsp/ltsp-loadbalancer.conf:1: invalid value for SERVERS: 'app0 app1 ")
    assert message.endswith("('app7' is the same server as 'app7')")
