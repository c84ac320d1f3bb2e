"""Records spymemcached's placement for every locator and hash algorithm (run by
spymemcached_vectors.sh with Debian's libspymemcached-java and a JDK)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import corpus
import oracle
import record

LOCATORS = ("ARRAY_MOD", "CONSISTENT")
HASHES = ("NATIVE", "CRC", "FNV1_64", "FNV1A_64", "FNV1_32", "FNV1A_32", "KETAMA")


def behaviors(locator: str, hash_name: str) -> dict[str, str]:
    """pools.NAME.behaviors for a locator and hash ({} for the defaults)."""
    if (locator, hash_name) == ("ARRAY_MOD", "NATIVE"):
        return {}
    return {"locator": locator.lower(), "hash": hash_name.lower()}


def file_name(locator: str, hash_name: str) -> str:
    chosen = behaviors(locator, hash_name)
    suffix = "".join(f"-{v.replace('_', '-')}" for v in chosen.values())
    return f"spymemcached{suffix}"


def express(locator: str, case: dict[str, Any]) -> str | tuple[list[str], list[str], str]:
    """(app servers, pools.NAME.servers, the oracle's spec arguments) or a skip reason."""
    if any(p is None for _, p in case["hosts"]):
        return "AddrUtil needs host:port (no default port)"
    if case["weights"] is not None and locator == "ARRAY_MOD":
        return "weights are KetamaConnectionFactory's, for the consistent locator only"
    if locator == "CONSISTENT" and oracle.has_hostname(case):
        return (
            "the ketama continuum hashes InetSocketAddress.toString(), 'host/<resolved IP>:port'"
            " for a name: it depends on DNS at client start"
        )
    app = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in case["hosts"]]
    # Names only reach ARRAY_MOD, which never reads them: created unresolved, no DNS.
    args = [
        text if oracle.is_ip(host) else f"name/{text}"
        for text, (host, _) in zip(app, case["hosts"], strict=True)
    ]
    if case["weights"] is not None:
        args = [f"{a}={w}" for a, w in zip(args, case["weights"], strict=True)]
    return app, oracle.config_servers(case, weights=True), " ".join(args)


def main(out_dir: Path, jar: str, library: str) -> None:
    runs = [(loc, h) for loc in LOCATORS for h in HASHES]
    specs: list[str] = []
    plans: list[tuple[str, str, list[tuple[dict[str, Any], list[str], list[str]]], dict[str, str]]]
    plans = []
    for locator, hash_name in runs:
        expressed: list[tuple[dict[str, Any], list[str], list[str]]] = []
        skipped: dict[str, str] = {}
        for case in corpus.server_lists():
            got = express(locator, case)
            if isinstance(got, str):
                skipped[case["name"]] = got
                continue
            app, servers, args = got
            specs.append(f"{locator} {hash_name}_HASH {args}")
            expressed.append((case, app, servers))
        plans.append((locator, hash_name, expressed, skipped))
    with tempfile.TemporaryDirectory() as tmp:
        keys = oracle.write_keys(Path(tmp))
        done = subprocess.run(
            ["java", "-cp", jar, "spymemcached_oracle.java", str(keys)],
            input="\n".join(specs) + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
    rows = iter(done.stdout.splitlines())
    for locator, hash_name, expressed, skipped in plans:
        cases = []
        for case, app, servers in expressed:
            owners = [int(x) for x in next(rows).split()]
            if len(owners) != corpus.KEY_COUNT or not all(-1 <= o < len(app) for o in owners):
                raise RuntimeError(f"spymemcached_oracle.java: bad answers for {case['name']}")
            cases.append(
                {"name": case["name"], "servers": servers, "app_servers": app, "owners": owners}
            )
        path = record.write(
            out_dir,
            file_name(locator, hash_name),
            client="spymemcached",
            behaviors=behaviors(locator, hash_name),
            library=library,
            generator="scripts/placement_vectors/spymemcached_vectors.sh",
            cases=cases,
            skipped=skipped,
        )
        print(f"{path}: {len(cases)} server lists, {len(skipped)} skipped")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
