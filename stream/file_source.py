"""Alerts from files: Avro containers, gzipped Avro, nightly tar archives and Fink-style Parquet.

`FileSource(paths)` yields one `RawMessage` per alert (or a `DeadLetter` for what cannot be read), in a
deterministic order (paths as given; directories walked recursively in sorted order; records in file order),
each with ``Origin(file=..., index=record index in that file)``.

* ``.avro``: a single-record container is passed on as the file's bytes. A multi-record container is cut into
  single-record containers *byte for byte* (each record's encoded bytes under the same writer schema and sync
  marker; nothing is re-encoded), so every message is a valid ZTF-framed alert that can be replayed to Kafka
  or dead-lettered; ``record`` carries the already-decoded (projected) record so the decoder skips the work.
* ``.avro.gz``: gunzipped, then as above.
* ``.tar.gz`` / ``.tgz`` / ``.tar``: streamed with `tarfile` (never extracted to disk); Avro members are handled as
  above with ``origin.file = "archive.tar.gz:member.avro"``; other members are skipped and counted.
* ``.parquet``: each row is an alert (cutouts as struct{fileName, stampData}); ``record`` is the row as a dict
  (the ZTF field layout, so the decoder maps it directly) and ``value`` a single-record Avro container written
  with a schema inferred from the Arrow schema (`arrow_to_avro_schema`), so replay can send it.

A file that cannot be read or parsed (bad sync marker, truncation, bad gzip, unreadable Parquet) becomes a
`DeadLetter` with ``stage="read"``, the original bytes (empty for a whole archive that fails part-way: the bytes
are in the archive, which the origin names) and a clear message; iteration carries on. In directories, files
with unknown extensions are skipped and counted (`skipped`); a file named explicitly with an unknown extension
is dead-lettered.
"""
from __future__ import annotations

import gzip
import io
import os
import re
import tarfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import fastavro

from stream.decode import Container, _SchemaCache, make_container, parse_container
from stream.errors import DecodeError, PacketError, StampflowError
from stream.packet import DeadLetter, Framing, Origin, RawMessage

__all__ = ["FileSource", "arrow_to_avro_schema", "avro_ready_arrow_schema", "KNOWN_SUFFIXES"]

KNOWN_SUFFIXES = (".avro", ".avro.gz", ".tar.gz", ".tgz", ".tar", ".parquet")
_PARQUET_BATCH = 256


def _kind(path: str) -> str | None:
    name = path.lower()
    for suffix, kind in ((".avro.gz", "avro.gz"), (".avro", "avro"), (".tar.gz", "tar"), (".tgz", "tar"),
                         (".tar", "tar"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return kind
    return None


class FileSource:
    """Alerts from files and directories (see the module docstring).

    ``stats`` counts, while iterating: ``messages``, ``dead_letters``, ``files``, ``skipped`` (unknown
    extensions in directories, also listed in ``skipped``) and ``empty`` (containers without records).
    """

    def __init__(self, paths: "str | os.PathLike | Iterable[str | os.PathLike]", *, engine: str = "auto"):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        for p in self.paths:
            if not p.exists():
                raise StampflowError(f"no such file or directory: {p}")
        self.engine = engine
        self.skipped: list[str] = []
        self.stats: Counter[str] = Counter()
        self._cache = _SchemaCache()

    # -- discovery ------------------------------------------------------------------------------------------
    def files(self) -> list[tuple[Path, bool]]:
        """(path, named explicitly) for every file, in iteration order; records skipped files."""
        out: list[tuple[Path, bool]] = []
        skipped: list[str] = []
        for p in self.paths:
            if p.is_dir():
                for f in sorted(x for x in p.rglob("*") if x.is_file()):
                    if _kind(f.name) is None:
                        skipped.append(str(f))
                    else:
                        out.append((f, False))
            else:
                out.append((p, True))
        self.skipped = skipped
        return out

    # -- iteration ------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RawMessage | DeadLetter]:
        return self.iter_messages()

    def iter_messages(self) -> Iterator[RawMessage | DeadLetter]:
        self.stats = Counter()
        files = self.files()
        self.stats["skipped"] = len(self.skipped)
        for path, _explicit in files:
            self.stats["files"] += 1
            for item in self._iter_file(path):
                self.stats["dead_letters" if isinstance(item, DeadLetter) else "messages"] += 1
                yield item

    def _iter_file(self, path: Path) -> Iterator[RawMessage | DeadLetter]:
        name = str(path)
        kind = _kind(path.name)
        if kind is None:
            yield _dead(b"", Origin(file=name), f"unknown file type (expected one of {', '.join(KNOWN_SUFFIXES)})")
            return
        if kind == "tar":
            yield from self._iter_tar(path)
            return
        if kind == "parquet":
            yield from self._iter_parquet(path)
            return
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield _dead(b"", Origin(file=name), f"cannot read file: {exc}")
            return
        yield from self._iter_avro_bytes(data, name, gzipped=(kind == "avro.gz"))

    def _iter_avro_bytes(self, data: bytes, name: str, *, gzipped: bool) -> Iterator[RawMessage | DeadLetter]:
        original = data
        if gzipped:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as exc:
                yield _dead(original, Origin(file=name), f"not a readable gzip file: {exc}")
                return
        try:
            container = parse_container(data)
        except DecodeError as exc:
            yield _dead(original, Origin(file=name), str(exc), "DecodeError")
            return
        total = container.count
        if total == 0:
            self.stats["empty"] += 1
            return
        if total == 1:
            yield RawMessage(value=data, origin=Origin(file=name, index=0), framing=Framing.ZTF)
            return
        yield from self._split(container, original, name)

    def _split(self, container: Container, original: bytes, name: str) -> Iterator[RawMessage | DeadLetter]:
        try:
            entry = self._cache.get(container.schema_bytes)
        except PacketError as exc:
            yield _dead(original, Origin(file=name), str(exc))
            return
        index = 0
        for block_no, (count, buf, start, end) in enumerate(container.blocks):
            first, pos = index, start
            for _ in range(count):
                try:
                    rec, new = entry.read(buf, pos, end, self.engine)
                    if new > end:
                        raise DecodeError("record runs past its block")
                except Exception as exc:
                    msg = exc if isinstance(exc, PacketError) else f"{exc.__class__.__name__}: {exc}"
                    yield _dead(original, Origin(file=name, index=index),
                                f"record {index} (block {block_no}) does not decode: {msg}; "
                                f"records {index}..{first + count - 1} of this block are lost")
                    break
                value = make_container(entry.schema_bytes, [buf[pos:new]], sync=container.sync)
                yield RawMessage(value=value, origin=Origin(file=name, index=index), framing=Framing.ZTF,
                                 record=rec)
                pos = new
                index += 1
            else:
                if pos != end:
                    yield _dead(original, Origin(file=name, index=index),
                                f"block {block_no}: {end - pos} bytes left after its {count} records")
            index = first + count

    def _iter_tar(self, path: Path) -> Iterator[RawMessage | DeadLetter]:
        name = str(path)
        try:
            tf = tarfile.open(path, mode="r|*")  # streaming: members are read in order, nothing touches disk
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            yield _dead(_small_file_bytes(path), Origin(file=name), f"not a readable tar archive: {exc}")
            return
        member_name = None
        try:
            with tf:
                for member in tf:
                    if not member.isfile():
                        continue
                    member_name = member.name
                    kind = _kind(member.name)
                    if kind not in ("avro", "avro.gz"):
                        self.skipped.append(f"{name}:{member.name}")
                        self.stats["skipped"] += 1
                        continue
                    fh = tf.extractfile(member)
                    data = fh.read() if fh is not None else b""
                    yield from self._iter_avro_bytes(data, f"{name}:{member.name}", gzipped=(kind == "avro.gz"))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            where = f" after member {member_name}" if member_name else ""
            yield _dead(b"", Origin(file=name), f"tar archive unreadable{where}: {exc.__class__.__name__}: {exc}")

    def _iter_parquet(self, path: Path) -> Iterator[RawMessage | DeadLetter]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = str(path)
        try:
            pf = pq.ParquetFile(path)
            arrow_schema = pf.schema_arrow
            target = avro_ready_arrow_schema(arrow_schema)
            avro_schema, renames = arrow_to_avro_schema(target, name=_record_name(path))
            parsed = fastavro.parse_schema(avro_schema)
            schema_text = _json(avro_schema)
        except Exception as exc:
            yield _dead(_small_file_bytes(path), Origin(file=name), f"unreadable Parquet file: "
                        f"{exc.__class__.__name__}: {exc}")
            return
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=_PARQUET_BATCH):
                table = pa.Table.from_batches([batch])
                if target != arrow_schema:
                    table = table.cast(target)
                for row in table.to_pylist():
                    origin = Origin(file=name, index=index)
                    index += 1
                    try:
                        buf = io.BytesIO()
                        fastavro.schemaless_writer(buf, parsed, _rename(row, renames) if renames else row)
                        value = make_container(schema_text, [buf.getvalue()])
                    except Exception as exc:
                        yield _dead(b"", origin, f"Parquet row {origin.index} cannot be written as Avro: "
                                    f"{exc.__class__.__name__}: {exc}")
                        continue
                    yield RawMessage(value=value, origin=origin, framing=Framing.ZTF, record=row)
        except Exception as exc:
            yield _dead(b"", Origin(file=name, index=index), f"Parquet file unreadable at row {index}: "
                        f"{exc.__class__.__name__}: {exc}")

    # -- counting -------------------------------------------------------------------------------------------
    def count(self) -> int:
        """How many items iteration will yield (alerts plus dead letters), for a progress-bar total.

        Cheap: Parquet from the footer, Avro from container block counts (no record is decoded); archives
        are read through once (decompression only). A file that fails to parse counts as one (its dead letter).
        """
        import pyarrow.parquet as pq

        total = 0
        for path, _ in self.files():
            kind = _kind(path.name)
            try:
                if kind == "parquet":
                    total += pq.ParquetFile(path).metadata.num_rows
                elif kind == "tar":
                    with tarfile.open(path, mode="r|*") as tf:
                        for member in tf:
                            mk = _kind(member.name) if member.isfile() else None
                            if mk in ("avro", "avro.gz"):
                                fh = tf.extractfile(member)
                                total += _count_avro(fh.read() if fh else b"", mk == "avro.gz")
                elif kind in ("avro", "avro.gz"):
                    total += _count_avro(path.read_bytes(), kind == "avro.gz")
                else:
                    total += 1
            except Exception:
                total += 1
        return total


def _count_avro(data: bytes, gzipped: bool) -> int:
    try:
        if gzipped:
            data = gzip.decompress(data)
        return parse_container(data).count
    except Exception:
        return 1


def _dead(value: bytes, origin: Origin, error: str, error_type: str = "ReadError") -> DeadLetter:
    return DeadLetter(value=value, origin=origin, stage="read", error=error, error_type=error_type)


def _small_file_bytes(path: Path, limit: int = 64 << 20) -> bytes:
    try:
        return path.read_bytes() if path.stat().st_size <= limit else b""
    except OSError:
        return b""


def _json(obj: Any) -> str:
    import json
    return json.dumps(obj, separators=(",", ":"))


def _record_name(path: Path) -> str:
    stem = path.name[:-len(".parquet")] if path.name.lower().endswith(".parquet") else path.stem
    return "parquet_" + _avro_name(stem)[:60]


# ---------------------------------------------------------------------------------------------------------------
# Arrow -> Avro

_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _avro_name(name: str) -> str:
    if _NAME_OK.match(name):
        return name
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if out and not out[0].isdigit() else "_" + out


def avro_ready_arrow_schema(schema: "Any") -> "Any":
    """The Arrow schema with the types Avro has no direct twin for cast to ones it has: timestamps -> int64
    (their unit is kept in the Avro ``doc``), date32 -> int32, time -> int64, dictionaries -> their values,
    large strings/binaries/lists -> the plain ones."""
    import pyarrow as pa

    def conv(t: Any) -> Any:
        if pa.types.is_timestamp(t) or pa.types.is_time64(t) or pa.types.is_date64(t) or pa.types.is_duration(t):
            return pa.int64()
        if pa.types.is_date32(t) or pa.types.is_time32(t):
            return pa.int32()
        if pa.types.is_dictionary(t):
            return conv(t.value_type)
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            return pa.binary()
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return pa.list_(pa.field(t.value_field.name, conv(t.value_type), t.value_field.nullable))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, conv(f.type), f.nullable) for f in t])
        return t

    return pa.schema([pa.field(f.name, conv(f.type), f.nullable) for f in schema], metadata=schema.metadata)


