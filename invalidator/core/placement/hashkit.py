"""libmemcached's key hash functions (libhashkit), byte for byte as the C library computes
them on x86-64 Linux: the specification the ``libmemcached`` placement is proven against
(tests/fixtures/placement/pylibmc*.json.gz, php-memcached*.json.gz).

The C code reads key bytes through a signed ``char``: where it widens that char to an
integer (one_at_a_time, fnv1*, hsieh's last byte), bytes >= 0x80 are sign-extended. The
functions here do the same (``_signed``), which is what makes UTF-8 keys land where the
apps' clients put them. ``hsieh`` is absent: Debian's libmemcached 1.1.4 (and pylibmc's
wheel) are built without it, and setting it fails there.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF


def _signed(byte: int) -> int:
    """A byte read through a signed char, widened to 64 bits two's complement."""
    return byte if byte < 0x80 else byte | 0xFFFFFFFFFFFFFF00


def one_at_a_time(data: bytes) -> int:
    """libmemcached's default hash (Bob Jenkins' one-at-a-time)."""
    value = 0
    for byte in data:
        value = (value + _signed(byte)) & _M32
        value = (value + (value << 10)) & _M32
        value ^= value >> 6
    value = (value + (value << 3)) & _M32
    value ^= value >> 11
    return (value + (value << 15)) & _M32


def md5(data: bytes) -> int:
    """The first four bytes of the MD5 digest, little-endian."""
    return int.from_bytes(hashlib.md5(data).digest()[:4], "little")


def crc(data: bytes) -> int:
    """CRC-32 (zlib's), then bits 16..30: ``((~crc) >> 16) & 0x7fff``."""
    return (zlib.crc32(data) >> 16) & 0x7FFF


def fnv1_64(data: bytes) -> int:
    """64-bit FNV-1 truncated to its low 32 bits."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = (value * 0x100000001B3) & _M64
        value ^= _signed(byte)
    return value & _M32


def fnv1a_64(data: bytes) -> int:
    """libmemcached's "fnv1a_64": FNV-1a computed in 32 bits with the 64-bit constants
    truncated (offset 0x84222325, prime 0x1b3), as the C code does."""
    value = 0x84222325
    for byte in data:
        value ^= _signed(byte) & _M32
        value = (value * 0x1B3) & _M32
    return value


def fnv1_32(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = (value * 0x01000193) & _M32
        value ^= _signed(byte) & _M32
    return value


def fnv1a_32(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value ^= _signed(byte) & _M32
        value = (value * 0x01000193) & _M32
    return value


def murmur(data: bytes) -> int:
    """MurmurHash2 with libmemcached's seed ``0xdeadbeef * length``."""
    m = 0x5BD1E995
    length = len(data)
    h = ((0xDEADBEEF * length) & _M32) ^ length
    i = 0
    while length - i >= 4:
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
        i += 4
    if i < length:
        h ^= int.from_bytes(data[i:], "little")
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    return h ^ (h >> 15)


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M32


def jenkins(data: bytes) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` with initval 13."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + 13) & _M32
    if length == 0:
        return c
    i = 0
    while length - i > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M32
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M32
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M32
        # mix(a, b, c)
        a = (a - c) & _M32
        a ^= _rot(c, 4)
        c = (c + b) & _M32
        b = (b - a) & _M32
        b ^= _rot(a, 6)
        a = (a + c) & _M32
        c = (c - b) & _M32
        c ^= _rot(b, 8)
        b = (b + a) & _M32
        a = (a - c) & _M32
        a ^= _rot(c, 16)
        c = (c + b) & _M32
        b = (b - a) & _M32
        b ^= _rot(a, 19)
        a = (a + c) & _M32
        c = (c - b) & _M32
        c ^= _rot(b, 4)
        b = (b + a) & _M32
        i += 12
    tail = data[i:] + bytes(12 - (length - i))
    a = (a + int.from_bytes(tail[0:4], "little")) & _M32
    b = (b + int.from_bytes(tail[4:8], "little")) & _M32
    c = (c + int.from_bytes(tail[8:12], "little")) & _M32
    # final(a, b, c)
    c ^= b
    c = (c - _rot(b, 14)) & _M32
    a ^= c
    a = (a - _rot(c, 11)) & _M32
    b ^= a
    b = (b - _rot(a, 25)) & _M32
    c ^= b
    c = (c - _rot(b, 16)) & _M32
    a ^= c
    a = (a - _rot(c, 4)) & _M32
    b ^= a
    b = (b - _rot(a, 14)) & _M32
    c ^= b
    return (c - _rot(b, 24)) & _M32


HashFunction = Callable[[bytes], int]

# libmemcached's memcached_hash_t values (MEMCACHED_HASH_*) → function; hsieh (7) is not
# built into the libraries the vectors come from.
BY_NUMBER: dict[int, HashFunction] = {
    0: one_at_a_time,
    1: md5,
    2: crc,
    3: fnv1_64,
    4: fnv1a_64,
    5: fnv1_32,
    6: fnv1a_32,
    8: murmur,
    9: jenkins,
}
NUMBER = {
    "default": 0,
    "md5": 1,
    "crc": 2,
    "fnv1_64": 3,
    "fnv1a_64": 4,
    "fnv1_32": 5,
    "fnv1a_32": 6,
    "hsieh": 7,
    "murmur": 8,
    "jenkins": 9,
}
NAME = {number: name for name, number in NUMBER.items()}
# The same functions as C computes them (hot_spec.KEY_HASHES), by memcached_hash_t value.
HOT_NAME = {
    0: "libmemcached_one_at_a_time",
    1: "md5_le32",
    2: "crc32_hi15",
    3: "libmemcached_fnv1_64",
    4: "libmemcached_fnv1a_64",
    5: "libmemcached_fnv1_32",
    6: "libmemcached_fnv1a_32",
    8: "libmemcached_murmur",
    9: "libmemcached_jenkins",
}
