# One-line commands for newcomers and CI. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-oldest test-312 test-newest test-floors lint typecheck unit fuzz bench install clean

# FLOORS=1 (make test-floors) pins every runtime dependency to its declared floor.
# EXTRAS: the extra installed with the project (test-oldest: dev without the speedups).
EXTRAS ?= dev
$(STAMP): pyproject.toml $(if $(FLOORS),.ci/floors.py)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python 3.10+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(FLOORS),$(PYTHON) .ci/floors.py pyproject.toml > $(VENV)/floors.txt)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]' $(if $(FLOORS),--constraint $(VENV)/floors.txt)
	@touch $(STAMP)

install: $(STAMP)

## Run the example app with an embedded offline dev issuer (http://127.0.0.1:8000/docs).
demo: $(STAMP)
	$(PY) -m example_app

## Lint, type-check and run the whole test suite.
test: lint typecheck unit

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

## The suite runs on every core (pytest-xdist; JOBS=0 runs it in one process), except
## the tests marked serial: they hold the server's event-loop lag and request latencies
## to fixed budgets, so they run afterwards with the machine otherwise idle. Exit
## status 5 is pytest's "no test selected": PYTEST_ARGS may pick tests of one kind only.
JOBS ?= auto
unit: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m 'not serial' $(PYTEST_ARGS) || [ $$? = 5 ]
	$(PY) -m pytest -m serial $(PYTEST_ARGS) || [ $$? = 5 ]

## The test suite again on Python 3.10, the oldest we support, in its own venv
## (.venv310); skipped with a message when no 3.10 interpreter is found. This venv has
## no speedups extra (EXTRAS=dev-stdlib), so the whole suite, the servers it starts
## included, also passes on the standard library's base64 and JSON alone.
PYTHON310 ?= $(shell for c in $(wildcard $(HOME)/.pyenv/versions/3.10.*/bin/python) python3.10; do \
	"$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null && { echo "$$c"; break; }; done)
test-oldest:
	@if [ -z "$(PYTHON310)" ]; then echo "test-oldest: no Python 3.10 found, skipped"; \
	else $(MAKE) --no-print-directory unit PYTHON=$(PYTHON310) VENV=.venv310 EXTRAS=dev-stdlib; fi

## The test suite again on Python 3.12, in its own venv (.venv312), so that with the
## default interpreter, test-oldest and test-newest every supported minor version gets
## a run; skipped with a message when no 3.12 interpreter is found.
PYTHON312 ?= $(shell for c in $(wildcard $(HOME)/.pyenv/versions/3.12.*/bin/python) python3.12; do \
	"$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && { echo "$$c"; break; }; done)
test-312:
	@if [ -z "$(PYTHON312)" ]; then echo "test-312: no Python 3.12 found, skipped"; \
	else $(MAKE) --no-print-directory unit PYTHON=$(PYTHON312) VENV=.venv312; fi

## The test suite again on the newest Python 3.12+ found (pyenv's or on PATH), in its own
## venv (.venv-newest); skipped with a message when there is none.
PYTHONNEWEST ?= $(shell for c in $(shell ls -d $(HOME)/.pyenv/versions/3.*/bin/python 2>/dev/null | sort -rV) \
	python3.14 python3.13 python3.12; do \
	"$$c" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 12))' 2>/dev/null && { echo "$$c"; break; }; done)
test-newest:
	@if [ -z "$(PYTHONNEWEST)" ]; then echo "test-newest: no Python 3.12+ found, skipped"; \
	else $(MAKE) --no-print-directory unit PYTHON=$(PYTHONNEWEST) VENV=.venv-newest; fi

## The test suite with every runtime dependency at exactly the floor pyproject.toml
## declares (.ci/floors.py reads them), so the floors stay true. On Python 3.10 when
## found (.venv-floors310): the oldest dependencies on the oldest Python, the combination
## a user on an old stack gets; else on $(PYTHON) (.venv-floors).
test-floors:
	$(MAKE) --no-print-directory unit FLOORS=1 \
		$(if $(PYTHON310),PYTHON=$(PYTHON310) VENV=.venv-floors310,VENV=.venv-floors)

## Property-based fuzzing with many more examples than CI runs.
## ASGI_AUTH0_FUZZ=long gives the tests marked fuzz 20x their CI examples, randomized.
fuzz: $(STAMP)
	ASGI_AUTH0_FUZZ=long $(PY) -m pytest tests -m fuzz -p no:randomly $(PYTEST_ARGS)

## Benchmarks (bench/README.md); installs the bench extra (uvloop, httptools, PyJWT) first.
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv310 .venv312 .venv-newest .venv-floors .venv-floors310 .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist *.egg-info
