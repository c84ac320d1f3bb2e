# Two commands on a fresh Debian machine: `make test` and `make demo`.
# Each installs what it needs (Debian packages when missing, a virtualenv, the package).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test unit integration faults lint typecheck fixtures bench bench-compare demo system-deps venv clean

system-deps:
	@PYTHON=$(PYTHON) bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml setup.py invalidator/hotpath/_hotpath.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@$(PY) -m pip install -q -e '.[dev]' >>$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

test: system-deps venv
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

integration: system-deps venv
	$(PY) -m pytest -m integration

faults: system-deps venv
	$(PY) -m pytest -m faults -s

lint: venv
	$(VENV)/bin/ruff check invalidator tests bench scripts
	$(VENV)/bin/ruff format --check invalidator tests bench scripts

typecheck: venv
	$(VENV)/bin/mypy

fixtures: system-deps venv
	$(PY) scripts/make_fixtures.py tests/fixtures

bench: system-deps venv
	$(PY) bench/report.py $(BENCH_ARGS)

# An old commit vs this working tree, side by side in one run on this machine:
# `make bench-compare BASE=<rev>`, COMPARE_ARGS=--quick for a smoke run.
BASE ?= 721c105
bench-compare: system-deps venv
	$(PY) bench/compare.py --base $(BASE) $(COMPARE_ARGS)

demo: system-deps venv
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
