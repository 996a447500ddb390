# nbplugins: two commands on a fresh machine -- `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-deps
PYTEST_ARGS ?=

.PHONY: install system-deps demo test bench lint clean

install: $(STAMP)

# Re-run only when pyproject.toml changes (the stamp is newer otherwise).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,elyra,dask,sandbox]'
	$(PY) -m nbplugins.editor.factory  # Elyra's factory metadata: an editable install skips data-files
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (nbplugins)" >/dev/null
	mkdir -p "$$($(VENV)/bin/jupyter --runtime-dir)"
	touch $@

# Debian packages the end-to-end tests need: headless Chromium for the JupyterHub test,
# oidc-agent (oidc-agent-cli) for the oidc-agent token source, wrk for benchmarks/service.py. Only missing commands are
# installed; the stamp is rebuilt when this Makefile changes, so a new package is picked up.
SYS_PACKAGES := chromium:chromium,chromium-driver git:git oidc-agent:oidc-agent-cli wrk:wrk

system-deps: $(SYSSTAMP)

$(SYSSTAMP): Makefile | $(STAMP)
	@missing=""; for pair in $(SYS_PACKAGES); do \
	  cmd=$${pair%%:*}; pkgs=$${pair#*:}; \
	  command -v $$cmd >/dev/null || missing="$$missing $${pkgs//,/ }"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: no root apt-get to install$$missing: the browser or oidc-agent tests will be skipped"; fi; \
	fi
	touch $@

demo: install
	$(PY) demo/run.py

test: install system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

# Every benchmark, ours against the peer in the same run; a failed one is named at the end
# (benchmarks/service.py needs root for its throwaway users).
bench: install system-deps
	@failed=""; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

lint: install
	$(VENV)/bin/ruff check nbplugins tests benchmarks demo

clean:
	rm -rf $(VENV) runs demo-out bench-out
