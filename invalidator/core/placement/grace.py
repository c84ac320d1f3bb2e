"""A membership change's grace period: old and new owners both get each operation."""

from __future__ import annotations

from invalidator.core.placement.base import Placement


class GracePlacement:
    """After a membership change, for ``grace`` seconds, delete on the new owner *and* on
    the old one (when still a member): apps whose own discovery lags still read there."""

    def __init__(
        self,
        new: Placement,
        old: Placement,
        until: float,
    ):
        self.new = new
        self.old = old
        self.until = until
        self.nodes = new.nodes
        self._live = frozenset(new.nodes)
        self.hot_mode: str | None = None  # two placements at once: Python's job

    def expired(self, now: float) -> bool:
        """The grace period is over at ``now`` (the clock ``until`` was set on)."""
        return now >= self.until

    def owners(self, key: str) -> tuple[str, ...]:
        owners = self.new.owners(key)
        extra = tuple(n for n in self.old.owners(key) if n in self._live and n not in owners)
        return owners + extra
