# codeexec — see README.md. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8080
# Test-time services: the machine's PostgreSQL and Redis unless told otherwise.
export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/codeexec
export REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: help venv test lint format bench run up down logs clean

help:
	@echo "make test    run the test suite (root: the bwrap sandbox needs it)"
	@echo "make lint    ruff + mypy"
	@echo "make bench   benchmark: bare vs sandbox vs end to end, throughput, docker (bench/run.py --help)"
	@echo "make run     run the service on this Linux host with the bwrap backend (no Docker)"
	@echo "make up      run the service with Docker Compose"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

test: venv
	DEBUG=1 $(PY) -m pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DEBUG=1 $(VENV)/bin/mypy sandbox codeexec_site runs files playground

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv
	$(PY) bench/run.py $(BENCH_ARGS)

# The whole service on this Linux host, bwrap backend, no Docker: migrations (which also apply
# API_KEYS), one Dramatiq worker process and gunicorn with threaded workers (scripts/run-host.sh).
# Ctrl-C stops both gracefully: running runs finish, warm sandboxes are removed.
WORKER_THREADS ?= 4
WEB_WORKERS ?= 2
WEB_THREADS ?= 16
run: venv
	@debug=$$(echo "$${DEBUG:-1}" | tr A-Z a-z | tr -d ' '); \
	if [[ "$$debug" =~ ^(0|false|no|off|)$$ ]] && [ "$(origin DATABASE_URL)" = file ]; then \
	  echo "make run: DATABASE_URL must be set when DEBUG=0 (the local development database is a DEBUG=1 default)" >&2; \
	  exit 1; fi
	DEBUG=$${DEBUG:-1} $(PY) manage.py ensuredb
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} scripts/run-host.sh $(PY) $(VENV)/bin/gunicorn $(PORT) $(WORKER_THREADS) $(WEB_WORKERS) $(WEB_THREADS)

# Docker Compose: `docker compose` (v2) or docker-compose 1.29, whichever is installed (scripts/compose.sh).
up:
	scripts/compose.sh up

down:
	scripts/compose.sh down

logs:
	scripts/compose.sh logs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
