# Everything runs from a project-local virtual environment, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
FRAMEWORK ?= starlette

.PHONY: help install demo test pytest lint typecheck bench fuzz soak faults clean

help:
	@echo "make demo   - serve the demo app on http://$(HOST):$(PORT) (memory storage;"
	@echo "              CONFIG=secmw.toml reads that configuration file)"
	@echo "make test   - install the dev extras and run every check (lint, types, tests)"
	@echo "make bench  - run the benchmarks (installs the bench extra)"
	@echo "make fuzz   - coverage-guided fuzzing of every parser (FUZZ_RUNS per harness)"
	@echo "make soak   - 60 s multi-worker soak on Redis with a report (not in make test)"
	@echo "make faults - Redis, Cluster and Sentinel faults under load, with a report (not in make test)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per extra set, refreshed when pyproject.toml changes.
$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $@

# The test suite runs a short seeded pass of each fuzz harness, so it needs atheris too.
$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,fuzz]'
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

install: $(VENV)/.dev-installed

# CONFIG=secmw.toml: read that configuration file (SECMW_CONFIG_FILE) below the environment.
demo: $(VENV)/.demo-installed
	$(if $(CONFIG),SECMW_CONFIG_FILE=$(abspath $(CONFIG)) )$(BIN)/secmw demo --framework $(FRAMEWORK) --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy src

test: lint typecheck pytest

pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest --cov=secmw --cov-branch --cov-report=term --cov-fail-under=90

bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run

FUZZ_RUNS ?= 100000
FUZZ_SEED ?= 1

fuzz: $(VENV)/.dev-installed
	$(BIN)/python tests/fuzz/run.py --runs $(FUZZ_RUNS) --seed $(FUZZ_SEED) --artifacts fuzz-artifacts

SOAK_SECONDS ?= 60

soak: $(VENV)/.dev-installed
	$(BIN)/python -m tests.soak.run --seconds $(SOAK_SECONDS)

# Kill, freeze, pause and busy Redis, a Cluster master with and without replicas, a Sentinel
# failover; under gunicorn (ASGI and WSGI workers) for each policy. About ten minutes.
faults: $(VENV)/.dev-installed
	$(BIN)/python -m tests.faults.run $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov fuzz-artifacts
