"""The daemon's one event loop: a selector over every node's socket and the source's.

One thread. Each turn: timers (membership, re-deletes, node timeouts), one ``select``,
node I/O, the source's read (only while every healthy node is below its window, so a
1,000,000-row transaction is throttled rather than held in memory), queued writes, then
the source acknowledges what memcached confirmed. Between sessions (reconnect backoff)
and at shutdown the same loop runs with no source, keeping memcached work moving.
"""

from __future__ import annotations

import contextlib
import selectors
import time
from collections.abc import Callable

from invalidator.runtime.membership import Membership
from invalidator.runtime.pipeline import Pipeline
from invalidator.runtime.telemetry import Telemetry
from invalidator.sinks.memcached.channel import NodeChannel
from invalidator.sinks.memcached.nodeset import NodeSet
from invalidator.sources.base import Session

IDLE_WAIT = 0.2  # longest select when nothing is due
SERVICE_WAIT = 0.05  # longest select with no source (backoff, drain): timeouts stay prompt
_REPLICA_WAKE = object()  # the selector's tag for the replica gate's wake-up pipe


class EventLoop:
    """Drives nodes, timers and (while streaming) a source session."""

    def __init__(
        self,
        nodes: NodeSet,
        pipeline: Pipeline,
        membership: Membership,
        telemetry: Telemetry,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.nodes = nodes
        self.pipeline = pipeline
        self.membership = membership
        self.telemetry = telemetry
        self.clock = clock
        self.selector = selectors.DefaultSelector()
        if pipeline.gate is not None:
            self.selector.register(pipeline.gate.fileno(), selectors.EVENT_READ, _REPLICA_WAKE)
        self.stopping = False
        self.deadline = 0.0  # when stopping: finish in-flight work until then

    def stream(self, session: Session) -> None:
        """Run ``session`` until asked to stop and its work is done (or the deadline)."""
        fd = session.fileno()
        registered = False
        wait = 0.0  # how soon the session wants its next turn
        buffered = session.buffered
        try:
            while True:
                now = self.clock()
                if self.stopping and (self.pipeline.pending == 0 or now > self.deadline):
                    break
                want = not self.stopping and self.nodes.below_window() and session.may_read(now)
                if want != registered:
                    if want:
                        self.selector.register(fd, selectors.EVENT_READ, None)
                    else:
                        self.selector.unregister(fd)
                    registered = want
                ready = self._turn(now, wait, want and buffered())
                if want:
                    session.read(ready, self.clock())
                wait = self._finish_turn(session)
        finally:
            if registered:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(fd)

    def service(self, until: float, *, drain: bool = False) -> None:
        """Keep memcached work moving with no source, until ``until`` (a stop request
        ends a backoff early; ``drain`` ends when nothing is pending)."""
        while True:
            now = self.clock()
            if now >= until or (self.stopping and not drain):
                return
            if drain and self.pipeline.pending == 0:
                return
            self._turn(now, min(SERVICE_WAIT, until - now), False)
            self._finish_turn(None)

    def _turn(self, now: float, wait: float, source_buffered: bool) -> bool:
        """Timers, one select and node I/O; returns whether the source's socket is ready."""
        self.telemetry.health.last_loop = now
        if now >= self.membership.next_check:
            self.membership.tick(now)
        pipeline = self.pipeline
        next_timer = pipeline.tick(now) if pipeline.timers else None
        nodes = self.nodes
        nodes.check_timeouts(now)
        nodes.register(self.selector, now)
        timeout = 0.0 if nodes.wants_write or source_buffered else min(IDLE_WAIT, wait)
        if next_timer is not None:
            timeout = min(timeout, max(0.0, next_timer - now))
        ready = source_buffered
        settled = pipeline.settled
        for key, events in self.selector.select(max(0.0, timeout)):
            channel: NodeChannel | None = key.data
            if channel is None:
                ready = True
                continue
            if channel is _REPLICA_WAKE:
                assert pipeline.gate is not None
                pipeline.gate.drain()
                pipeline.tick(self.clock())  # a replica moved: release what it replayed
                continue
            settled(nodes.on_event(channel, events))
        return ready

    def _finish_turn(self, session: Session | None) -> float:
        """Queued writes, the source's acknowledgements, metrics; returns the session's
        next wait."""
        now = self.clock()
        self.nodes.write_ready(now)
        wait = session.after_turn(now) if session is not None else IDLE_WAIT
        if self.telemetry.due(now):
            confirmed, server_end = session.progress() if session is not None else (0, 0)
            self.telemetry.publish(confirmed, server_end, self.nodes.pending_by_node())
            if self.pipeline.gate is not None:
                self.pipeline.gate.publish(now)
        return wait

    def close(self) -> None:
        self.selector.close()
        self.nodes.forget_selector()
        self.nodes.close()
