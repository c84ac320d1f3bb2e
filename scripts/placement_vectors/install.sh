#!/usr/bin/env bash
# Installs what the Python/PHP placement-vector generators need (`make placement-vectors`):
# Debian packages only when missing (libmemcached-dev for pylibmc's build, php-cli and
# php-memcached; memcached for the live cross-check), and a separate virtualenv
# .venv-vectors holding the client libraries
# from PyPI: pylibmc built from source against Debian's libmemcached 1.1.4,
# python-memcached, pymemcache. Other languages' generators install their own tools.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VECTORS_VENV:-.venv-vectors}
need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in libmemcached-dev php-cli php-memcached memcached gcc libc6-dev python3-dev zlib1g-dev; do
    have_pkg "$pkg" || need+=("$pkg")
done
if ((${#need[@]} > 0)); then
    echo "installing Debian packages: ${need[*]}" >&2
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
stamp="$VENV/.installed"
if [[ ! -f $stamp ]]; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >"$VENV/pip.log" 2>&1 || { cat "$VENV/pip.log"; exit 1; }
    # --no-binary: pylibmc's wheel bundles its own libmemcached; build against Debian's.
    "$VENV/bin/python" -m pip install -q --no-binary pylibmc pylibmc python-memcached pymemcache \
        >>"$VENV/pip.log" 2>&1 || { cat "$VENV/pip.log"; exit 1; }
    touch "$stamp"
fi
