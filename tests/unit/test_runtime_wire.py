"""The daemon in process, at the wire: the C hot path's pipelined delete batches, replies
arriving in fragments, transports that need a handshake (the TLS seam) or are refused
while connecting."""

from __future__ import annotations

import json
import socket
import threading

from invalidator.sinks.memcached.connector import PLAIN, AddrInfo, Resolver, TcpConnector
from tests.fakes import A, B, C, Harness, ids_on, make_config, owner, updated, wait_until


def confirmed(harness: Harness, position: int) -> None:
    wait_until(lambda: harness.source.confirmed >= position, f"position {position:#x} confirmed")


def test_hot_path_batches_reach_the_owners_and_count_deleted_and_not_found(
    harness: Harness,
) -> None:
    """Per-node batches of pipelined deletes (Feed.submit_batch) settle when all their
    replies are in; DELETED and NOT_FOUND replies are counted apart."""
    ids = range(1, 41)
    cached = [i for i in ids if i % 2]
    for i in cached:
        harness.memcached[owner(f"user:{i}")].data[f"user:{i}"] = b"cached"
    daemon = harness.start(make_config())
    confirmed(harness, harness.source.commit([updated(i) for i in ids], batched=True))
    for name, node in harness.memcached.nodes.items():
        assert sorted(node.deleted()) == sorted(
            f"user:{i}" for i in ids if owner(f"user:{i}") == name
        )
        assert node.data == {}
    daemon.wait_metric("changes_total", 40, table="public.users", op="update")
    daemon.wait_metric("operations_total", len(cached), pool="default", op="delete", result="ok")
    missing = daemon.metric("operations_total", pool="default", op="delete", result="not_found")
    assert missing == 40 - len(cached)


def test_batch_answered_with_an_error_is_sent_again_whole(harness: Harness) -> None:
    """An error reply inside a batch fails the connection; the whole batch is resent
    (deletes are idempotent) and the position waits for it."""
    users = ids_on(A, 5)
    node = harness.memcached[A]
    node.answer_next(b"SERVER_ERROR out of memory")
    daemon = harness.start(make_config())
    position = harness.source.commit([updated(i) for i in users], batched=True)
    confirmed(harness, position)
    keys = [f"user:{i}" for i in users]
    assert [c.key for c in node.errored] == keys[:1]
    assert node.deleted()[-5:] == keys
    assert daemon.metric("memcached_errors_total", node=A) == 1
    assert daemon.log.events("memcached node error")[0]["reason"] == (
        "delete (batch of 5): SERVER_ERROR out of memory"
    )


def test_replies_arriving_in_fragments_settle_in_order(harness: Harness) -> None:
    """Replies split every few bytes (the stats handshake, batches, plain deletes, sets,
    incr/add) are matched to their requests in order."""
    for node in harness.memcached.nodes.values():
        node.reply_chunk = 3
    groups = {
        "table": "groups",
        "keys": ["group:{id}"],
        "action": "refresh",
        "value": {"json": ["id", "name"]},
    }
    bump = {"table": "groups", "keys": ["gen:groups"], "action": "bump"}
    harness.start(make_config({"table": "users", "keys": ["user:{id}"]}, groups, bump))
    harness.source.commit([updated(i) for i in range(1, 21)], batched=True)
    harness.source.commit([updated(i) for i in range(21, 31)])
    position = harness.source.commit([updated(1, "groups", name="admins")])
    confirmed(harness, position)
    deleted = [c.key for c in harness.memcached.received("delete")]
    assert sorted(k for k in deleted if k.startswith("user:")) == sorted(
        f"user:{i}" for i in range(1, 31)
    )
    assert (
        harness.memcached[owner("group:1")].data["group:1"]
        == json.dumps({"id": 1, "name": "admins"}).encode()
    )
    assert harness.memcached[owner("gen:groups")].data["gen:groups"] == b"1"


def test_transport_handshake_completes_before_any_request(harness: Harness) -> None:
    """A transport whose finish() takes several turns (as TLS's handshake) is sent nothing
    until it reports ready; then the work flows."""
    node = harness.memcached[B]
    node.handshake_steps = 3
    harness.start(make_config())
    user = ids_on(B)[0]
    confirmed(harness, harness.source.commit([updated(user)]))
    assert node.deleted() == [f"user:{user}"]


