"""The import layers of ARCHITECTURE.md are enforced: the tree keeps them, a violation fails.

Runs import-linter (the contracts in pyproject.toml) on the package as it is, and on a
copy with one deliberate violation each, so the contracts are proven able to fail.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: install the dev extra (make venv)"
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and its contracts, copied where a test may break them."""
    shutil.copytree(
        ROOT / "invalidator",
        tmp_path / "invalidator",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def violate(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # deliberate violation\n")


def test_the_tree_keeps_every_contract() -> None:
    """make lint's import-linter run passes on the package as it is."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_driver_imported_by_the_core_breaks_the_build(copy: Path) -> None:
    """core/ importing psycopg fails the 'no driver in the core' contract."""
    violate(copy, "invalidator/core/templates.py", "import psycopg")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "The core is plain functions over plain data" in result.stdout
    assert "invalidator.core.templates -> psycopg" in result.stdout


def test_an_import_against_the_flow_breaks_the_build(copy: Path) -> None:
    """core/ importing the runtime (an arrow against the layers) fails the layers contract."""
    violate(copy, "invalidator/core/rules.py", "import invalidator.runtime.telemetry")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "Layers: commands > runtime" in result.stdout
    assert "BROKEN" in result.stdout


def test_a_source_importing_the_sink_breaks_the_build(copy: Path) -> None:
    """sources/ and sinks/ are independent: a source feeds the pipeline through Feed."""
    violate(copy, "invalidator/sources/logical.py", "import invalidator.sinks.memcached.nodeset")
    result = lint_imports(copy)
    assert result.returncode != 0
    assert "invalidator.sources.logical -> invalidator.sinks.memcached.nodeset" in result.stdout
