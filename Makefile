# ltsp-loadbalance: everything a developer or CI runs goes through here.
# `make test` and `make demo` work on a fresh machine with python3, make and
# apt: they build .venv from PyPI and, when root, apt-get what tests need.

PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Commands the real-network, ssh, man-page, browser and Prometheus tests drive; installed only when root.
SYSTEM_TOOLS := ip:iproute2 ssh-keyscan:openssh-client /usr/sbin/sshd:openssh-server \
  prlimit:util-linux groff:groff-base man:man-db chromium:chromium chromedriver:chromium-driver \
  prometheus:prometheus promtool:prometheus

.PHONY: all test test-quick lint format demo bench deb deb-check clean system-deps

all: test

$(STAMP): setup.py requirements-dev.txt pyproject.toml
	@$(PYTHON3) -m venv $(VENV) 2>/dev/null || { \
	  [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null \
	  && rm -rf $(VENV) && $(PYTHON3) -m venv $(VENV); }
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	@touch $@

system-deps:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x "$$cmd" ] || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "not root, cannot install:$$missing (the tests that need them skip)"; fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

# A quick local run: everything but the tests marked slow (make test runs all).
test-quick: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) demo/demo.py

# wrk drives balancer_storm.py's closed loop (a C generator leaves the balancer its core).
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } || true
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The two .debs, built from a clean copy of the tracked files (untracked junk
# and .venv never reach the package), then checked with lintian: an error
# fails the build. As root, missing build dependencies (debian/control's
# Build-Depends, plus lintian) are apt-get installed first. The packages are
# Architecture: all with no compiled code, so the implicit build-essential set
# is not required (dpkg-buildpackage -d after our own dpkg-checkbuilddeps -I).
DEB_DIR := build/deb

deb:
	@deps=$$(awk '/^Build-Depends:/ {f=1; sub(/^Build-Depends:/, ""); print; next} f && /^[ \t]/ {print; next} {f=0}' debian/control \
	  | tr ',' '\n' | sed -e 's/[([|].*//' -e 's/[[:space:]]//g' -e 's/^debhelper-compat$$/debhelper/' | grep . | tr '\n' ' '); \
	if ! command -v dpkg-checkbuilddeps >/dev/null || ! command -v lintian >/dev/null || ! dpkg-checkbuilddeps -I 2>/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing build dependencies: dpkg-dev lintian $$deps"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev lintian $$deps >/dev/null; \
	  else echo "make deb: missing build dependencies (run as root to apt-get them): dpkg-dev lintian $$deps" >&2; exit 1; fi; \
	fi
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/src
	git -c safe.directory="$(CURDIR)" ls-files -z >$(DEB_DIR)/files
	tar --null -T $(DEB_DIR)/files --ignore-failed-read -cf - | tar -xf - -C $(DEB_DIR)/src
	cd $(DEB_DIR)/src && dpkg-checkbuilddeps -I && dpkg-buildpackage -us -uc -b -d
	lintian --fail-on error $(DEB_DIR)/*.changes
	@ls -1 $(DEB_DIR)/*.deb

# Installs the built .debs, runs what they installed, removes them (root only; CI).
deb-check:
	.ci/check-debs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
