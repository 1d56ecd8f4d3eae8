"""The Debian packaging and the man pages, checked without building anything.

Building and installing the .debs is slow and needs root: `make deb` (build
and lintian) and .ci/check-debs (install, run, remove) do that in CI. These
tests catch the cheap mistakes first: a file named in debian/ that the tree
does not have (or git does not track, so `make deb`'s clean copy lacks it), a
man page that forgot a flag, a variable or a config key, or one that groff
warns about.
"""

from __future__ import annotations

import glob
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import setuptools
from ltsp_server_advertise import cli as advertise_cli
from ltsp_server_advertise import config

from get_hosts import cli as get_hosts_cli
from get_hosts import settings

ROOT = Path(__file__).resolve().parent.parent
DEBIAN = ROOT / "debian"
MAN = ROOT / "docs" / "man"
PACKAGES = ("ltsp-get-hosts", "ltsp-server-advertise", "ltsp-loadbalancer")


def _load_generator():
    spec = importlib.util.spec_from_file_location("man_generate", MAN / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def setup_arguments():
    """The keyword arguments setup.py passes to setup(), without running setuptools."""
    captured = {}

    def fake_setup(**kwargs):
        captured.update(kwargs)

    original = setuptools.setup
    setuptools.setup = fake_setup
    try:
        source = (ROOT / "setup.py").read_text(encoding="utf-8")
        exec(
            compile(source, str(ROOT / "setup.py"), "exec"),
            {"__name__": "__main__", "__file__": str(ROOT / "setup.py")},
        )
    finally:
        setuptools.setup = original
    return captured


def pybuild_outputs():
    """What pybuild installs into debian/tmp, as glob-free paths: packages, egg-info, usr/bin scripts."""
    args = setup_arguments()
    site = "usr/lib/python3*/dist-packages/"
    outputs = {site + package for package in args["packages"]}
    outputs.add(site + args["name"].replace("-", "_") + "-*")
    for script in args.get("scripts", []):
        outputs.add("usr/bin/" + Path(script).name)
    for line in args.get("entry_points", {}).get("console_scripts", []):
        outputs.add("usr/bin/" + line.split("=")[0].strip())
    return outputs


def debian_lines(name):
    """Non-comment, non-blank lines of debian/NAME, split into words."""
    path = DEBIAN / name
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line.split())
    return lines


def tracked_files():
    """Paths git tracks (the files make deb copies), or None outside a git work tree."""
    if shutil.which("git") is None:
        return None
    result = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False, timeout=30)
    if result.returncode != 0:
        return None
    return set(result.stdout.decode("utf-8", "surrogateescape").split("\0")) - {""}


def assert_in_tree(relative, what):
    matches = glob.glob(str(ROOT / relative))
    assert matches, f"{what} names {relative}, which is not in the tree"
    tracked = tracked_files()
    if tracked is not None:
        for match in matches:
            path = Path(match).relative_to(ROOT).as_posix()
            inside = {t for t in tracked if t == path or t.startswith(path + "/")}
            assert inside, f"{what} names {path}, which git does not track: make deb's clean copy would lack it"


# --- debian/ ------------------------------------------------------------------------


@pytest.mark.parametrize("package", PACKAGES)
def test_every_install_source_is_built_by_pybuild_or_in_the_tree(package):
    built = pybuild_outputs()
    lines = debian_lines(f"{package}.install")
    assert lines, f"debian/{package}.install is empty"
    for words in lines:
        source = words[0]
        if source.startswith("usr/"):
            assert source in built, f"debian/{package}.install: {source} is not something setup.py installs"
        else:
            assert_in_tree(source, f"debian/{package}.install")


@pytest.mark.parametrize("kind", ["manpages", "docs"])
@pytest.mark.parametrize("package", PACKAGES)
def test_every_man_page_and_doc_is_in_the_tree(package, kind):
    for words in debian_lines(f"{package}.{kind}"):
        assert_in_tree(words[0], f"debian/{package}.{kind}")


def test_the_status_page_files_are_package_data_and_tracked():
    """The templates, script and style statuspage.py reads ship with the balancer's code (pybuild installs
    setup.py's package_data beside it, and debian/ltsp-loadbalancer.install takes the whole package)."""
    from ltsp_loadbalancer import statuspage

    package = ROOT / "ltsp-loadbalancer"
    shipped = {
        path for pattern in setup_arguments()["package_data"]["ltsp_loadbalancer"] for path in package.glob(pattern)
    }
    needed = {
        *(package / "templates").glob("*.html"),
        package / "static" / "status.css",
        package / "static" / "status.js",
    }
    assert Path(statuspage.__file__).resolve().parent == package
    assert needed <= shipped, needed - shipped
    for path in needed:
        assert_in_tree(path.relative_to(ROOT).as_posix(), "setup.py's package_data")
    assert ["usr/lib/python3*/dist-packages/ltsp_loadbalancer"] in debian_lines("ltsp-loadbalancer.install")


