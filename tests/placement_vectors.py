"""Loads the placement vectors recorded from the real client libraries
(tests/fixtures/placement/, written by `make placement-vectors`)."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "placement"
sys.path.insert(0, str(ROOT / "scripts" / "placement_vectors"))

import corpus  # noqa: E402


@dataclass(frozen=True)
class VectorCase:
    name: str
    servers: tuple[str, ...]
    owners: tuple[int, ...]


@dataclass(frozen=True)
class VectorSet:
    path: Path
    client: str
    behaviors: dict[str, Any]
    library: str
    cases: tuple[VectorCase, ...]

    @property
    def id(self) -> str:
        return self.path.name.removesuffix(".json.gz")


_KEYS: list[str] | None = None


def corpus_keys() -> list[str]:
    """The corpus keys, in the order every vector's ``owners`` follows."""
    global _KEYS
    if _KEYS is None:
        _KEYS = corpus.keys()
    return _KEYS


def keys_sha256() -> str:
    return hashlib.sha256(json.dumps(corpus_keys(), ensure_ascii=False).encode()).hexdigest()


def load(path: Path) -> VectorSet:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        data = json.load(handle)
    if data["keys_sha256"] != keys_sha256():
        raise ValueError(
            f"{path.name}: recorded over another key corpus; run make placement-vectors"
        )
    cases = tuple(
        VectorCase(c["name"], tuple(c["servers"]), tuple(c["owners"])) for c in data["cases"]
    )
    return VectorSet(path, data["client"], data.get("behaviors") or {}, data["library"], cases)


def vector_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.json.gz"))


def vector_sets() -> Iterator[VectorSet]:
    for path in vector_files():
        yield load(path)
