# Two commands on a fresh Debian machine: `make test` and `make demo`.
# Each installs what it needs (Debian packages when missing, a virtualenv, the package).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test unit integration lint typecheck fixtures bench demo system-deps venv clean

system-deps:
	@bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip >/dev/null
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

test: system-deps venv
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest tests/unit

integration: system-deps venv
	$(PY) -m pytest -m integration

lint: venv
	$(VENV)/bin/ruff check invalidator tests bench scripts
	$(VENV)/bin/ruff format --check invalidator tests bench scripts

typecheck: venv
	$(VENV)/bin/mypy

fixtures: system-deps venv
	$(PY) scripts/make_fixtures.py tests/fixtures

bench: system-deps venv
	$(PY) bench/placement.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
