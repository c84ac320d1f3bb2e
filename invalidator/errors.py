"""The one exception tree of the invalidator; every driver error is mapped into it.

InvalidatorError                 base; ``str()`` is one line fit for a user
├── ConfigError                  unusable configuration (file, rule, field)   → exit 2
├── DecodeError                  malformed wal2json input (file, line)        → exit 2
├── SourceError                  PostgreSQL / replication failures
└── CacheError                   memcached failures
    └── NodeError                one node failed (carries ``node``)
"""

from __future__ import annotations


class InvalidatorError(Exception):
    """Base of every error the invalidator raises on purpose."""

    exit_code = 1


class ConfigError(InvalidatorError):
    """The configuration or rules cannot be used; the message names file, rule and field."""

    exit_code = 2


class DecodeError(InvalidatorError):
    """A wal2json record could not be decoded."""

    exit_code = 2

    def __init__(self, reason: str, *, source: str | None = None, line: int | None = None):
        self.reason = reason
        self.source = source
        self.line = line
        super().__init__(self._render())

    def _render(self) -> str:
        if self.source is not None and self.line is not None:
            return f"{self.source}:{self.line}: {self.reason}"
        return self.reason

    def at(self, source: str, line: int) -> DecodeError:
        """The same error, located in ``source`` at ``line``."""
        return DecodeError(self.reason, source=source, line=line)


class SourceError(InvalidatorError):
    """Reading changes from PostgreSQL failed."""


class CacheError(InvalidatorError):
    """Applying operations to memcached failed."""


class NodeError(CacheError):
    """One memcached node failed or answered with an error."""

    def __init__(self, node: str, reason: str):
        self.node = node
        self.reason = reason
        super().__init__(f"memcached node {node}: {reason}")