def test_the_client_package_ships_both_example_files():
    # Admins of either LTSP find theirs in /usr/share/doc/ltsp-get-hosts/ (ltsp.conf.example was in no package).
    shipped = {words[0] for words in debian_lines("ltsp-get-hosts.docs")}
    assert {"lts.conf.example", "ltsp.conf.example"} <= shipped


def test_not_installed_names_only_what_pybuild_builds():
    built = pybuild_outputs()
    for words in debian_lines("not-installed"):
        assert words[0] in built, f"debian/not-installed: {words[0]} is not something setup.py installs"


def test_every_pybuild_output_is_installed_or_declared_not_installed():
    placed = {words[0] for package in PACKAGES for words in debian_lines(f"{package}.install")}
    placed |= {words[0] for words in debian_lines("not-installed")}
    assert pybuild_outputs() - placed == set()


def installed_paths(package):
    """Paths the package installs through its .install file (destination dir + file name)."""
    paths = set()
    for words in debian_lines(f"{package}.install"):
        if len(words) == 2:
            paths.add(words[1].strip("/") + "/" + Path(words[0]).name)
    return paths


@pytest.mark.parametrize("package", PACKAGES)
def test_links_point_at_installed_files(package):
    for target, _link in debian_lines(f"{package}.links"):
        assert target in installed_paths(package), f"debian/{package}.links: nothing installs {target}"


def test_the_launcher_ldm_runs_and_its_links():
    links = {tuple(words) for words in debian_lines("ltsp-get-hosts.links")}
    assert "usr/share/ltsp/get_hosts" in installed_paths("ltsp-get-hosts")
    assert ("usr/share/ltsp/get_hosts", "usr/lib/ltsp/get_hosts") in links
    assert "usr/sbin/ltsp-server-advertise" in installed_paths("ltsp-server-advertise")


def control_paragraphs():
    paragraphs, current, field = [], {}, None
    for line in (DEBIAN / "control").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                paragraphs.append(current)
            current, field = {}, None
        elif line[0] in " \t":
            current[field] += " " + line.strip()
        else:
            field, _, value = line.partition(":")
            current[field] = value.strip()
    if current:
        paragraphs.append(current)
    return paragraphs


def depends(paragraph, field="Depends"):
    return {re.sub(r"\s*\(.*", "", dep.strip()) for dep in paragraph.get(field, "").split(",") if dep.strip()}


def test_control_packages_and_the_thin_client_needs_python3_alone():
    source, *binaries = control_paragraphs()
    assert source["Rules-Requires-Root"] == "no"
    assert source["Build-Depends"].startswith("debhelper-compat (= 13)")
    by_name = {paragraph["Package"]: paragraph for paragraph in binaries}
    assert set(by_name) == set(PACKAGES)
    for paragraph in binaries:
        assert paragraph["Architecture"] == "all"
    assert depends(by_name["ltsp-get-hosts"]) <= {"${misc:Depends}", "${python3:Depends}", "python3"}
    assert "python3-netifaces" in depends(by_name["ltsp-get-hosts"], "Recommends")
    server = depends(by_name["ltsp-server-advertise"])
    assert {"python3-psutil", "python3-lxml", "ltsp-get-hosts"} <= server
    balancer = depends(by_name["ltsp-loadbalancer"])
    assert {"python3-tornado", "python3-prometheus-client", "ltsp-get-hosts"} <= balancer


def test_versions_agree():
    version = setup_arguments()["version"]
    changelog = (DEBIAN / "changelog").read_text(encoding="utf-8").splitlines()[0]
    assert re.match(rf"ltsp-loadbalance \({re.escape(version)}(-\S+)?\) ", changelog), changelog
    for page in sorted(MAN.glob("*.[1-8]")):
        title = page.read_text(encoding="utf-8").splitlines()[0]
        assert f'"ltsp-loadbalance {version}"' in title, f"{page.name}: {title}"


# --- man pages ----------------------------------------------------------------------


def man_pages():
    return sorted(MAN.glob("*.[1-8]"))


def test_every_man_page_is_shipped():
    shipped = {words[0] for package in PACKAGES for words in debian_lines(f"{package}.manpages")}
    assert {f"docs/man/{page.name}" for page in man_pages()} == shipped


@pytest.mark.parametrize("page", man_pages(), ids=lambda page: page.name)
def test_title_and_name_match_the_file_name(page):
    text = page.read_text(encoding="utf-8")
    name, section = page.name.rsplit(".", 1)
    title = text.splitlines()[0].split()
    assert title[:3] == [".TH", name.upper(), section], title
    name_section = text.split(".SH NAME\n", 1)[1].split("\n", 1)[0]
    assert name_section.startswith(name.replace("-", "\\-") + " \\- ") or name_section.startswith(name + " \\- ")


