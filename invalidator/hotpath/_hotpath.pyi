INSERT: int
UPDATE: int
DELETE: int
RENDEZVOUS: int
BROADCAST: int
MODULA: int
CONTINUUM: int
CONTINUUM_BELOW: int
KEY_HASHES: tuple[str, ...]

class Decoder:
    wal_end: int
    position: int
    in_transaction: bool
    def __init__(
        self,
        tables: list[
            tuple[bytes, bytes, int, list[bytes], list[tuple[int, list[bytes], list[int]]]]
        ],
        pools: list[tuple[int, list[tuple[bytes, bytes, int]]]]
        | list[tuple[int, list[tuple[bytes, bytes, int]], int, list[int], list[int]]],
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

class Placer:
    def __init__(
        self, mode: int, key_hash: int, names: list[str], points: list[int], table: list[int]
    ) -> None: ...
    def owner(self, key: str) -> str: ...

def key_hash(hash: int, data: bytes) -> int: ...
