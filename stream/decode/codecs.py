"""Avro block codecs: deflate, snappy, bzip2, xz and zstandard, each inflating to at most a given number of bytes.

A container's compressed blocks are inflated with an output limit (`container.MAX_DECOMPRESSED_AVRO` per
message, all blocks together): a small malicious packet cannot make the worker allocate more. Each codec stops
as soon as its output passes the limit and raises `TooLarge`; anything else wrong with the data raises another
exception (the container parser turns both into `DecodeError`).
"""
from __future__ import annotations

import bz2
import io
import lzma
import zlib
from typing import Any, Callable

from schemas.errors import DecodeError

__all__ = ["CODECS", "TooLarge", "mib", "snappy_decompress"]


class TooLarge(Exception):
    """A block inflates past its limit (turned into DecodeError by `container.parse_blocks`)."""

    def __init__(self, limit: int):
        super().__init__(f"decompressed size exceeds {mib(limit)}")


def mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


def snappy_decompress(data: bytes, limit: int | None = None) -> bytes:
    """Raw snappy (Avro's "snappy" codec: raw snappy block + 4-byte big-endian CRC32 of the output).

    The declared length is checked against ``limit`` before anything is allocated, and no copy may write past
    the declared length.
    """
    if len(data) < 4:
        raise ValueError("snappy block shorter than its CRC")
    body, crc = data[:-4], int.from_bytes(data[-4:], "big")
    length, pos = 0, 0
    shift = 0
    while True:
        x = body[pos]
        pos += 1
        length |= (x & 0x7F) << shift
        if x < 128:
            break
        shift += 7
        if shift > 35:
            raise ValueError("snappy length varint longer than 5 bytes")
    if limit is not None and length > limit:
        raise TooLarge(limit)
    out = bytearray()
    n = len(body)
    while pos < n:
        tag = body[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                nbytes = size - 59
                size = int.from_bytes(body[pos:pos + nbytes], "little")
                pos += nbytes
            size += 1
            if len(out) + size > length:
                raise ValueError(f"snappy output longer than its declared {length} bytes")
            out += body[pos:pos + size]
            pos += size
            continue
        if kind == 1:
            size = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | body[pos]
            pos += 1
        elif kind == 2:
            size = (tag >> 2) + 1
            offset = int.from_bytes(body[pos:pos + 2], "little")
            pos += 2
        else:
            size = (tag >> 2) + 1
            offset = int.from_bytes(body[pos:pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ValueError("bad snappy copy offset")
        if len(out) + size > length:
            raise ValueError(f"snappy output longer than its declared {length} bytes")
        start = len(out) - offset
        if offset >= size:
            out += out[start:start + size]
        else:
            for i in range(size):
                out.append(out[start + i])
    if len(out) != length:
        raise ValueError(f"snappy length mismatch: {len(out)} != {length}")
    if zlib.crc32(out) & 0xFFFFFFFF != crc:
        raise ValueError("snappy CRC mismatch")
    return bytes(out)


def _deflate_decompress(data: bytes, limit: int) -> bytes:
    """Raw deflate (Avro's "deflate" codec), at most ``limit`` bytes of output (``max_length``, so a bomb
    stops after ``limit + 1`` bytes instead of inflating completely)."""
    d = zlib.decompressobj(-15)
    out = d.decompress(data, limit + 1)
    if len(out) > limit:
        raise TooLarge(limit)
    if not d.eof:
        raise ValueError("incomplete or truncated deflate stream")
    return out


def _multistream_decompress(factory: Callable[[], Any], data: bytes, limit: int, what: str) -> bytes:
    """bzip2 / xz (concatenated streams allowed, as `bz2.decompress` and `lzma.decompress` do), at most
    ``limit`` bytes of output."""
    out: list[bytes] = []
    total = 0
    rest = data
    while True:
        d = factory()
        chunk = d.decompress(rest, limit - total + 1)
        total += len(chunk)
        if total > limit:
            raise TooLarge(limit)
        out.append(chunk)
        if not d.eof:
            raise ValueError(f"{what} stream ended before its end-of-stream marker")
        rest = d.unused_data
        if not rest:
            break
    return out[0] if len(out) == 1 else b"".join(out)


def _bz2_decompress(data: bytes, limit: int) -> bytes:
    return _multistream_decompress(bz2.BZ2Decompressor, data, limit, "bzip2")


def _xz_decompress(data: bytes, limit: int) -> bytes:
    return _multistream_decompress(lzma.LZMADecompressor, data, limit, "xz")


def _zstd_decompress(data: bytes, limit: int) -> bytes:
    """One zstandard frame, read through a stream reader in 1 MiB pieces, at most ``limit`` bytes of output
    (the frame's declared content size is not trusted)."""
    try:
        import zstandard  # type: ignore
    except ImportError:
        raise DecodeError("Avro codec zstandard needs the 'zstandard' package, which is not installed") from None
    declared = zstandard.frame_content_size(data)  # -1 when the frame does not say
    if declared > limit:
        raise TooLarge(limit)
    out: list[bytes] = []
    total = 0
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
        while True:
            chunk = reader.read(min(1 << 20, limit - total + 1))
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise TooLarge(limit)
            out.append(chunk)
    if declared >= 0 and total != declared:
        raise ValueError(f"zstandard frame inflates to {total} bytes, its header declares {declared}")
    return b"".join(out)


#: codec -> decompress(data, limit): raises TooLarge past ``limit`` bytes of output, anything else when corrupt.
CODECS: dict[str, Callable[[bytes, int], bytes]] = {
    "deflate": _deflate_decompress,
    "snappy": snappy_decompress,
    "bzip2": _bz2_decompress,
    "xz": _xz_decompress,
    "zstandard": _zstd_decompress,
}

