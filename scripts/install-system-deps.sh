#!/usr/bin/env bash
# Installs the Debian packages the test suite and the demo need, only when missing.
# PostgreSQL 15 with wal2json, memcached, dnsmasq (a real DNS server for the discovery
# tests), and runuser (util-linux) to run PostgreSQL
# unprivileged when we are root; gcc and Python headers for the package's C extension.
set -euo pipefail
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# libmemcached-dev, zlib1g-dev: pylibmc (dev extra; the live placement tests) builds against them
# where PyPI has no wheel for the platform.
for pkg in postgresql-15 postgresql-15-wal2json postgresql-client-15 memcached util-linux dnsmasq-base \
    libmemcached-dev zlib1g-dev; do
    have_pkg "$pkg" || need+=("$pkg")
done
# The package compiles a C extension (invalidator/hotpath/_hotpath.c): a compiler, and the
# headers of the Python that builds the virtualenv (Debian's python3-dev for Debian's own).
command -v gcc >/dev/null || need+=(gcc libc6-dev)
PY=${PYTHON:-python3}
if ! "$PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then
    [[ $(command -v "$PY") == /usr/bin/* ]] && need+=(python3-dev)
fi
if ((${#need[@]} == 0)); then
    exit 0
fi
echo "installing Debian packages: ${need[*]}" >&2
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "error: need root or sudo to install ${need[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d on CI images refuses service starts; we never want the system services anyway.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
