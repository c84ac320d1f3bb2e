#!/usr/bin/env bash
# memjs's placement vectors: usage memjs_vectors.sh OUT_DIR (node and npm needed).
set -euo pipefail
out=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/npm_packages.sh"
cd "$here"
"$python" memjs_record.py "$out" "memjs $(npm_version memjs) (npm), node $(node --version)"
