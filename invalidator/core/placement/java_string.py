"""Java's ``String.hashCode`` (also JavaScript's classic ``31*h + charCodeAt`` loop): the
key hash of spymemcached's default ``NATIVE_HASH`` and of memjs."""

from __future__ import annotations

import operator
import struct

_M32 = 0xFFFFFFFF
_MAX_TABLE = 1024
# 31**i mod 2**32, so a hash is one sum of products instead of a Python-level loop.
_POWERS = [pow(31, i, 1 << 32) for i in range(_MAX_TABLE)]
_POWERS.reverse()


def utf16_units(key: str) -> tuple[int, ...]:
    """The UTF-16 code units of ``key`` (Java's ``charAt``, JavaScript's ``charCodeAt``)."""
    data = key.encode("utf-16-le", "surrogatepass")
    return struct.unpack(f"<{len(data) // 2}H", data)


def hash_code(key: str) -> int:
    """``key.hashCode()`` as an unsigned 32-bit number: ``sum(c[i] * 31**(n-1-i))``."""
    units = utf16_units(key)
    if len(units) > _MAX_TABLE:
        h = 0
        for unit in units:
            h = (31 * h + unit) & _M32
        return h
    total: int = sum(map(operator.mul, units, _POWERS[_MAX_TABLE - len(units) :]))
    return total & _M32


def signed(value: int) -> int:
    """An unsigned 32-bit number as Java's / JavaScript's signed 32-bit ``int``."""
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value
