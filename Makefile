# Messaging Console — `make run` serves the console, `make test` runs the whole suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app app
BIND ?= $(or $(CONSOLE_BIND),127.0.0.1:8000)

.PHONY: install install-dev run serve test system-deps brokers brokers-stop brokers-status bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

## install: .venv with the runtime dependencies (idempotent); static files are vendored in static/
install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## run: install, migrate the database, create a first admin if none, serve on CONSOLE_BIND
run: install
	$(FLASK) db upgrade
	$(FLASK) users ensure-admin
	CONSOLE_BIND=$(BIND) $(BIN)/gunicorn --config gunicorn.conf.py app:app

## system-deps: Debian packages the tests need (brokers, TLS fronts, browser, PostgreSQL)
system-deps:
	@bash scripts/system-deps.sh

## brokers: start the five test brokers on 127.0.0.1 (private ports) and point the console's saved
## settings at them (a local demo: `make brokers && make run`); brokers-stop stops them
brokers: install-dev system-deps
	$(BIN)/python scripts/brokerlab.py start
	$(FLASK) db upgrade
	$(FLASK) brokers use-lab

brokers-stop:
	$(BIN)/python scripts/brokerlab.py stop

brokers-status:
	$(BIN)/python scripts/brokerlab.py status

## test: everything the tests need, then the whole suite
test: install-dev system-deps
	$(BIN)/python scripts/brokerlab.py start
	bash scripts/postgres-test-db.sh
	$(BIN)/python scripts/identitylab.py install
	$(BIN)/python -m pytest -q tests

## bench: every benchmark under bench/ against the broker lab (by hand, never in CI); prints the
## distributions and writes bench/results/<name>.json and .png; `make bench BENCH="checks --scale 0.2"`
bench: install-dev
	$(BIN)/python scripts/brokerlab.py start
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache
