"""Avro object containers: parse one (magic, metadata map, sync marker, blocks) and write one (null codec).

ZTF frames every alert as a one-record container; files and Fink archives hold many records per container.
Compressed blocks are inflated here (`codecs`), at most `MAX_DECOMPRESSED_AVRO` bytes per buffer, all blocks
together; past it the buffer raises `DecodeError` ("decompressed size exceeds 512 MiB").
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas.errors import DecodeError
from stream.decode.codecs import CODECS, TooLarge, mib
from stream.decode.varint import encode_long, read_long

__all__ = ["Container", "CONTAINER_MAGIC", "MAX_DECOMPRESSED_AVRO", "parse_container", "parse_header",
           "parse_blocks", "codec_of", "container_header", "make_container"]

CONTAINER_MAGIC = b"Obj\x01"
#: Most bytes the compressed blocks of one message may inflate to (a real ZTF alert is ~100 kB, Rubin < 1 MB).
MAX_DECOMPRESSED_AVRO = 512 << 20
_DEFAULT_SYNC = b"stampflow\x00sync\x00\x00"  # 16 bytes; any value is valid


@dataclass(slots=True)
class Container:
    """A parsed Avro object container: header fields plus the blocks as (count, buffer, start, end)."""

    schema_bytes: bytes
    codec: str
    sync: bytes
    blocks: list[tuple[int, bytes, int, int]]
    metadata: dict[str, bytes]
    header_len: int = 0  # offset of the sync marker: buf[:header_len] is magic + metadata

    @property
    def count(self) -> int:
        return sum(b[0] for b in self.blocks)


def parse_container(buf: bytes, *, with_blocks: bool = True) -> Container:
    """Parse an Avro object container. Raises DecodeError on bad magic, bad sync marker or truncation."""
    meta, sync_pos = parse_header(buf)
    sync = buf[sync_pos:sync_pos + 16]
    if len(sync) != 16:
        raise DecodeError("truncated Avro container header (no sync marker)")
    schema_bytes = meta.get("avro.schema")
    if schema_bytes is None:
        raise DecodeError("Avro container header has no avro.schema")
    codec = codec_of(meta)
    blocks = parse_blocks(buf, sync_pos + 16, sync, codec) if with_blocks else []
    return Container(schema_bytes=schema_bytes, codec=codec, sync=sync, blocks=blocks, metadata=meta,
                     header_len=sync_pos)


def codec_of(meta: dict[str, bytes]) -> str:
    """The codec a header's metadata names ("null" when it names none); DecodeError for one not in `CODECS`."""
    codec = meta.get("avro.codec", b"null").decode("ascii", "replace") or "null"
    if codec != "null" and codec not in CODECS:
        raise DecodeError(f"unsupported Avro codec {codec!r}")
    return codec


def parse_header(buf: bytes) -> tuple[dict[str, bytes], int]:
    """The metadata map and the offset of the sync marker."""
    if buf[:4] != CONTAINER_MAGIC:
        raise DecodeError(f"not an Avro object container (starts with {bytes(buf[:8])!r})")
    try:
        pos = 4
        meta: dict[str, bytes] = {}
        while True:
            count, pos = read_long(buf, pos)
            if count == 0:
                break
            if count < 0:
                count = -count
                _, pos = read_long(buf, pos)
            for _ in range(count):
                n, pos = read_long(buf, pos)
                key = buf[pos:pos + n].decode("utf-8")
                pos += n
                n, pos = read_long(buf, pos)
                if n < 0 or pos + n > len(buf):
                    raise DecodeError("truncated Avro container header")
                meta[key] = buf[pos:pos + n]
                pos += n
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"corrupt Avro container header: {exc}") from None
    return meta, pos


