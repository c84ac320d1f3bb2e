#!/usr/bin/env bash
# spymemcached's placement vectors: usage spymemcached_vectors.sh OUT_DIR. Installs
# Debian's libspymemcached-java (and a JDK) when missing; the oracle runs as a Java
# single-file source program, so nothing is built.
set -euo pipefail
out=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
jar=/usr/share/java/spymemcached.jar
. "$here/debian_packages.sh"
command -v java >/dev/null || need_debian default-jdk-headless
need_debian libspymemcached-java
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
package=$(dpkg-query -W -f '${Version}' libspymemcached-java)
java_version=$(java -XshowSettings:properties -version 2>&1 | sed -n 's/ *java.version = //p')
cd "$here"
"$python" spymemcached_record.py "$out" "$jar" \
  "spymemcached ${package%%+*} (Debian libspymemcached-java $package), Java $java_version"
