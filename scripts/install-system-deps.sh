#!/usr/bin/env bash
# Installs the Debian packages `make test` or `make demo` needs, only those missing, and
# says what it installs and how long each step took.
#
#   scripts/install-system-deps.sh [--for test|demo] [--list]
#
# demo (`make demo`): PostgreSQL 15 with wal2json, memcached, runuser (util-linux) to run
#   PostgreSQL unprivileged when we are root, gcc + Python headers for the package's C
#   extension, and libmemcached's headers for the virtualenv's pylibmc.
# test (`make test`, the default): the demo's packages, plus dnsmasq (a real DNS server for
#   the discovery tests).
# --list prints the packages of that purpose, one a line, and installs nothing.
set -euo pipefail
purpose=test
list=0
while (($#)); do
    case "$1" in
        --for) purpose=${2:?--for test|demo}; shift 2 ;;
        --for=*) purpose=${1#--for=}; shift ;;
        --list) list=1; shift ;;
        *) echo "usage: $0 [--for test|demo] [--list]" >&2; exit 2 ;;
    esac
done
# libmemcached-dev, zlib1g-dev: pylibmc (the dev extra every `make venv` installs; the live
# placement tests) builds against them where PyPI has no wheel for the platform.
demo_pkgs=(postgresql-15 postgresql-15-wal2json postgresql-client-15 memcached util-linux
    libmemcached-dev zlib1g-dev)
case "$purpose" in
    demo) pkgs=("${demo_pkgs[@]}") ;;
    test) pkgs=("${demo_pkgs[@]}" dnsmasq-base) ;;
    *) echo "error: --for takes test or demo, not $purpose" >&2; exit 2 ;;
esac
if ((list)); then
    printf '%s\n' "${pkgs[@]}"
    exit 0
fi
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in "${pkgs[@]}"; do
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
say() { echo "system-deps ($purpose): $*" >&2; }
say "installing Debian packages: ${need[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "error: need root or sudo to install ${need[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
start=$SECONDS
say "apt-get update ..."
$SUDO apt-get update -qq
say "apt-get update done in $((SECONDS - start)) s; installing (usually 20-60 s) ..."
start=$SECONDS
# policy-rc.d on CI images refuses service starts; we never want the system services anyway.
# Progress: one line per package as dpkg sets it up.
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" 2>&1 \
    | { grep --line-buffered -E '^(Setting up|E:) ' || true; } \
    | sed -u "s/^/system-deps ($purpose):   /" >&2
status=${PIPESTATUS[0]}
if ((status != 0)); then
    say "apt-get install failed (exit $status)"
    exit "$status"
fi
say "installed ${#need[@]} packages in $((SECONDS - start)) s"
