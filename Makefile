# Two commands for a fresh machine with Python >= 3.11 and make:
#   make demo   - creates .venv, installs, runs the demo and serves the Dagster UI
#   make test   - creates .venv, installs, runs the test suite
# The UI's port: make demo PORT=3001 (default 3000).
PYTHON ?= python3
PORT ?= 3000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-no-ui test bench lint sandbox migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's dependencies change. Versions come from the lock file
# (requirements/dev.lock; refresh: see deploy/README.md), the project itself is editable.
$(STAMP): pyproject.toml requirements/dev.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[dev]'
	touch $(STAMP)

# AS_OF='2027-01-02 10:00:00' (UTC) runs the demo or the sandbox as of that instant: Debian's
# faketime moves the clock of the whole process tree, the embedded PostgreSQL included.
AS_OF ?=
CLOCK := $(if $(AS_OF),faketime '$(AS_OF)',)

demo: $(STAMP)
	$(CLOCK) $(BIN)/sync-pipelines demo --port $(PORT)

demo-no-ui: $(STAMP)
	$(CLOCK) $(BIN)/sync-pipelines demo --no-ui

sandbox: $(STAMP)
	$(CLOCK) $(BIN)/sync-pipelines sandbox

migrate: $(STAMP)
	$(BIN)/sync-pipelines migrate

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m bench.bench_upsert
	$(BIN)/python -m bench.bench_local_sync --small
	$(BIN)/python -m bench.bench_tenant_sensor --small
	$(BIN)/python -m bench.bench_run_overhead --runs 1

lint: $(STAMP)
	$(BIN)/ruff check sync_pipelines sync_pipelines_tests bench
	$(BIN)/ruff format --check sync_pipelines sync_pipelines_tests bench

clean:
	rm -rf $(VENV) .sandbox .pytest_cache
