# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
# `make test-medusa`: the Medusa plugin against a real Medusa backend and a real worker
# (needs Node.js 20+, PostgreSQL and Redis on 127.0.0.1; see integrations/medusa/e2e/run.sh).
# `make test-ui`: the same with Medusa's admin (the plugin's widgets and Dust page) in Debian's
# Chromium (/usr/bin/chromium; see integrations/medusa/ui-e2e/run.sh).
PYTHON ?= python3
VENV ?= .venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

.PHONY: install demo test test-medusa test-ui lint
install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/dust demo

test: $(VENV)/.installed
	$(VENV)/bin/pytest

test-medusa: $(VENV)/.installed
	VENV=$(VENV) bash integrations/medusa/e2e/run.sh

test-ui: $(VENV)/.installed
	VENV=$(VENV) bash integrations/medusa/ui-e2e/run.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
