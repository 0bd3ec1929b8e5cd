"""Parquet rows as Avro: the Avro schema inferred from a file's Arrow schema, and the row encoder.

The file source (`stream.file_source`) yields each Parquet row as a single-record Avro container, so replay can
send it like any ZTF alert. Per file: `parquet_avro_schema` (Arrow schema made Avro-ready, Avro schema, renaming
plan) and one `RowWriter`; per row: its encoding only (~0.4 ms for a Fink row with its 30-epoch history through
the generated writer, against 1.6-4 ms through fastavro's union validation).
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Callable

import fastavro

from schemas.errors import StampflowError
from stream.decode.codegen import Unsupported
from stream.decode.write_gen import build_writer

__all__ = ["RowWriter", "parquet_avro_schema", "avro_ready_arrow_schema", "arrow_to_avro_schema", "rename_row",
           "record_name", "avro_name"]

_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def avro_name(name: str) -> str:
    """``name`` as a valid Avro name: characters outside [A-Za-z0-9_] become "_", a leading digit gets "_"."""
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
                aname = avro_name(f.name)
                while aname in seen:
                    aname += "_"
                seen.add(aname)
                ftype, plan = typ(f.type, f"{path}_{aname}")
                nullable = f.nullable and ftype != "null"  # ["null", "null"] is not a valid union
                entry: dict[str, Any] = {"name": aname, "type": ["null", ftype] if nullable else ftype}
                if nullable:
                    entry["default"] = None
                if aname != f.name:
                    entry["arrowName"] = f.name
                    renamed = True
                fields.append(entry)
                if plan is not None or aname != f.name:
                    plans[f.name] = (aname, plan)
            if renamed:
                any_rename = True
            record = {"type": "record", "name": unique(path), "fields": fields}
            return record, (("record", plans) if plans else None)
        raise StampflowError(f"Arrow type {t} at {path} has no Avro equivalent")

    struct = pa.struct(list(schema))
    record, plan = typ(struct, avro_name(name))
    record["doc"] = "Row of a Parquet file, schema inferred from its Arrow schema by stampflow"
    return record, (plan if any_rename else None)


def rename_row(value: Any, plan: Any) -> Any:
    """Apply a renaming plan from `arrow_to_avro_schema` to one row (only where names were sanitised)."""
    if plan is None or value is None:
        return value
    kind, inner = plan
    if kind == "record":
        out = dict(value)
        for key, (avro_name, sub) in inner.items():
            if key in out:
                v = out.pop(key)
                out[avro_name] = rename_row(v, sub)
        return out
    if kind == "list":
        return [rename_row(v, inner) for v in value]
    if kind == "map":
        items = value.items() if isinstance(value, dict) else value  # pyarrow yields maps as (key, value) lists
        return {k: rename_row(v, inner) for k, v in items}
    return value


def record_name(path: Path) -> str:
    """The Avro record name for the rows of the Parquet file ``path``: ``parquet_<file stem>``, sanitised."""
    stem = path.name[:-len(".parquet")] if path.name.lower().endswith(".parquet") else path.stem
    return "parquet_" + avro_name(stem)[:60]


def parquet_avro_schema(arrow_schema: Any, path: Path) -> tuple[Any, dict[str, Any], Any]:
    """(Avro-ready Arrow schema to cast batches to, Avro record schema, renaming plan) for a Parquet file."""
    target = avro_ready_arrow_schema(arrow_schema)
    avro_schema, plan = arrow_to_avro_schema(target, name=record_name(path))
    return target, avro_schema, plan


class RowWriter:
    """Avro binary encoding (schemaless) of Parquet rows under the schema inferred for their file.

    The generated writer (`write_gen.WriterGen`) does the rows it can, ~15x faster than fastavro; any row it does
    not take (and every row of a schema it does not handle) goes through ``fastavro.schemaless_writer``.
    """

    def __init__(self, avro_schema: dict[str, Any], renames: Any):
        self.renames = renames
        self.parsed = fastavro.parse_schema(avro_schema)  # also validates the inferred schema up front
        try:
            self.fast: Callable[[dict[str, Any]], bytes] | None = build_writer(avro_schema)
        except Unsupported:
            self.fast = None
        self.fallbacks = 0

    def encode(self, row: dict[str, Any]) -> bytes:
        if self.fast is not None:
            try:
                return self.fast(row)
            except Exception:  # Bad, or anything unexpected: fastavro decides (same bytes, or its error)
                pass
        self.fallbacks += 1
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.parsed, rename_row(row, self.renames) if self.renames else row)
        return buf.getvalue()
