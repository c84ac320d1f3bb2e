# Sourced by the npm clients' *_vectors.sh: installs the pinned npm packages into
# .vectors/npm (gitignored) when missing and exports NODE_PATH to them.
# memcached 2.2.2 brings hashring 3.2.0; memjs 1.3.2.
npm_root="$root/.vectors/npm"
if [ ! -d "$npm_root/node_modules/memcached" ] || [ ! -d "$npm_root/node_modules/memjs" ]; then
  npm install --silent --no-audit --no-fund --prefix "$npm_root" memcached@2.2.2 memjs@1.3.2 >/dev/null
fi
export NODE_PATH="$npm_root/node_modules"
npm_version() { node -p "require('$1/package.json').version"; }
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
