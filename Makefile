# Everything runs from a project-local virtual environment, created on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
FRAMEWORK ?= starlette

.PHONY: help install demo test test-pure test-compiled compiled lint typecheck bench fuzz soak clean

help:
	@echo "make demo   - serve the demo app on http://$(HOST):$(PORT) (memory storage)"
	@echo "make test   - install the dev extras and run every check (pure and compiled builds)"
	@echo "make bench  - run the benchmarks (installs the bench extra)"
	@echo "make compiled - build the mypyc-compiled wheel (build/wheels, unpacked in build/compiled)"
	@echo "make fuzz   - coverage-guided fuzzing of every parser (FUZZ_RUNS per harness)"
	@echo "make soak   - 60 s multi-worker soak on Redis with a report (not in make test)"

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

demo: $(VENV)/.demo-installed
	$(BIN)/secmw demo --framework $(FRAMEWORK) --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy src

test: lint typecheck test-pure test-compiled

test-pure: $(VENV)/.dev-installed
	$(BIN)/python -m pytest --cov=secmw --cov-branch --cov-report=term --cov-fail-under=90

# The compiled build: the wheel that HATCH_BUILD_HOOK_ENABLE_MYPYC=1 builds (mypyc, the modules
# listed in pyproject.toml), made from the sdist so that no extension lands in src/, and unpacked
# where PYTHONPATH puts it before the editable install.
COMPILED := build/compiled
SOURCES := $(shell find src/secmw -name '*.py')

compiled: $(COMPILED)/.built

$(COMPILED)/.built: pyproject.toml mypy.ini $(SOURCES) | $(VENV)/.dev-installed
	rm -rf $(COMPILED) build/wheels && mkdir -p build
	HATCH_BUILD_HOOK_ENABLE_MYPYC=1 $(BIN)/python -m build --no-isolation --outdir build/wheels . \
		> build/compile.log 2>&1 || { tail -40 build/compile.log; exit 1; }
	$(BIN)/python -m zipfile -e build/wheels/secmw-*.whl $(COMPILED)
	touch $@

# The whole suite again on the compiled build (no coverage: compiled code is not traced; the
# packaging test builds the pure wheel, already checked once).
test-compiled: $(COMPILED)/.built
	PYTHONPATH=$(COMPILED) $(BIN)/python -m pytest -p no:cacheprovider -q \
		--deselect tests/integration/test_packaging.py

bench: $(VENV)/.bench-installed $(COMPILED)/.built
	$(BIN)/python -m benchmarks.run --compiled $(COMPILED)

FUZZ_RUNS ?= 100000
FUZZ_SEED ?= 1

fuzz: $(VENV)/.dev-installed
	$(BIN)/python tests/fuzz/run.py --runs $(FUZZ_RUNS) --seed $(FUZZ_SEED) --artifacts fuzz-artifacts

SOAK_SECONDS ?= 60

soak: $(VENV)/.dev-installed
	$(BIN)/python -m tests.soak.run --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov fuzz-artifacts
