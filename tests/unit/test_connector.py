"""The socket seam: plain TCP transports, and their failures as the node's own errors."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from invalidator.core.operations import Operation
from invalidator.core.tracker import Txn
from invalidator.sinks.memcached.channel import NodeChannel
from invalidator.sinks.memcached.connector import PLAIN, TcpTransport


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def finish(transport: TcpTransport, timeout: float = 5.0) -> bool:
    select.select([], [transport], [], timeout)
    return transport.finish()


def test_a_transport_connects_without_blocking_and_carries_bytes(
    listener: socket.socket,
) -> None:
    """open() returns at once; finish() completes the connect; send/recv move bytes."""
    transport = PLAIN.open(listener.getsockname())
    peer, _ = listener.accept()
    try:
        assert finish(transport)
        assert transport.send(b"version\r\n") == 9
        assert peer.recv(100) == b"version\r\n"
        peer.sendall(b"VERSION 1.6\r\n")
        select.select([transport], [], [], 5)
        assert transport.recv(100) == b"VERSION 1.6\r\n"
    finally:
        peer.close()
        transport.close()


def test_a_refused_connection_is_an_oserror_naming_the_reason() -> None:
    """Nothing listens: finish() raises OSError whose strerror says the connect failed."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = probe.getsockname()
    probe.close()  # the port is free again: nothing listens there
    transport = PLAIN.open(address)
    try:
        with pytest.raises(OSError) as caught:
            finish(transport)
        assert caught.value.strerror is not None
        assert caught.value.strerror.startswith("cannot connect: ECONNREFUSED")
    finally:
        transport.close()


def test_a_name_that_does_not_resolve_is_an_oserror_not_a_gaierror() -> None:
    """A rescheduled pod's vanished name fails like any unreachable node."""
    with pytest.raises(OSError) as caught:
        PLAIN.open(("no-such-node.invalid", 11211))
    assert not isinstance(caught.value, socket.gaierror)
    assert caught.value.strerror is not None
    assert caught.value.strerror.startswith("cannot resolve no-such-node.invalid")


def test_a_channel_to_an_unresolvable_node_reports_and_backs_off() -> None:
    """The channel logs the node's error, keeps its work queued and retries later."""
    errors: list[tuple[str, str]] = []
    channel = NodeChannel(
        "no-such-node.invalid:11211",
        ("no-such-node.invalid", 11211),
        on_error=lambda node, reason: errors.append((node, reason)),
    )
    txn = Txn()
    channel.submit(Operation("delete", "user:1", "default", "public.users"), txn)
    assert channel.ensure_connected() is False
    assert [node for node, _ in errors] == ["no-such-node.invalid:11211"]
    assert errors[0][1].startswith("cannot resolve no-such-node.invalid")
    assert (channel.pending, txn.outstanding, channel.transport) == (1, 1, None)
    assert channel.retry_at > 0
    assert channel.ensure_connected() is False  # still in its backoff: no second attempt
    assert len(errors) == 1
