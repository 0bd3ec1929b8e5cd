"""Avro's long encoding (zigzag, then base-128 varint in little-endian groups): the one reader and the one writer.

Container parsing, the generated projection readers and the generated Parquet row writers all use these.
"""
from __future__ import annotations

__all__ = ["read_long", "long_rest", "encode_long"]


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """Zigzag varint at ``pos`` -> (value, new pos)."""
    x = buf[pos]
    pos += 1
    if x < 128:
        return (x >> 1) ^ -(x & 1), pos
    return long_rest(buf, pos, x)


def long_rest(buf: bytes, pos: int, x: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``x`` (>= 128) was already read; ``pos`` is just after it.

    Split from `read_long` so generated code can inline the one-byte case and call this only for longer ones.
    """
    n = x & 0x7F
    shift = 7
    while True:
        x = buf[pos]
        pos += 1
        n |= (x & 0x7F) << shift
        if x < 128:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 70:
            raise ValueError("varint longer than 10 bytes")


#: encodings of 0..127 after zigzag (-64..63), prebuilt: most lengths, counts and union tags are this small
_SMALL = [bytes([n]) for n in range(128)]


def encode_long(n: int) -> bytes:
    """Avro long: zigzag, then base-128 varint (little-endian groups)."""
    n = (n << 1) ^ (n >> 63)  # never negative, so the loop below ends
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
