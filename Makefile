# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Test processes (pytest-xdist; each test file runs whole in one of them): 2 cut the suite's
# time by a quarter to a third on 2 cores (docs/LOG.md); TEST_JOBS=0 runs it in this process.
TEST_JOBS ?= 2
# The CPU build of torch lies in /opt/wheels on the machines this project is built on.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check $(FIND_LINKS) -c constraints.txt

.PHONY: install install-test demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.runtime: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) torch==2.13.0
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(PIP) -e '.[test]'
	# oracles whose declared requirements would pull a CUDA torchvision: install bare
	$(PIP) --no-deps traker==0.3.2 mup==1.0.0
	touch $@

install: $(VENV)/.runtime
install-test: $(VENV)/.test

demo: install
	$(BIN)/proxyscale demo

test: install-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --durations=25

bench: install-test
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_trak.py

clean:
	rm -rf $(VENV) runs
