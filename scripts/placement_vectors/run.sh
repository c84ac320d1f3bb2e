#!/usr/bin/env bash
# `make placement-vectors`: installs the client libraries (install.sh) and runs every
# generator in this folder — each *_vectors.py with .venv-vectors' Python, each
# *_vectors.sh with bash — with OUT_DIR (also its first argument) = tests/fixtures/placement.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OUT_DIR=${OUT_DIR:-tests/fixtures/placement}
VENV=${VECTORS_VENV:-.venv-vectors}
bash scripts/placement_vectors/install.sh
mkdir -p "$OUT_DIR"
shopt -s nullglob
for generator in scripts/placement_vectors/*_vectors.py; do
    echo "== $generator" >&2
    "$VENV/bin/python" "$generator" "$OUT_DIR"
done
for generator in scripts/placement_vectors/*_vectors.sh; do
    echo "== $generator" >&2
    bash "$generator" "$OUT_DIR"
done