def test_connect_refused_while_finishing_is_retried(harness: Harness) -> None:
    """A connection refused asynchronously (finish() raises) counts as the node's error
    and is retried; the work is delivered once the node accepts."""
    node = harness.memcached[A]
    node.refuse_on = "finish"
    node.fail()
    daemon = harness.start(make_config())
    user = ids_on(A)[0]
    position = harness.source.commit([updated(user)])
    wait_until(lambda: node.refused >= 2, "two refused connects")
    assert (daemon.metric("memcached_errors_total", node=A) or 0) >= 2
    assert harness.source.confirmed < position
    node.start()
    confirmed(harness, position)
    assert node.deleted() == [f"user:{user}"]


def test_plain_tcp_connector_reaches_a_node_once_it_listens(harness: Harness) -> None:
    """The production TcpConnector: a refused connect is retried, and once the port
    listens the node gets its deletes over TCP."""
    node = harness.memcached[A]
    host, port = node.serve_tcp(listening=False)
    server = f"{host}:{port}"
    daemon = harness.start(make_config(servers=[server]), connector=PLAIN)
    position = harness.source.commit([updated(1), updated(2)])
    wait_until(
        lambda: (daemon.metric("memcached_errors_total", node=server) or 0) >= 2,
        "two refused connects",
    )
    assert daemon.log.events("memcached node error")[0]["reason"] == (
        "cannot connect: ECONNREFUSED"
    )
    node.listen_tcp()
    confirmed(harness, position)
    assert sorted(node.deleted()) == ["user:1", "user:2"]


def test_node_that_stops_reading_is_never_written_past_its_buffer(harness: Harness) -> None:
    """Deletes beyond what a paused node's socket takes wait in its queue (the loop never
    blocks on a send); they all arrive once it reads again."""
    node = harness.memcached[A]
    daemon = harness.start(make_config(servers=[A]))
    confirmed(harness, harness.source.commit([updated(0)]))
    node.pause()
    count = 20_000  # ~400 kB of requests: more than a socket buffer holds
    position = harness.source.commit([updated(i) for i in range(1, count + 1)], batched=True)
    daemon.wait_metric("pending_operations", count, node=A)
    wait_until(lambda: daemon.supervisor.nodes.channels[A].outbuf, "a send that did not fit")
    session = harness.source.sessions[-1]
    turns = session.turns
    wait_until(lambda: session.turns > turns + 3, "the loop turning meanwhile")
    node.resume()
    confirmed(harness, position)
    assert len(node.deleted()) == count + 1


def test_a_node_whose_name_resolves_slowly_holds_up_only_itself(harness: Harness) -> None:
    """Three nodes over real TCP, one reached by a name whose lookup hangs: the other two
    get their deletes meanwhile (the loop never waits for DNS), the daemon keeps running,
    the position waits for the third node's work, and once the name resolves it gets it."""
    a, b, c = (harness.memcached[name] for name in (A, B, C))
    ports = [node.serve_tcp()[1] for node in (a, b, c)]
    servers = [f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", f"slow-dns.test:{ports[2]}"]
    release = threading.Event()

    def lookup(host: str, port: int) -> list[AddrInfo]:
        release.wait(30)  # a DNS server that takes its time
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    daemon = harness.start(make_config(servers=servers), connector=TcpConnector(Resolver(lookup)))
    ids = {node: ids_on(node, 2, servers) for node in servers}
    position = harness.source.commit([updated(i) for group in ids.values() for i in group])
    for node, server in ((a, servers[0]), (b, servers[1])):
        wanted = sorted(f"user:{i}" for i in ids[server])
        wait_until(lambda node=node, wanted=wanted: sorted(node.deleted()) == wanted, "healthy")
    assert c.deleted() == [] and daemon.running
    assert harness.source.confirmed < position  # the slow node's work is not done
    assert not daemon.log.events("memcached node error")  # resolving is not failing
    release.set()
    confirmed(harness, position)
    assert sorted(c.deleted()) == sorted(f"user:{i}" for i in ids[servers[2]])