def arrow_to_avro_schema(schema: "Any", name: str = "alert") -> tuple[dict[str, Any], Any]:
    """Avro record schema for rows of an Arrow schema (apply `avro_ready_arrow_schema` first).

    Nullable Arrow fields become ``["null", T]`` unions with default null. Supported: null, bool, int8..int64,
    uint8..uint32 (int/long), uint64 (long), float16/32 (float), float64 (double), string, binary,
    fixed-size binary (fixed), decimal (bytes + decimal logical type), struct (record), list (array),
    map with string keys (map). Field names that are not valid Avro names are sanitised; the second element
    of the result is then the renaming plan to apply to each row (None when nothing needed renaming).
    """
    import pyarrow as pa

    used: set[str] = set()
    any_rename = False

    def unique(base: str) -> str:
        n, i = base, 1
        while n in used:
            i += 1
            n = f"{base}_{i}"
        used.add(n)
        return n

    def typ(t: Any, path: str) -> tuple[Any, Any]:
        nonlocal any_rename
        if pa.types.is_null(t):
            return "null", None
        if pa.types.is_boolean(t):
            return "boolean", None
        if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_int32(t) or pa.types.is_uint8(t) \
                or pa.types.is_uint16(t):
            return "int", None
        if pa.types.is_int64(t) or pa.types.is_uint32(t) or pa.types.is_uint64(t):
            return "long", None
        if pa.types.is_float16(t) or pa.types.is_float32(t):
            return "float", None
        if pa.types.is_float64(t):
            return "double", None
        if pa.types.is_string(t):
            return "string", None
        if pa.types.is_binary(t):
            return "bytes", None
        if pa.types.is_fixed_size_binary(t):
            return {"type": "fixed", "name": unique(path + "_fixed"), "size": t.byte_width}, None
        if pa.types.is_decimal(t):
            return {"type": "bytes", "logicalType": "decimal", "precision": t.precision, "scale": t.scale}, None
        if pa.types.is_list(t):
            item, plan = typ(t.value_type, path + "_item")
            return {"type": "array", "items": ["null", item] if t.value_field.nullable else item}, \
                (("list", plan) if plan else None)
        if pa.types.is_map(t):
            if not pa.types.is_string(t.key_type):
                raise StampflowError(f"Arrow map with {t.key_type} keys at {path} has no Avro equivalent")
            item, plan = typ(t.item_type, path + "_value")
            any_rename = True  # pyarrow yields maps as (key, value) lists; Avro writers want dicts
            return {"type": "map", "values": ["null", item] if t.item_field.nullable else item}, ("map", plan)
        if pa.types.is_struct(t):
            fields, plans, renamed = [], {}, False
            seen: set[str] = set()
            for f in t:
                avro_name = _avro_name(f.name)
                while avro_name in seen:
                    avro_name += "_"
                seen.add(avro_name)
                ftype, plan = typ(f.type, f"{path}_{avro_name}")
                entry: dict[str, Any] = {"name": avro_name,
                                         "type": ["null", ftype] if f.nullable else ftype}
                if f.nullable:
                    entry["default"] = None
                if avro_name != f.name:
                    entry["arrowName"] = f.name
                    renamed = True
                fields.append(entry)
                if plan is not None or avro_name != f.name:
                    plans[f.name] = (avro_name, plan)
            if renamed:
                any_rename = True
            record = {"type": "record", "name": unique(path), "fields": fields}
            return record, (("record", plans) if plans else None)
        raise StampflowError(f"Arrow type {t} at {path} has no Avro equivalent")

    struct = pa.struct(list(schema))
    record, plan = typ(struct, _avro_name(name))
    record["doc"] = "Row of a Parquet file, schema inferred from its Arrow schema by stampflow"
    return record, (plan if any_rename else None)


def _rename(value: Any, plan: Any) -> Any:
    """Apply a renaming plan from `arrow_to_avro_schema` to one row (only where names were sanitised)."""
    if plan is None or value is None:
        return value
    kind, inner = plan
    if kind == "record":
        out = dict(value)
        for key, (avro_name, sub) in inner.items():
            if key in out:
                v = out.pop(key)
                out[avro_name] = _rename(v, sub)
        return out
    if kind == "list":
        return [_rename(v, inner) for v in value]
    if kind == "map":
        items = value.items() if isinstance(value, dict) else value  # pyarrow yields maps as (key, value) lists
        return {k: _rename(v, inner) for k, v in items}
    return value
