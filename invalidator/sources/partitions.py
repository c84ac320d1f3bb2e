"""Partitions of watched tables: known ones at start, new ones resolved when first seen.

A rule on a partitioned table also matches its partitions. wal2json and the outbox name
the partition, not the parent, so a change of an unknown table is looked up once
(``pg_partition_ancestors``) and, if a watched table is among its ancestors, its rules
apply from then on.
"""

from __future__ import annotations

from invalidator.core.rules import TableName
from invalidator.sources.base import Feed
from invalidator.sources.catalog import Admin


def regclass(name: TableName) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name)


class PartitionWatcher:
    """Resolves tables no rule names to a watched ancestor, once per table."""

    def __init__(self, admin: Admin, feed: Feed):
        self.admin = admin
        self.feed = feed
        self._seen: dict[TableName, TableName | None] = {}

    def __call__(self, name: TableName) -> None:
        if name in self._seen:
            return
        rows = (
            self.admin.query(
                "SELECT n.nspname, c.relname FROM pg_partition_ancestors(%s::regclass) a"
                " JOIN pg_class c ON c.oid = a.relid JOIN pg_namespace n ON n.oid ="
                " c.relnamespace WHERE a.relid <> %s::regclass",
                (regclass(name), regclass(name)),
            )
            if self._exists(name)
            else []
        )
        parent = next(((s, t) for s, t in rows if (s, t) in self.feed.rules.by_table), None)
        self._seen[name] = parent
        if parent is not None:
            self.feed.add_partition(name, parent)
            self.feed.log.info(
                "new partition watched", partition=".".join(name), parent=".".join(parent)
            )

    def _exists(self, name: TableName) -> bool:
        return bool(
            self.admin.query(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s",
                name,
            )
        )
