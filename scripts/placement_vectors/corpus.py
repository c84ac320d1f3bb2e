"""The keys and server lists every client library places for `make placement-vectors`.

Deterministic (seeded), so every generator — Python, Go, Java, PHP, Ruby, Node — places the
same keys over the same server lists. `python scripts/placement_vectors/corpus.py OUT_DIR`
writes them as `keys.json` and `servers.json` for generators in other languages.
Keys are valid memcached text-protocol keys: 1-250 bytes of UTF-8, no whitespace or control
characters.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

KEY_COUNT = 20_000
_SEED = 20261201
_ODD = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_UNICODE = "éàüßøñçÅЖжДλπΣ中文字日本語한국어🙂🚀€£¥"


def _valid(key: str) -> bool:
    data = key.encode("utf-8")
    return 0 < len(data) <= 250 and not any(
        c.isspace() or ord(c) < 33 or ord(c) == 127 for c in key
    )


def keys() -> list[str]:
    """KEY_COUNT distinct keys: typical app keys, random ASCII, 200-250-byte keys, UTF-8,
    punctuation-heavy ones."""
    rng = random.Random(_SEED)
    out: list[str] = []
    seen: set[str] = set()

    def add(key: str) -> None:
        if _valid(key) and key not in seen:
            seen.add(key)
            out.append(key)

    printable = [chr(c) for c in range(33, 127)]
    while len(out) < 8_000:
        n = rng.randrange(10**7)
        form = rng.randrange(5)
        add(
            (
                f"user:{n}",
                f"user_by_email:person{n}@example.com",
                f"product:{n}:v2",
                f"myapp:1:views.decorators.cache.cache_page.{n}",
                f"order:{n}:items",
            )[form]
        )
    while len(out) < 12_000:
        add("".join(rng.choice(printable) for _ in range(rng.randint(1, 60))))
    while len(out) < 14_000:
        size = rng.randint(200, 250)
        add("".join(rng.choice(printable) for _ in range(size)))
    while len(out) < 17_000:
        chars = printable + list(_UNICODE)
        key = "".join(rng.choice(chars) for _ in range(rng.randint(1, 40)))
        if not key.isascii():
            add(key)
    while len(out) < KEY_COUNT:
        add("".join(rng.choice(_ODD + "ab01") for _ in range(rng.randint(1, 30))))
    return out


def server_lists() -> list[dict[str, Any]]:
    """The server lists keys are placed over. Each case: ``name``; ``hosts`` as
    ``[host, port-or-None]`` pairs (None: the client's default port, written without one);
    ``weights`` (None, or one int per host, for clients that take weights). Generators skip
    cases their client cannot express and say so in the fixture."""
    cases: list[dict[str, Any]] = []

    def case(
        name: str, hosts: list[tuple[str, int | None]], weights: list[int] | None = None
    ) -> None:
        cases.append({"name": name, "hosts": [list(h) for h in hosts], "weights": weights})

    ip = lambda i, port=11211: (f"10.0.{i // 250}.{i % 250 + 1}", port)  # noqa: E731
    case("1-ip", [ip(0)])
    case("2-ip", [ip(i) for i in range(2)])
    case("3-ip", [ip(i) for i in range(3)])
    case(
        "3-hostname",
        [(f"memcached-{i}.memcached.caching.svc.cluster.local", 11211) for i in range(3)],
    )
    case("4-ports", [("127.0.0.1", 11211 + i) for i in range(4)])
    case(
        "5-mixed",
        [ip(0), ("cache-a.internal", 11211), ip(7, 11212), ("cache-b.internal", 21211), ip(9)],
    )
    case("8-ip", [ip(i) for i in range(8)])
    case("16-ip", [ip(i) for i in range(16)])
    case("3-default-port", [(f"memcached-{i}", None) for i in range(3)])
    case("3-ipv6", [("::1", 11211), ("fd00::2", 11211), ("fd00::3", 11212)])
    case("3-weighted", [ip(i) for i in range(3)], [1, 2, 3])
    case("5-weighted", [ip(i) for i in range(5)], [5, 1, 1, 2, 10])
    return cases


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    (out / "keys.json").write_text(json.dumps(keys(), ensure_ascii=False), encoding="utf-8")
    (out / "servers.json").write_text(json.dumps(server_lists()), encoding="utf-8")


if __name__ == "__main__":
    main()