@pytest.mark.parametrize("page", sorted(generate.PAGES), ids=str)
def test_generated_parts_match_the_tables(page):
    """Run `.venv/bin/python docs/man/generate.py` after changing VARIABLES or SCHEMA."""
    text = (MAN / page).read_text(encoding="utf-8")
    assert generate.render_page(text, generate.PAGES[page]) == text, (
        f"docs/man/{page} is out of date: run .venv/bin/python docs/man/generate.py"
    )


def roff_option(flag):
    return flag.replace("-", "\\-")


def test_get_hosts_page_names_every_flag_and_variable():
    text = (MAN / "get_hosts.8").read_text(encoding="utf-8")
    flags = set(get_hosts_cli._FLAGS) | set(re.findall(r"--[a-z-]+", get_hosts_cli.USAGE))
    for flag in flags:
        assert roff_option(flag) in text, f"get_hosts.8 does not mention {flag}"
    for variable in settings.VARIABLES:
        assert f".B {variable.name}\n" in text, f"get_hosts.8 does not describe {variable.name}"
    for name in ("SERVER", "LTS_CONF", "/etc/lts.conf", "/usr/lib/ltsp/get_hosts"):
        assert name in text
    for heading in ("OPTIONS", "EXIT STATUS", "EXAMPLES", "FILES", "OUTPUT"):
        assert f".SH {heading}\n" in text
    assert "X \\-query $(get_hosts \\-\\-first)" in text
    assert "straggler" in text
    from get_hosts.choose import ALGORITHMS
    from get_hosts.report import STATUS_COLUMNS
    from ltsp_lbcore.states import POOL_STATES as LABELS

    for algorithm in ALGORITHMS:
        assert f".B {roff_option(algorithm)}\n" in text, f"get_hosts.8 does not describe algorithm {algorithm}"
    for column in STATUS_COLUMNS:
        assert f".B {roff_option(column)}\n" in text, f"get_hosts.8 does not describe the --status column {column}"
    for label in LABELS:
        assert f".B {label}\n" in text


def test_daemon_page_names_every_flag_signal_and_file():
    text = (MAN / "ltsp-server-advertise.8").read_text(encoding="utf-8")
    for action in advertise_cli.build_parser()._actions:
        for flag in action.option_strings:
            assert roff_option(flag) in text, f"ltsp-server-advertise.8 does not mention {flag}"
    for word in ("SIGHUP", "SIGTERM", "LISTEN_FDS", "socket", "USER", "CAP_NET_BIND_SERVICE", ".SH EXIT STATUS"):
        assert word in text
    assert roff_option(config.DEFAULT_CONFIG_PATH) in text
    assert "ltsp\\-server.rng" in text


def test_config_page_describes_every_key_with_its_default():
    text = (MAN / "ltsp-server-advertise.conf.5").read_text(encoding="utf-8")
    for key in config.SCHEMA:
        assert f"\\fB{key.name}\\fR = \\fI{generate.roff_text(key.default)}\\fR" in text, key.name


def test_docs_the_config_help_names_are_shipped_and_named_by_their_installed_path():
    shipped = {words[0] for words in debian_lines("ltsp-server-advertise.docs")}
    named = {name for key in config.SCHEMA for name in re.findall(r"docs/[\w.-]+\.md", key.help)}
    for source in named:
        assert source in generate.INSTALLED_DOCS, f"docs/man/generate.py: INSTALLED_DOCS lacks {source}"
        assert source in shipped, f"{source} is named by a config key's help but not in ltsp-server-advertise.docs"
        installed = generate.INSTALLED_DOCS[source]
        assert installed == "/usr/share/doc/ltsp-server-advertise/" + Path(source).name
    lines = (MAN / "ltsp-server-advertise.conf.5").read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.startswith('.\\"'))
    assert not re.search(r"(?<!/)docs/", text), "the installed page must not name source-tree paths"


def test_roff_text_escapes():
    assert generate.roff_text("--listen and -S, thin-client") == "\\-\\-listen and \\-S, thin-client"
    assert generate.roff_text(".starts a request\n'too") == "\\&.starts a request\n\\&'too"
    assert generate.roff_text("a\\b") == "a\\eb"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed (groff-base)")
@pytest.mark.parametrize("page", man_pages(), ids=lambda page: page.name)
def test_groff_renders_without_warnings(page):
    result = subprocess.run(
        ["groff", "-man", "-ww", "-z", "-Tutf8", str(page)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed (man-db)")
@pytest.mark.parametrize("page", man_pages(), ids=lambda page: page.name)
def test_man_renders_without_warnings(page):
    result = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert len(result.stdout) > 1000
