INSERT: int
UPDATE: int
DELETE: int
RENDEZVOUS: int
BROADCAST: int

class Decoder:
    wal_end: int
    position: int
    in_transaction: bool
    def __init__(
        self,
        tables: list[
            tuple[bytes, bytes, int, list[bytes], list[tuple[int, list[bytes], list[int]]]]
        ],
        pools: list[tuple[int, list[tuple[bytes, bytes, int]]]],
        slots: int,
        pgoutput: bool = False,
    ) -> None: ...
    def feed(self, message: bytes | memoryview) -> bool: ...
    def feed_many(self, messages: list[bytes] | list[memoryview], start: int = 0) -> int: ...
    def harvest(
        self,
    ) -> tuple[list[tuple[int, bytes, int]], list[tuple[int, float | None]], bool]: ...
    def counts(self) -> list[tuple[int, str, int]]: ...
    def take_reply_requested(self) -> bool: ...

def scan_deletes(buffer: bytes | bytearray, pos: int, limit: int) -> tuple[int, int, int]: ...
def murmur3(data: bytes) -> int: ...
def parse_timestamp(text: str) -> float | None: ...
