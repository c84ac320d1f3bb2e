"""The daemon in process: stopping (drain, deadline), a failing source (backoff, replay
from the confirmed position), standing by for a busy slot, and what it publishes."""

from __future__ import annotations

import os
import signal

from invalidator.core.changes import int_to_lsn
from invalidator.runtime.supervisor import install_signal_handlers
from invalidator.sources.postgres import SlotBusyError
from tests.fakes import (
    A,
    B,
    Harness,
    InProcessDaemon,
    SkewClock,
    ids_on,
    make_config,
    owner,
    updated,
    wait_until,
)


def confirmed(harness: Harness, position: int) -> None:
    wait_until(lambda: harness.source.confirmed >= position, f"position {position:#x} confirmed")


def in_flight(daemon: InProcessDaemon, node: str) -> None:
    daemon.wait_metric("pending_operations", 1, f"one operation pending on {node}", node=node)


def retries(daemon: InProcessDaemon) -> list[float]:
    return [r["retry_in"] for r in daemon.log.events("source unavailable; retrying")]


# -- stopping ---------------------------------------------------------------------------


def test_stop_finishes_in_flight_work_and_confirms_it_before_returning_0(
    harness: Harness,
) -> None:
    """request_stop() stops reading, waits for the work in flight, confirms its position
    and returns 0; a transaction committed after the request is left for the next run."""
    source, nodes = harness.source, harness.memcached
    key = f"user:{ids_on(A)[0]}"
    daemon = harness.start(make_config(), drain_timeout=30)
    nodes[A].pause()
    position = source.commit([updated(ids_on(A)[0])])
    in_flight(daemon, A)
    daemon.supervisor.request_stop()
    session = source.sessions[-1]
    turns = session.turns
    wait_until(lambda: session.turns >= turns + 2, "the loop to see the stop request")
    later = source.commit([updated(ids_on(B)[0])])
    assert not daemon.join(0.3), "run() returned with work in flight"
    nodes[A].resume()
    assert daemon.join(10) and daemon.result == 0
    assert source.confirmed == position < later
    assert nodes[A].deleted() == [key] and nodes[B].deleted() == []
    assert source.sessions[-1].closed
    assert daemon.metric("up") == 0 and not daemon.supervisor.health.streaming


def test_stop_with_a_hung_node_returns_0_without_confirming_its_work(harness: Harness) -> None:
    """A node that never answers does not hold the stop past the drain timeout; its work
    stays unconfirmed (it is streamed again by the next run)."""
    source, nodes = harness.source, harness.memcached
    daemon = harness.start(make_config(), drain_timeout=0.3)
    confirmed(harness, source.commit([updated(ids_on(B)[0])]))
    done = source.confirmed
    nodes[A].pause()
    source.commit([updated(ids_on(A)[0])])
    in_flight(daemon, A)
    assert daemon.stop() == 0
    assert source.confirmed == done
    assert nodes[A].deleted() == []


def test_stop_with_a_hung_node_waits_one_drain_timeout_not_two(harness: Harness) -> None:
    """Once drain_timeout has passed since the stop request, run() returns."""
    source, nodes = harness.source, harness.memcached
    clock = SkewClock()  # the daemon's time, moved forward by the test
    daemon = InProcessDaemon(make_config(), source, nodes, drain_timeout=60)
    daemon.use_clock(clock)
    harness.daemons.append(daemon.start())
    nodes[A].pause()
    source.commit([updated(ids_on(A)[0])])
    in_flight(daemon, A)
    daemon.supervisor.request_stop()
    try:
        assert not daemon.join(0.3), "run() returned before the drain timeout"
        clock.advance(61)  # the drain timeout has passed
        assert daemon.join(2), "run() still draining after drain_timeout"
    finally:
        clock.advance(61)  # (a second drain, if any, is over too)


def test_sigterm_asks_the_daemon_to_stop(harness: Harness) -> None:
    """With the signal handlers installed, SIGTERM stops the daemon cleanly (run() returns
    0 after confirming what was applied) and calls the hook."""
    daemon = harness.start(make_config())
    confirmed(harness, harness.source.commit([updated(1)]))
    hooked: list[int] = []
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        install_signal_handlers(daemon.supervisor, daemon.log, hooked.append)
        os.kill(os.getpid(), signal.SIGTERM)
        assert daemon.join(10) and daemon.result == 0
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert hooked == [signal.SIGTERM]
    assert daemon.log.events("stopping") == [{"signal": "SIGTERM"}]
    assert harness.source.sessions[-1].closed


def test_stop_while_the_source_is_unavailable_ends_the_backoff(harness: Harness) -> None:
    """A stop request during the reconnect backoff returns 0 without another attempt."""
    harness.source.fail_open("cannot connect", times=1000)
    daemon = harness.start(make_config())
    wait_until(lambda: len(retries(daemon)) >= 2, "two failed opens")
    assert daemon.stop() == 0
    assert harness.source.sessions == []


