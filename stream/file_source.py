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
  with a schema inferred from the Arrow schema (`arrow_to_avro_schema`), so replay can send it. The schema,
  its container header and a generated row encoder (`_RowWriter`, byte-identical to fastavro's
  ``schemaless_writer``) are built once per file, so a row costs its encoding only (~0.4 ms for a Fink row
  with its 30-epoch history, against 1.6-4 ms through fastavro's union validation).

A file that cannot be read or parsed (bad sync marker, truncation, bad gzip, unreadable Parquet) becomes a
`DeadLetter` with ``stage="read"``, the original bytes (empty for a whole archive that fails part-way: the bytes
are in the archive, which the origin names) and a clear message; iteration carries on. In directories, files
with unknown extensions (and archive members that are not Avro) are skipped, never silently: see
``FileSource.stats["skipped"]`` and ``FileSource.skipped_paths``. A file named explicitly with an unknown
extension is dead-lettered.
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

from stream.decode import Container, _SchemaCache, container_header, make_container, parse_container
from schemas.errors import DecodeError, PacketError, StampflowError
from schemas.packet import DeadLetter, Framing, Origin, RawMessage

__all__ = ["FileSource", "arrow_to_avro_schema", "avro_ready_arrow_schema", "KNOWN_SUFFIXES"]

KNOWN_SUFFIXES = (".avro", ".avro.gz", ".tar.gz", ".tgz", ".tar", ".parquet")
#: How many skipped paths `FileSource.skipped_paths` lists (the count in ``stats["skipped"]`` is exact).
SKIPPED_PATHS_SHOWN = 20
_STATS_KEYS = ("files", "messages", "dead_letters", "skipped", "empty")
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

    Counters, for the run in progress or the last one (reset when an iteration starts; all zero before):

    * ``stats``: a `Counter` that always holds the keys ``files`` (files read), ``messages`` (`RawMessage` items
      yielded), ``dead_letters`` (`DeadLetter` items yielded), ``skipped`` and ``empty`` (containers without
      records, which yield nothing).
    * ``stats["skipped"]``: how many inputs were skipped without a dead letter: files with an unknown extension
      found while walking a directory (counted as soon as iteration starts) and archive members that are not
      ``.avro``/``.avro.gz`` (counted as the archive is read). Explicitly named files are never skipped (an
      unknown extension is dead-lettered instead).
    * ``skipped_paths``: the first `SKIPPED_PATHS_SHOWN` (20) of them, as strings (``"dir/file.npy"``,
      ``"night.tar.gz:member.txt"``), for a report such as "skipped 12 files (a.npy, b.csv, ...)".
      ``skipped`` is the full list.

    `files` and `count` do not touch these counters, so calling `count` for a progress bar (before or after
    iterating) leaves them as they are.
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
        self.stats: Counter[str] = Counter(dict.fromkeys(_STATS_KEYS, 0))
        self._cache = _SchemaCache()

    @property
    def skipped_paths(self) -> list[str]:
        """The first `SKIPPED_PATHS_SHOWN` skipped paths of the current/last iteration (``stats["skipped"]``
        has the count)."""
        return self.skipped[:SKIPPED_PATHS_SHOWN]

    # -- discovery ------------------------------------------------------------------------------------------
    def files(self) -> list[tuple[Path, bool]]:
        """(path, named explicitly) for every file, in iteration order (skipped files left out)."""
        return self._discover()[0]

    def _discover(self) -> tuple[list[tuple[Path, bool]], list[str]]:
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
        return out, skipped

    # -- iteration ------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[RawMessage | DeadLetter]:
        return self.iter_messages()

    def iter_messages(self) -> Iterator[RawMessage | DeadLetter]:
        files, skipped = self._discover()
        self.skipped = skipped
        self.stats = Counter(dict.fromkeys(_STATS_KEYS, 0))
        self.stats["skipped"] = len(skipped)
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
            writer = _RowWriter(avro_schema, renames)  # once per file: schema parsed, row encoder generated
            schema_text = _json(avro_schema)
            header = container_header(schema_text)  # once per file: every row's container starts with it
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
                        value = make_container(schema_text, [writer.encode(row)], header=header)
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
            nullable = t.value_field.nullable and item != "null"
            return {"type": "array", "items": ["null", item] if nullable else item}, \
                (("list", plan) if plan else None)
        if pa.types.is_map(t):
            if not pa.types.is_string(t.key_type):
                raise StampflowError(f"Arrow map with {t.key_type} keys at {path} has no Avro equivalent")
            item, plan = typ(t.item_type, path + "_value")
            any_rename = True  # pyarrow yields maps as (key, value) lists; Avro writers want dicts
            nullable = t.item_field.nullable and item != "null"
            return {"type": "map", "values": ["null", item] if nullable else item}, ("map", plan)
        if pa.types.is_struct(t):
            fields, plans, renamed = [], {}, False
            seen: set[str] = set()
            for f in t:
                avro_name = _avro_name(f.name)
                while avro_name in seen:
                    avro_name += "_"
                seen.add(avro_name)
                ftype, plan = typ(f.type, f"{path}_{avro_name}")
                nullable = f.nullable and ftype != "null"  # ["null", "null"] is not a valid union
                entry: dict[str, Any] = {"name": avro_name, "type": ["null", ftype] if nullable else ftype}
                if nullable:
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


# ---------------------------------------------------------------------------------------------------------------
# Rows -> Avro bytes

class _Unsupported(Exception):
    """The schema has a type the generated writer does not handle; fastavro encodes every row instead."""


class _Bad(Exception):
    """A value the generated writer does not take as is; fastavro encodes this row (same bytes, or its error)."""


_SMALL = [bytes([n]) for n in range(128)]
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _zigzag(n: int) -> bytes:
    """Avro long: zigzag, then base-128 varint (little-endian groups)."""
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _WriterGen:
    """Python source for ``write(row) -> bytes``: the Avro binary encoding of a row under a schema from
    `arrow_to_avro_schema`, reading the row as pyarrow's ``to_pylist`` gives it (Arrow field names, maps as
    (key, value) lists), so no renaming pass is needed.

    fastavro's ``schemaless_writer`` picks each union branch by *validating* the value against the branches,
    which walks every nullable record and list in full (``["null", record]`` everywhere in a Parquet-derived
    schema): about 1.6 ms per Fink row. The generated code knows the branch from ``is None`` and writes the
    same bytes (tests compare them on every shared row). It is strict: any value whose type is not exactly what
    the branch expects (``type(v) is float`` for double, ints in range, ...) raises `_Bad`, and that row is
    left to fastavro, so the result is always what fastavro writes (or fastavro's error).
    """

    def __init__(self, schema: dict[str, Any]):
        self.lines: list[str] = []
        self.funcs: dict[int, str] = {}
        self.named: dict[str, Any] = {}
        self.consts: dict[str, Any] = {}
        self.n = 0
        self.root = self.record_func(schema)

    def tmp(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any) -> str:
        name = self.tmp("K")
        self.consts[name] = value
        return name

    def resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t in self.named:
            return self.named[t]
        if isinstance(t, dict) and t.get("type") in ("record", "fixed", "enum") and "name" in t:
            self.named[t["name"]] = t
        if isinstance(t, dict) and isinstance(t.get("type"), (str, list)) and t["type"] not in (
                "record", "fixed", "enum", "array", "map") and not t.get("logicalType"):
            return self.resolve(t["type"])  # {"type": "long"} and the like
        return t

    def record_func(self, t: dict[str, Any]) -> str:
        key = id(t)
        if key in self.funcs:
            return self.funcs[key]
        name = self.tmp("rec")
        self.funcs[key] = name
        body = [f"def {name}(r, o):", "    if r.__class__ is not dict: raise _Bad"]
        for f in t["fields"]:
            src = f.get("arrowName", f["name"])
            var = self.tmp("v")
            body.append(f"    {var} = r.get({src!r})")
            body += self.write(f["type"], var, "    ")
        self.lines += body + [""]
        return name

    def write(self, t: Any, var: str, ind: str) -> list[str]:
        t = self.resolve(t)
        if isinstance(t, list):
            branches = [self.resolve(b) for b in t]
            if len(branches) == 1:
                return ["" + ind + "o += b'\\x00'"] + self.write(branches[0], var, ind)
            if len(branches) != 2 or "null" not in branches or branches[0] == branches[1]:
                raise _Unsupported(f"union {t}")
            null_index = branches.index("null")
            other = branches[1 - null_index]
            if isinstance(other, list):
                raise _Unsupported("nested union")
            null_tag, other_tag = _SMALL[2 * null_index], _SMALL[2 * (1 - null_index)]
            return ([f"{ind}if {var} is None:", f"{ind}    o += {null_tag!r}", f"{ind}else:",
                     f"{ind}    o += {other_tag!r}"] + self.write(other, var, ind + "    "))
        kind = t.get("type") if isinstance(t, dict) else t
        if isinstance(t, dict) and t.get("logicalType"):
            raise _Unsupported(f"logical type {t['logicalType']}")
        if kind == "null":
            return [f"{ind}if {var} is not None: raise _Bad"]
        if kind == "boolean":
            return [f"{ind}if {var} is True: o += b'\\x01'", f"{ind}elif {var} is False: o += b'\\x00'",
                    f"{ind}else: raise _Bad"]
        if kind in ("int", "long"):
            lo, hi = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)
            return [f"{ind}if {var}.__class__ is not int or not {lo} <= {var} <= {hi}: raise _Bad",
                    f"{ind}o += zz({var})"]
        if kind in ("float", "double"):
            pack = "pf" if kind == "float" else "pd"
            return [f"{ind}if {var}.__class__ is not float: raise _Bad", f"{ind}o += {pack}({var})"]
        if kind == "string":
            b = self.tmp("b")
            return [f"{ind}if {var}.__class__ is not str: raise _Bad", f"{ind}{b} = {var}.encode()",
                    f"{ind}o += zz(len({b}))", f"{ind}o += {b}"]
        if kind == "bytes":
            return [f"{ind}if {var}.__class__ is not bytes: raise _Bad", f"{ind}o += zz(len({var}))",
                    f"{ind}o += {var}"]
        if kind == "fixed":
            return [f"{ind}if {var}.__class__ is not bytes or len({var}) != {int(t['size'])}: raise _Bad",
                    f"{ind}o += {var}"]
        if kind == "enum":
            table = self.const({s: _zigzag(i) for i, s in enumerate(t["symbols"])})
            return [f"{ind}o += {table}[{var}]"]  # KeyError (not a symbol) -> fastavro
        if kind == "record":
            return [f"{ind}{self.record_func(t)}({var}, o)"]
        if kind == "array":
            item = self.tmp("x")
            return ([f"{ind}if {var}.__class__ is not list: raise _Bad", f"{ind}if {var}:",
                     f"{ind}    o += zz(len({var}))", f"{ind}    for {item} in {var}:"]
                    + self.write(t["items"], item, ind + "        ") + [f"{ind}o += b'\\x00'"])
        if kind == "map":
            items, k, v = self.tmp("m"), self.tmp("k"), self.tmp("x")
            return ([f"{ind}if {var}.__class__ is list: {items} = dict({var})",  # pyarrow: (key, value) pairs
                     f"{ind}elif {var}.__class__ is dict: {items} = {var}", f"{ind}else: raise _Bad",
                     f"{ind}if {items}:", f"{ind}    o += zz(len({items}))",
                     f"{ind}    for {k}, {v} in {items}.items():"]
                    + self.write("string", k, ind + "        ") + self.write(t["values"], v, ind + "        ")
                    + [f"{ind}o += b'\\x00'"])
        raise _Unsupported(f"Avro type {kind!r}")

    def compile(self) -> "Any":
        import struct

        source = "\n".join(self.lines + ["def write(row):", "    o = bytearray()", f"    {self.root}(row, o)",
                                         "    return bytes(o)"])
        namespace: dict[str, Any] = {"_Bad": _Bad, "zz": _zigzag, "pf": struct.Struct("<f").pack,
                                     "pd": struct.Struct("<d").pack, **self.consts}
        exec(compile(source, "<stampflow row writer>", "exec"), namespace)
        return namespace["write"]


class _RowWriter:
    """Avro binary encoding (schemaless) of Parquet rows under the schema inferred for their file.

    The generated writer (`_WriterGen`) does the rows it can, ~15x faster than fastavro; any row it does not
    take (and every row of a schema it does not handle) goes through ``fastavro.schemaless_writer``.
    """

    def __init__(self, avro_schema: dict[str, Any], renames: Any):
        self.renames = renames
        self.parsed = fastavro.parse_schema(avro_schema)  # also validates the inferred schema up front
        try:
            self.fast = _WriterGen(avro_schema).compile()
        except _Unsupported:
            self.fast = None
        self.fallbacks = 0

    def encode(self, row: dict[str, Any]) -> bytes:
        if self.fast is not None:
            try:
                return self.fast(row)
            except Exception:  # _Bad, or anything unexpected: fastavro decides (same bytes, or its error)
                pass
        self.fallbacks += 1
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, _rename(row, self.renames) if self.renames else row)
        return buf.getvalue()
