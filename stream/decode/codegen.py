"""The Avro code generator's core: one machinery behind both generated directions.

* `read_gen.ReaderGen`: ``read(b, p) -> (record, p)``, the projection reader of a writer schema (decoder);
* `write_gen.WriterGen`: ``write(row) -> bytes``, the row encoder of a Parquet-derived schema (file source).

Both emit Python source line by line, name helpers and constants through `SourceGen.tmp` / `SourceGen.const`,
and compile the source once per schema with `SourceGen.compile_source` against the same runtime (`RUNTIME`: the
one varint reader and writer in `varint`, and the float packers), so generated code from either side calls the
same primitives. A schema a generator does not handle raises `Unsupported`; the caller then uses fastavro.
"""
from __future__ import annotations

import struct
from typing import Any, Callable

from stream.decode.varint import encode_long, long_rest, read_long

__all__ = ["SourceGen", "Unsupported", "RUNTIME"]

#: The names generated code calls, bound once (globals of every generated function, plus its own constants).
RUNTIME: dict[str, Any] = {
    "_read_long": read_long, "_long_rest": long_rest,  # reader: varint, and its rest after an inlined first byte
    "_unpack_f": struct.Struct("<f").unpack_from, "_unpack_d": struct.Struct("<d").unpack_from,
    "zz": encode_long,  # writer: the varint encoder
    "pf": struct.Struct("<f").pack, "pd": struct.Struct("<d").pack,
}


class Unsupported(Exception):
    """The schema has a type this generator does not handle; the caller falls back to fastavro."""


class SourceGen:
    """Shared state of one generation run: named types, fresh names and the constants the source refers to."""

    def __init__(self, named: dict[str, Any] | None = None):
        self.named: dict[str, Any] = {} if named is None else named
        self.consts: dict[str, Any] = {}
        self.n = 0

    def tmp(self, prefix: str = "v") -> str:
        """A name not used before in this run (``v1``, ``T2``, ...)."""
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value: Any, prefix: str = "K") -> str:
        """A fresh global name bound to ``value`` in the compiled code (tables, symbols, compiled regexes)."""
        name = self.tmp(prefix)
        self.consts[name] = value
        return name

    @staticmethod
    def kind(t: Any) -> str:
        """The Avro type name of a (resolved) schema node: a primitive name, "union", or the dict's type."""
        if isinstance(t, str):
            return t
        if isinstance(t, list):
            return "union"
        return t["type"]

    def compile_source(self, source: str, filename: str, entry: str) -> Callable[..., Any]:
        """Compile ``source`` with `RUNTIME` and this run's constants as globals; return its function ``entry``
        (with the source kept as ``__source__`` for debugging)."""
        env: dict[str, Any] = {**RUNTIME, **self.consts}
        exec(compile(source, filename, "exec"), env)
        fn = env[entry]
        fn.__source__ = source
        return fn
