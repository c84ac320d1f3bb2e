#!/usr/bin/env bash
# The npm memcached package's placement vectors: usage node_memcached_vectors.sh OUT_DIR.
set -euo pipefail
out=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/npm_packages.sh"
cd "$here"
"$python" node_memcached_record.py "$out" \
  "memcached $(npm_version memcached), hashring $(npm_version hashring) (npm), node $(node --version)"
