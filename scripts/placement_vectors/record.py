"""Writes one vector file (tests/fixtures/placement/README.md has the format)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import corpus


def config_server(host: str, port: int | None, weight: int | None = None) -> str:
    """A corpus host as ``pools.NAME.servers`` takes it (``[v6]:port``, optional weight)."""
    text = f"[{host}]" if ":" in host else host
    if port is not None:
        text += f":{port}"
    if weight is not None:
        text += f" {weight}"
    return text


def keys_sha256(keys: list[str]) -> str:
    return hashlib.sha256(json.dumps(keys, ensure_ascii=False).encode()).hexdigest()


def write(
    out_dir: Path,
    name: str,
    *,
    client: str,
    behaviors: dict[str, Any],
    library: str,
    generator: str,
    cases: list[dict[str, Any]],
    skipped: dict[str, str],
) -> Path:
    keys = corpus.keys()
    for case in cases:
        if len(case["owners"]) != len(keys):
            raise ValueError(
                f"{name}/{case['name']}: {len(case['owners'])} owners, {len(keys)} keys"
            )
    path = out_dir / f"{name}.json.gz"
    document = {
        "client": client,
        "behaviors": behaviors,
        "library": library,
        "generator": generator,
        "skipped": skipped,
        "keys_sha256": keys_sha256(keys),
        "cases": cases,
    }
    # mtime=0: the same vectors give the same bytes, so a regeneration shows no diff.
    with gzip.GzipFile(path, "wb", mtime=0) as raw:
        raw.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode())
    return path
