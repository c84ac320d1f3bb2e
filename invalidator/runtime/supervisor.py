"""``invalidator run``: keep a source session streaming; reconnect, stand by, stop cleanly.

The supervisor owns the process's lifetime: it opens a session of the configured source,
lets the event loop drive it, and on a failure backs off (0.2 s doubling to 10 s) while
the loop keeps memcached work moving. A slot streamed by another replica of the daemon
means standing by and taking over promptly. SIGTERM/SIGINT (e.g. Kubernetes'
terminationGracePeriodSeconds): stop reading, finish in-flight work for up to
``drain_timeout`` seconds, confirm the last applied position, return 0.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable, Mapping
from typing import Any

from invalidator.config import Config
from invalidator.config.build import compile_rules, node_addresses, static_router
from invalidator.core.audit import RecentRows
from invalidator.core.changes import lsn_to_int
from invalidator.errors import SourceError
from invalidator.runtime.audit import Auditor, AuditProbe, NodeReads
from invalidator.runtime.discovery import resolve
from invalidator.runtime.loop import EventLoop
from invalidator.runtime.membership import Membership, Resolver
from invalidator.runtime.metrics import Metrics
from invalidator.runtime.pipeline import Pipeline, ValueSource
from invalidator.runtime.replicas import gate_for
from invalidator.runtime.skips import SkipReporter
from invalidator.runtime.telemetry import Health, Telemetry
from invalidator.sinks.memcached.connector import PLAIN, Connector
from invalidator.sinks.memcached.nodeset import NodeSet
from invalidator.sinks.memcached.tls import pool_connectors
from invalidator.sources.base import ChangeSource
from invalidator.sources.postgres import SlotBusyError

RECONNECT_MIN = 0.2
RECONNECT_MAX = 10.0
SLOT_BUSY_RETRY = 1.0  # how often a standby replica tries to take the slot over
SKIP_LOG_EVERY = 60.0


class Supervisor:
    """One daemon: a source, the pipeline into memcached, and the loop that drives both."""

    def __init__(
        self,
        config: Config,
        source: ChangeSource,
        *,
        metrics: Metrics,
        log: Any,
        health: Health | None = None,
        values: ValueSource | None = None,
        drain_timeout: float = 5.0,
        connector: Connector = PLAIN,
        connectors: Mapping[str, Connector] | None = None,
        resolver: Resolver = resolve,
    ):
        self.source = source
        self.log = log
        self.drain_timeout = drain_timeout
        self.telemetry = Telemetry(metrics, log, health)
        self.health = self.telemetry.health
        if connectors is None:
            # Pool → connector: TLS pools get their own (certificates read now: a file
            # that cannot be used is a ConfigError), the others ``connector``.
            connectors = pool_connectors(config, connector, self._tls_reload)
        self.nodes = NodeSet(
            static_router(config).placements,
            node_addresses(config),
            max_queue={name: pool.max_queue for name, pool in config.pools.items()},
            on_error=self.telemetry.node_error,
            on_event=self.telemetry.node_event,
            connector=connector,
            connectors=connectors,
        )
        skips = SkipReporter(metrics, log, every=SKIP_LOG_EVERY)
        dsn = config.source.dsn.get_secret_value() if config.source.dsn is not None else None
        self.gate = gate_for(config.pools, self.telemetry, dsn)
        self.pipeline = Pipeline(
            compile_rules(config),
            self.nodes,
            self.telemetry,
            skips,
            values,
            gate=self.gate,
            trace=config.log.level == "debug",
        )
        self.membership = Membership(config, self.nodes, log, resolver)
        self.loop = EventLoop(self.nodes, self.pipeline, self.membership, self.telemetry)
        self._standing_by = False
        self.audit: AuditProbe | None = None
        if config.audit is not None:
            # Off the hot path: a thread with its own connections, reading the placements
            # the loop keeps current (discovered pools too).
            self.pipeline.recent = RecentRows(self.pipeline.rules.rules)
            auditor = Auditor(
                config,
                lambda: self.nodes.router.placements,
                NodeReads(pool_connectors(config)),
                rate=config.audit.rate,
                confirmed=self._confirmed if config.source.kind == "wal2json" else None,
                recent=self.pipeline.recent,
            )
            self.audit = AuditProbe(
                auditor,
                self.pipeline.rules.rules,
                metrics,
                log,
                active=lambda: self.health.streaming,
            )

    def _confirmed(self) -> int | None:
        """The WAL position confirmed last (read by the audit probe's thread)."""
        lsn = self.health.confirmed_lsn
        return lsn_to_int(lsn) if lsn else None

    def _tls_reload(self, pool: str, what: str, error: str | None) -> None:
        if error is None:
            self.log.info("tls certificates " + what, pool=pool)
        else:
            self.log.warning("tls certificates " + what, pool=pool, error=error)

    @property
    def stopping(self) -> bool:
        return self.loop.stopping

    def request_stop(self) -> None:
        loop = self.loop
        if not loop.stopping:
            loop.deadline = loop.clock() + self.drain_timeout
        loop.stopping = True

    def run(self) -> int:
        # What exists now (modules, config, rules) lives as long as the process: keep it
        # out of every collection.
        gc.freeze()
        if self.gate is not None:
            self.gate.start()
        if self.audit is not None:
            self.audit.start()
        delay = RECONNECT_MIN
        while not self.stopping:
            try:
                self._session()
                delay = RECONNECT_MIN
            except SlotBusyError as exc:
                self._standby(str(exc))
                self._backoff(SLOT_BUSY_RETRY)
                delay = RECONNECT_MIN
            except SourceError as exc:
                self.telemetry.not_streaming(str(exc))
                if self.stopping:
                    break
                self.log.warning(
                    "source unavailable; retrying", error=str(exc), retry_in=round(delay, 2)
                )
                self._backoff(delay)
                delay = min(delay * 2, RECONNECT_MAX)
        # One deadline for the whole stop (set by request_stop; a stop without a request,
        # which cannot happen through run(), gets a fresh one).
        deadline = self.loop.deadline if self.stopping else self.loop.clock() + self.drain_timeout
        self.loop.service(deadline, drain=True)
        if self.audit is not None:
            self.audit.stop()
        self.loop.close()
        if self.gate is not None:
            self.gate.close()
        self.source.close()
        if self.pipeline.values is not None:
            self.pipeline.values.close()
        self.telemetry.not_streaming()
        return 0

    def _session(self) -> None:
        self.membership.tick(self.loop.clock(), initial=True)
        session = self.source.open(self.pipeline)
        if self._standing_by:
            self.log.info("took over", source=self.source.kind, target=self.source.target)
            self._standing_by = False
        try:
            self.loop.stream(session)
        finally:
            session.close()
            self.pipeline.session_ended()
            self.telemetry.publish(*session.progress(), self.nodes.pending_by_node())
            self.health.streaming = False

    def _standby(self, reason: str) -> None:
        if not self._standing_by:
            self.log.info(
                "another replica is streaming; standing by",
                target=self.source.target,
                detail=reason,
            )
        self._standing_by = True
        self.telemetry.not_streaming(
            f"standby: {self.source.target} is streamed by another process"
        )

    def _backoff(self, seconds: float) -> None:
        self.loop.service(self.loop.clock() + seconds)


def install_signal_handlers(
    supervisor: Supervisor, log: Any, hook: Callable[[int], None] | None = None
) -> None:
    """SIGTERM/SIGINT ask the loop to stop; a second signal is not needed to exit."""

    def handler(signum: int, _frame: object) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        supervisor.request_stop()
        if hook is not None:
            hook(signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
