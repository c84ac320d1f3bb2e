"""Where committed changes come from: one module per kind of source (see ``base``)."""

from __future__ import annotations

from invalidator.config import NO_DSN, Config
from invalidator.core.rules import RuleSet
from invalidator.errors import SourceError
from invalidator.sources.base import ChangeSource


def source_for(config: Config, rules: RuleSet) -> ChangeSource:
    """The configured source (``source.kind``); raises SourceError without a DSN."""
    if config.source.dsn is None:
        raise SourceError(NO_DSN)
    dsn = config.source.dsn.get_secret_value()
    if config.source.kind == "notify":
        from invalidator.sources.notify import NotifySource

        return NotifySource(config.source, dsn, rules)
    if config.source.kind == "pgoutput":
        from invalidator.sources.pgoutput_source import PgOutputSource

        return PgOutputSource(config.source, dsn, rules)
    from invalidator.sources.logical import LogicalSource

    return LogicalSource(config.source, dsn)