def parse_blocks(buf: bytes, pos: int, sync: bytes, codec: str) -> list[tuple[int, bytes, int, int]]:
    """Data blocks after the header: (record count, buffer, start, end); the sync marker after each is checked.

    Compressed blocks inflate to at most `MAX_DECOMPRESSED_AVRO` bytes, all blocks of the buffer together.
    """
    blocks: list[tuple[int, bytes, int, int]] = []
    n = len(buf)
    index = 0
    budget = MAX_DECOMPRESSED_AVRO
    while pos < n:
        try:
            count, pos = read_long(buf, pos)
            size, pos = read_long(buf, pos)
        except (IndexError, ValueError):
            raise DecodeError(f"truncated Avro container: block {index} header cut off") from None
        if count < 0 or size < 0:
            raise DecodeError(f"corrupt Avro container: block {index} has count {count}, size {size}")
        end = pos + size
        if end + 16 > n:
            raise DecodeError(f"truncated or corrupt Avro container: block {index} declares {size} bytes of "
                              f"data plus a 16-byte sync marker, but only {n - pos} bytes remain "
                              f"({end + 16 - n} missing)")
        if buf[end:end + 16] != sync:
            raise DecodeError(f"corrupt Avro container: bad sync marker after block {index}")
        if codec == "null":
            blocks.append((count, buf, pos, end))
        else:
            try:
                data = CODECS[codec](buf[pos:end], budget)
            except DecodeError:
                raise
            except TooLarge:
                raise DecodeError(f"{codec} block {index}: decompressed size exceeds "
                                  f"{mib(MAX_DECOMPRESSED_AVRO)}") from None
            except MemoryError:
                raise DecodeError(f"{codec} block {index}: out of memory while decompressing") from None
            except Exception as exc:
                raise DecodeError(f"corrupt {codec} block {index}: {exc}") from None
            budget -= len(data)
            blocks.append((count, data, 0, len(data)))
        pos = end + 16
        index += 1
    return blocks


def container_header(schema_bytes: bytes | str, sync: bytes | None = None,
                     metadata: dict[str, bytes] | None = None) -> bytes:
    """Magic + metadata map (null codec) + sync marker of a container: what `make_container` writes before the
    data block. Compute it once per schema and pass it as ``header=`` to build many containers cheaply."""
    if isinstance(schema_bytes, str):
        schema_bytes = schema_bytes.encode("utf-8")
    sync = sync or _DEFAULT_SYNC
    if len(sync) != 16:
        raise ValueError(f"an Avro sync marker is 16 bytes, not {len(sync)}")
    meta = {"avro.schema": schema_bytes, "avro.codec": b"null"}
    for k, v in (metadata or {}).items():
        if k not in ("avro.schema", "avro.codec"):
            meta[k] = v
    out = [CONTAINER_MAGIC, encode_long(len(meta))]
    for k, v in meta.items():
        kb = k.encode("utf-8")
        out += [encode_long(len(kb)), kb, encode_long(len(v)), v]
    out += [b"\x00", sync]
    return b"".join(out)


def make_container(schema_bytes: bytes | str, records: list[bytes], sync: bytes | None = None,
                   metadata: dict[str, bytes] | None = None, *, header: bytes | None = None) -> bytes:
    """A null-codec container holding already-encoded records in one block (byte-exact, no re-encoding).

    ``header``: a `container_header` for the same schema, sync and metadata, reused instead of rebuilt (the
    sync marker is its last 16 bytes).
    """
    if header is None:
        header = container_header(schema_bytes, sync, metadata)
    body = b"".join(records)
    return b"".join((header, encode_long(len(records)), encode_long(len(body)), body, header[-16:]))


def whole_record(value: bytes) -> dict | None:
    """The whole first record of a message that is its own Avro container, read with fastavro; None when the message
    is not a container (Confluent-framed, Parquet rows) or cannot be read.

    The decoder's records are projections (only the fields a model or result needs), so fields such as sgscore1
    are not in them. Evaluation against the PS1 reference and the viewer's detail page read the message in full
    here. An unreadable message is the engine's dead letter already, so it is not an error here.
    """
    if not value.startswith(b"Obj\x01"):
        return None
    import io

    import fastavro

    try:
        return next(iter(fastavro.reader(io.BytesIO(value))), None)
    except Exception:  # noqa: BLE001 - see the docstring: the engine dead-letters it; callers show what they have
        return None
