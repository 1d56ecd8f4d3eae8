# ltsp-loadbalance: everything a developer or CI runs goes through here.
# `make test` and `make demo` work on a fresh machine with python3, make and
# apt: they build .venv from PyPI and, when root, apt-get what tests need.

PYTHON3 ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Commands the real-network and ssh tests drive; installed only when root.
SYSTEM_TOOLS := ip:iproute2 ssh-keyscan:openssh-client /usr/sbin/sshd:openssh-server

.PHONY: all test lint format demo bench deb clean system-deps

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

demo: $(STAMP)
	$(PY) demo/demo.py

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