# -- the source -------------------------------------------------------------------------


def test_source_failing_to_open_is_retried_with_backoff_and_reported(harness: Harness) -> None:
    """While the source cannot be opened: up is 0, /readyz's last_error says why, retries
    back off (0.2 s doubling); once it opens the daemon streams and clears the error."""
    source = harness.source
    source.fail_open("cannot connect to PostgreSQL: connection refused", times=1000)
    daemon = harness.start(make_config())
    health = daemon.supervisor.health
    wait_until(lambda: len(retries(daemon)) >= 3, "three failed opens")
    assert retries(daemon)[:3] == [0.2, 0.4, 0.8]
    assert daemon.metric("up") == 0 and not health.streaming
    assert health.last_error == "cannot connect to PostgreSQL: connection refused"
    source.open_errors.clear()
    wait_until(lambda: daemon.metric("up") == 1, "streaming")
    assert health.streaming and health.last_error == ""
    position = source.commit([updated(7)])
    confirmed(harness, position)
    assert harness.memcached[owner("user:7")].deleted() == ["user:7"]


def test_source_dropping_mid_stream_reconnects_and_streams_unconfirmed_work_again(
    harness: Harness,
) -> None:
    """A read error ends the session; the next one resumes after the confirmed position, so
    a transaction whose work was unacknowledged is streamed (and delivered) again."""
    source, nodes = harness.source, harness.memcached
    user = ids_on(A)[0]
    daemon = harness.start(make_config())
    nodes[A].pause()
    position = source.commit([updated(user)])
    in_flight(daemon, A)
    source.fail_read("replication connection lost")
    wait_until(lambda: len(source.sessions) == 2, "a second session")
    first, second = source.sessions
    assert first.closed and retries(daemon) == [0.2]
    assert daemon.log.events("source unavailable; retrying")[0]["error"] == (
        "replication connection lost"
    )
    wait_until(lambda: second.streamed, "the transaction streamed again")
    assert second.streamed[0][0].position == position
    nodes[A].resume()
    confirmed(harness, position)
    assert set(nodes[A].deleted()) == {f"user:{user}"}
    wait_until(lambda: daemon.metric("up") == 1, "streaming again")


def test_busy_slot_means_standing_by_then_taking_over(harness: Harness) -> None:
    """A slot streamed by another replica: stand by (not ready, the reason in last_error),
    retry, and take over once it is free."""
    source = harness.source
    source.fail_open(SlotBusyError("replication slot is active for PID 4242"), times=1)
    daemon = harness.start(make_config())
    wait_until(lambda: daemon.log.events("took over"), "taking over")
    (standby,) = daemon.log.events("another replica is streaming; standing by")
    assert standby["detail"] == "replication slot is active for PID 4242"
    assert [e for _, e, _ in daemon.log.records if e == "source unavailable; retrying"] == []
    wait_until(lambda: daemon.metric("up") == 1, "streaming")
    confirmed(harness, source.commit([updated(3)]))


def test_standby_reports_why_it_is_not_ready(harness: Harness) -> None:
    """While standing by, /readyz's last_error names the slot's other streamer."""
    harness.source.fail_open(SlotBusyError("slot busy"), times=1000)
    daemon = harness.start(make_config())
    wait_until(lambda: daemon.supervisor.health.last_error, "a reason")
    assert daemon.supervisor.health.last_error == (
        "standby: memory log is streamed by another process"
    )
    assert daemon.metric("up") == 0


# -- telemetry --------------------------------------------------------------------------


def test_metrics_and_health_are_published(harness: Harness) -> None:
    """operations_total, changes_total, pending_operations, up, confirmed_lsn (and health's
    confirmed position), commit latency and lag reach the registry."""
    source, nodes = harness.source, harness.memcached
    present, absent = ids_on(A, 2)
    nodes[A].data[f"user:{present}"] = b"cached"
    daemon = harness.start(make_config())
    position = source.commit([updated(present), updated(absent)])
    confirmed(harness, position)
    daemon.wait_metric("confirmed_lsn", position)
    assert daemon.metric("operations_total", pool="default", op="delete", result="ok") == 1
    assert daemon.metric("operations_total", pool="default", op="delete", result="not_found") == 1
    assert daemon.metric("changes_total", table="public.users", op="update") == 2
    assert daemon.metric("up") == 1
    assert daemon.metric("pending_operations", node=A) == 0
    assert daemon.metric("replication_lag_bytes") == 0
    assert daemon.metric("commit_to_ack_seconds_count") == 1
    assert daemon.supervisor.health.confirmed_lsn == int_to_lsn(position)
    nodes[A].pause()
    source.commit([updated(present)])
    daemon.wait_metric("pending_operations", 1, node=A)
    wait_until(lambda: daemon.metric("replication_lag_bytes") == source.step, "the lag of one txn")
