"""Reading values back: ``gets`` requests and their replies, parsed byte for byte."""

from __future__ import annotations

import pytest

from invalidator.sinks.memcached.protocol import Item, ValuesReader, gets_request

REPLY = (
    b'VALUE user:1 0 9 17\r\n{"id": 1}\r\n'
    b"VALUE odd 5 12 18\r\nhas\r\nEND\r\nin\r\n"  # a value holding the protocol's own bytes
    b"END\r\n"
    b"END\r\n"  # a second request that found nothing
)


def test_gets_request_names_every_key() -> None:
    assert gets_request([b"a", b"b:2"]) == b"gets a b:2\r\n"


def test_replies_are_split_per_request_with_their_values_and_cas() -> None:
    """Each END closes one request; values are taken by length, not by line."""
    assert ValuesReader().feed(REPLY) == [
        {b"user:1": Item(b'{"id": 1}', 17), b"odd": Item(b"has\r\nEND\r\nin", 18)},
        {},
    ]


def test_a_get_reply_without_cas_reads_as_cas_0() -> None:
    assert ValuesReader().feed(b"VALUE k 0 1\r\nx\r\nEND\r\n") == [{b"k": Item(b"x", 0)}]


@pytest.mark.parametrize("step", [1, 2, 7])
def test_replies_arriving_in_fragments_parse_the_same(step: int) -> None:
    """However the bytes are cut, the same requests complete with the same values."""
    reader = ValuesReader()
    done = []
    for i in range(0, len(REPLY), step):
        done.extend(reader.feed(REPLY[i : i + step]))
    assert done == ValuesReader().feed(REPLY)


def test_an_error_reply_is_refused() -> None:
    """A reply that is not VALUE/END (CLIENT_ERROR, ...) is an error, never a value."""
    with pytest.raises(ValueError, match="unexpected reply to get"):
        ValuesReader().feed(b"CLIENT_ERROR bad command line format\r\n")
