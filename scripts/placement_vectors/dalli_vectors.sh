#!/usr/bin/env bash
# dalli's placement vectors: usage dalli_vectors.sh OUT_DIR. Installs Debian's ruby and
# ruby-dalli when missing.
set -euo pipefail
out=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/debian_packages.sh"
need_debian ruby ruby-dalli
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
version=$(ruby -e 'require "dalli"; print Dalli::VERSION')
package=$(dpkg-query -W -f '${Version}' ruby-dalli)
cd "$here"
"$python" dalli_record.py "$out" "dalli $version (Debian ruby-dalli $package), $(ruby -e 'print RUBY_DESCRIPTION.split[0, 2].join(" ")')"
