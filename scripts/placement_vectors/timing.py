"""The client libraries' own placement speed, for bench/placement.py's library column.

Runs a vector oracle of this folder in its timing mode (``PLACEMENT_TIMING=1``: the
library's own placement call over the keys, repeated for at least a second, printed as
``keys_per_s=N``). Only what is already on the machine is used — the toolchains, the
Debian packages and ``.vectors/npm`` that ``make placement-vectors`` installs; when one
is missing the answer says so ("not measured (no go)") instead of installing it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BUILD = ROOT / ".vectors"
SPY_JAR = Path("/usr/share/java/spymemcached.jar")
GO_LIBRARY = Path("/usr/share/gocode/src/github.com/bradfitz/gomemcache")
NPM = BUILD / "npm" / "node_modules"

Result = tuple[str, "float | None"]


def measure(
    client: str, behaviors: dict[str, Any], servers: Sequence[str], keys: Sequence[str]
) -> Result:
    """(what was timed, keys/s) — or (why not, None)."""
    runner = {
        "gomemcache": _gomemcache,
        "dalli": _dalli,
        "memjs": _memjs,
        "node-memcached": _node_memcached,
        "spymemcached": _spymemcached,
        "php-memcached": _php_memcached,
    }.get(client)
    if runner is None:
        return "not measured (no timing mode for its oracle)", None
    with tempfile.TemporaryDirectory() as tmp:
        keys_file = Path(tmp) / "keys.txt"
        keys_file.write_text("".join(k + "\n" for k in keys), encoding="utf-8")
        return runner(keys_file, behaviors, list(servers))


def _run(what: str, argv: list[str], env: dict[str, str] | None = None, stdin: str = "") -> Result:
    done = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {}), "PLACEMENT_TIMING": "1"},
        timeout=120,
        check=False,
    )
    lines = [line for line in done.stdout.split() if line.startswith("keys_per_s=")]
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"not measured ({argv[0]} failed: {reason[:80]})", None
    return what, float(lines[0].split("=", 1)[1])


def _missing(tool: str) -> Result:
    return f"not measured (no {tool})", None


def _gomemcache(keys: Path, behaviors: dict[str, Any], servers: list[str]) -> Result:
    if shutil.which("go") is None:
        return _missing("go")
    if not GO_LIBRARY.is_dir():
        return _missing("golang-github-bradfitz-gomemcache-dev")
    source = HERE / "gomemcache_oracle.go"
    program = BUILD / "go" / "gomemcache_oracle"
    if not program.exists() or program.stat().st_mtime < source.stat().st_mtime:
        program.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "GO111MODULE": "off",
            "GOPATH": "/usr/share/gocode",
            "GOCACHE": str(program.parent / "cache"),
        }
        built = subprocess.run(
            ["go", "build", "-o", str(program), str(source)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            return f"not measured (go build failed: {built.stderr.strip()[:80]})", None
    return _run("gomemcache ServerList.PickServer", [str(program), str(keys), *servers])


def _dalli(keys: Path, behaviors: dict[str, Any], servers: list[str]) -> Result:
    if shutil.which("ruby") is None:
        return _missing("ruby")
    program = str(HERE / "dalli_oracle.rb")
    return _run("dalli Ring#server_for_key", ["ruby", program, str(keys), *servers])


def _node(package: str) -> Result | None:
    if shutil.which("node") is None:
        return _missing("node")
    if not (NPM / package).is_dir():
        return _missing(f"npm {package} in .vectors/npm: make placement-vectors")
    return None


def _memjs(keys: Path, behaviors: dict[str, Any], servers: list[str]) -> Result:
    missing = _node("memjs")
    if missing is not None:
        return missing
    program = str(HERE / "memjs_oracle.js")
    return _run(
        "memjs Client#server",
        ["node", program, str(keys), ",".join(servers)],
        env={"NODE_PATH": str(NPM)},
    )


def _node_memcached(keys: Path, behaviors: dict[str, Any], servers: list[str]) -> Result:
    missing = _node("memcached")
    if missing is not None:
        return missing
    program = str(HERE / "node_memcached_oracle.js")
    spec = json.dumps({"servers": servers, "options": behaviors})
    return _run(
        "memcached HashRing#get",
        ["node", program, str(keys), spec],
        env={"NODE_PATH": str(NPM)},
    )


def _spymemcached(keys: Path, behaviors: dict[str, Any], servers: list[str]) -> Result:
    if shutil.which("java") is None:
        return _missing("java")
    if not SPY_JAR.exists():
        return _missing("libspymemcached-java")
    locator = str(behaviors.get("locator", "array_mod")).upper()
    hash_name = str(behaviors.get("hash", "native")).upper().removesuffix("_HASH")
    spec = f"{locator} {hash_name}_HASH {' '.join(servers)}\n"
    program = str(HERE / "spymemcached_oracle.java")
    return _run(
        "spymemcached NodeLocator#getPrimary",
        ["java", "-cp", str(SPY_JAR), program, str(keys)],
        stdin=spec,
    )


def _php_memcached(keys: Path, behaviors: dict[str, Any], servers: list[str]) -> Result:
    if shutil.which("php") is None:
        return _missing("php")
    has = subprocess.run(["php", "-m"], capture_output=True, text=True, check=False).stdout
    if "memcached" not in has.split():
        return _missing("php-memcached")
    folder = keys.parent
    lines = keys.read_text(encoding="utf-8").splitlines()
    (folder / "keys.json").write_text(json.dumps(lines), encoding="utf-8")
    hosts = [[s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1])] for s in servers]
    case = {"name": "timing", "hosts": hosts, "weights": None}
    (folder / "servers.json").write_text(json.dumps([case]), encoding="utf-8")
    (folder / "options.json").write_text(json.dumps(list(behaviors.items())), encoding="utf-8")
    program = str(HERE / "php_memcached_vectors.php")
    argv = [
        "php",
        program,
        *(str(folder / f) for f in ("keys.json", "servers.json", "options.json")),
    ]
    return _run("php-memcached Memcached::getServerByKey", argv)
