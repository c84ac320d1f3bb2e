"""A server entry's optional weight: ``"host:port weight"`` (clients that weigh nodes)."""

from __future__ import annotations


def split_weight(server: str) -> tuple[str, int | None]:
    """``"10.0.0.1:11211 3"`` → (``"10.0.0.1:11211"``, 3); without a weight → (server, None).

    A weight is a positive integer after one space; anything else is refused by name.
    """
    text = server.strip()
    head, sep, tail = text.rpartition(" ")
    if not sep:
        return text, None
    try:
        weight = int(tail)
    except ValueError:
        raise ValueError(f"{server!r}: a weight is a whole number after the server") from None
    if weight < 1 or not head.strip():
        raise ValueError(f"{server!r}: a weight is a whole number of at least 1")
    return head.strip(), weight
