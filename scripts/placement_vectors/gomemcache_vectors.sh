#!/usr/bin/env bash
# gomemcache's placement vectors: usage gomemcache_vectors.sh OUT_DIR.
# Installs Debian's golang-go and golang-github-bradfitz-gomemcache-dev when missing, builds
# gomemcache_oracle.go against them (GOPATH mode, no module download) into .vectors/go/.
set -euo pipefail
out=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/debian_packages.sh"
need_debian golang-go golang-github-bradfitz-gomemcache-dev
build="$root/.vectors/go"
mkdir -p "$build"
GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$build/cache" \
  go build -o "$build/gomemcache_oracle" "$here/gomemcache_oracle.go"
version=$(dpkg-query -W -f '${Version}' golang-github-bradfitz-gomemcache-dev)
go_version=$(go env GOVERSION)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
cd "$here"
"$python" gomemcache_record.py "$out" "$build/gomemcache_oracle" \
  "gomemcache $version (Debian golang-github-bradfitz-gomemcache-dev), $go_version"
