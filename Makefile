# Two commands on a fresh Debian machine: `make test` and `make demo`.
# Each installs what it needs (Debian packages when missing, a virtualenv, the package).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test unit integration faults coverage lint typecheck fixtures placement-vectors bench bench-compare demo system-deps demo-deps venv clean

system-deps:
	@PYTHON=$(PYTHON) bash scripts/install-system-deps.sh --for test

# The demo's packages only (no dnsmasq: it runs no DNS discovery).
demo-deps:
	@PYTHON=$(PYTHON) bash scripts/install-system-deps.sh --for demo

$(STAMP): pyproject.toml setup.py invalidator/hotpath/_hotpath.c invalidator/hotpath/placement.c invalidator/hotpath/placement.h
	@test -x $(PY) || { echo "venv: creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "venv: installing the package and its dependencies (pip; about a minute the first time)"
	@start=$$(date +%s); \
	$(PY) -m pip install -q --upgrade pip >$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }; \
	$(PY) -m pip install -q -e '.[dev]' >>$(VENV)/pip.log 2>&1 || { cat $(VENV)/pip.log; exit 1; }; \
	echo "venv: ready in $$(( $$(date +%s) - start )) s (log: $(VENV)/pip.log)"
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

# coverage: the whole suite under coverage.py (branch), in pytest's process and in every Python
# subprocess it starts (daemon, CLI commands), combined; per-module report on the terminal and in
# .coverage-report.txt, HTML in .coverage-html/. Several minutes. Config: [tool.coverage.*] in
# pyproject.toml. PYTEST_ARGS narrows the run (e.g. PYTEST_ARGS=tests/unit); the exit status is pytest's.
coverage: system-deps venv
	@rm -rf .coverage-data .coverage-html .coverage-report.txt
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	cp scripts/coverage_autosave.py "$$site/_coverage_autosave.py"; \
	echo 'import os; os.environ.get("COVERAGE_PROCESS_CONFIG") and __import__("_coverage_autosave")' \
	  > "$$site/zz_coverage_autosave.pth"
	@status=0; $(PY) -m coverage run -m pytest $(PYTEST_ARGS) || status=$$?; \
	files=$$(ls .coverage-data | wc -l); \
	$(PY) -m coverage combine -q --keep || exit 1; \
	{ $(PY) -m coverage report --keep-combined; \
	  echo; \
	  echo "Combined $$files data files: pytest's process and $$((files - 1)) Python subprocesses."; \
	  echo "Not measured: the C extension invalidator/hotpath/_hotpath.c (coverage.py sees Python only)."; \
	  echo "Subprocesses save at exit, on SIGTERM, and every 0.2 s (scripts/coverage_autosave.py):"; \
	  echo "a SIGKILL'd one (DaemonProcess.stop/kill) loses what ran in its last 0.2 s, for a"; \
	  echo "short fixture daemon often its whole test: daemon-side figures are a lower bound."; \
	} | tee .coverage-report.txt; \
	$(PY) -m coverage html -q --keep-combined; \
	echo "HTML: .coverage-html/index.html"; \
	exit $$status

lint: venv
	$(VENV)/bin/ruff check invalidator tests bench scripts
	$(VENV)/bin/ruff format --check invalidator tests bench scripts
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

fixtures: system-deps venv
	$(PY) scripts/make_fixtures.py tests/fixtures

# Key -> node vectors from the real client libraries (tests/fixtures/placement/README.md):
# installs them (Debian packages when missing, PyPI into .venv-vectors, ...) and runs every
# scripts/placement_vectors/*_vectors.py and *_vectors.sh.
placement-vectors:
	@PYTHON=$(PYTHON) bash scripts/placement_vectors/run.sh

bench: system-deps venv
	$(PY) bench/report.py $(BENCH_ARGS)

# An old commit vs this working tree, side by side in one run on this machine:
# `make bench-compare BASE=<rev>`, COMPARE_ARGS=--quick for a smoke run.
BASE ?= 721c105
bench-compare: system-deps venv
	$(PY) bench/compare.py --base $(BASE) $(COMPARE_ARGS)

demo: demo-deps venv
	$(PY) scripts/demo.py

clean:
	rm -rf $(VENV) .venv-vectors .pytest_cache .mypy_cache .ruff_cache build *.egg-info
