"""Writer schemas, parsed once: `SchemaEntry` (parsed writer, projection, generated reader, survey, version) and
`SchemaCache`, an LRU of entries keyed by the schema's bytes.

A stream repeats one writer schema (~30 kB of JSON for ZTF): it is parsed, projected and its reader generated
the first time it is seen (~40 ms), then found by one bytes comparison.
"""
from __future__ import annotations

import io
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import fastavro

from schemas.errors import DecodeError
from stream.decode.projection import projection_schema, projection_spec
from stream.decode.read_gen import build_reader

__all__ = ["SchemaEntry", "SchemaCache", "SHARED_CACHE"]


@dataclass(slots=True)
class SchemaEntry:
    """A writer schema parsed once: fastavro-parsed writer, projection, generated reader, survey and version."""

    schema_bytes: bytes
    writer_json: dict[str, Any]
    writer: dict[str, Any]
    projection: dict[str, Any]
    field_names: frozenset[str]
    survey: str | None
    version: str | None
    codegen_error: str | None = None
    _named: dict[str, Any] = field(default_factory=dict, repr=False)
    _spec: dict[str, Any] = field(default_factory=dict, repr=False)
    _codegen: Callable[[bytes, int], tuple[dict, int]] | None = field(default=None, repr=False)
    _fastavro_projection: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, schema_bytes: bytes) -> "SchemaEntry":
        try:
            writer_json = json.loads(schema_bytes)
        except ValueError as exc:
            raise DecodeError(f"writer schema is not valid JSON: {exc}") from None
        if not isinstance(writer_json, dict) or writer_json.get("type") != "record":
            raise DecodeError("writer schema is not an Avro record")
        named: dict[str, Any] = {}
        try:
            writer = fastavro.parse_schema(writer_json, named_schemas=named)
        except Exception as exc:
            raise DecodeError(f"writer schema does not parse: {exc.__class__.__name__}: {exc}") from None
        spec = projection_spec(writer)
        projection = projection_schema(writer, named, spec)
        names = frozenset(f["name"] for f in writer["fields"])
        if "stamps" in names and "cutout_schema_version" in names:
            survey = "CUTOUT"  # the packet's own survey field says which survey the pixels are from
        elif "diaSource" in names:
            survey = "LSST"
        else:
            survey = "ZTF" if ("candidate" in names or "objectId" in names) else None
        return cls(schema_bytes=bytes(schema_bytes), writer_json=writer_json, writer=writer,
                   projection=projection, field_names=names, survey=survey,
                   version=_schema_version(writer_json, survey), _named=named, _spec=spec)

    @property
    def codegen(self) -> Callable[[bytes, int], tuple[dict, int]] | None:
        """The generated projection reader, compiled on first use (None when the schema is not supported)."""
        if self._codegen is None and self.codegen_error is None:
            try:
                self._codegen = build_reader(self._named, self.writer, self._spec)
            except Exception as exc:  # Unsupported, or a schema too deeply nested to compile: use fastavro
                self.codegen_error = f"{exc.__class__.__name__}: {exc}"
        return self._codegen

    def fastavro_projection(self) -> dict[str, Any]:
        if self._fastavro_projection is None:
            self._fastavro_projection = fastavro.parse_schema(self.projection)
        return self._fastavro_projection

    def read(self, buf: bytes, pos: int, end: int, engine: str = "auto") -> tuple[dict[str, Any], int]:
        """Decode one projected record starting at ``pos``; returns (record, position after it)."""
        if engine != "fastavro":
            reader = self._codegen or self.codegen
            if reader is not None:
                return reader(buf, pos)
        if engine == "codegen":
            raise DecodeError(f"no generated reader for this schema: {self.codegen_error}")
        bio = io.BytesIO(memoryview(buf)[pos:end])
        rec = fastavro.schemaless_reader(bio, self.writer, self.fastavro_projection())
        return rec, pos + bio.tell()


def _schema_version(writer_json: dict[str, Any], survey: str | None) -> str | None:
    version = writer_json.get("version")
    if version is not None:
        return str(version)
    name = f"{writer_json.get('namespace', '')}.{writer_json.get('name', '')}".strip(".")
    # lsst.v11_0.alert / elasticc.v0_9.alert -> "lsst.v11_0" / "elasticc.v0_9"
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.startswith("v") and part[1:2].isdigit():
            return ".".join(parts[:i + 1])
    return None


class SchemaCache:
    """LRU of `SchemaEntry` keyed by the writer schema's bytes, with a one-entry fast check for streams."""

    def __init__(self, size: int = 64):
        self.size = size
        self._entries: OrderedDict[bytes, SchemaEntry] = OrderedDict()
        self._last: SchemaEntry | None = None

    def get(self, schema_bytes: bytes) -> SchemaEntry:
        last = self._last
        if last is not None and last.schema_bytes == schema_bytes:
            return last
        key = bytes(schema_bytes)
        entry = self._entries.get(key)
        if entry is None:
            entry = SchemaEntry.build(key)
            self._entries[key] = entry
            if len(self._entries) > self.size:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        self._last = entry
        return entry


#: The cache of module-level helpers (`decoder.split_container`) when the caller brings none.
SHARED_CACHE = SchemaCache()
