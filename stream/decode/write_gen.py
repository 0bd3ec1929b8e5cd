"""The generated row writer: Python source, compiled once per schema, for the Avro binary encoding of a row.

Used by the Parquet path (`arrow.RowWriter`): rows as pyarrow's ``to_pylist`` gives them, under the schema
`arrow.arrow_to_avro_schema` inferred for their file. The same generator core as the decoder's reader
(`codegen.SourceGen`), the same varint encoder (`varint.encode_long`).
"""
from __future__ import annotations

from typing import Any, Callable

from stream.decode.codegen import SourceGen, Unsupported
from stream.decode.varint import encode_long

__all__ = ["WriterGen", "Bad", "build_writer"]


class Bad(Exception):
    """A value the generated writer does not take as is; fastavro encodes this row (same bytes, or its error)."""


_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


class WriterGen(SourceGen):
    """Python source for ``write(row) -> bytes``: the Avro binary encoding of a row under a schema from
    `arrow.arrow_to_avro_schema`, reading the row as pyarrow's ``to_pylist`` gives it (Arrow field names, maps as
    (key, value) lists), so no renaming pass is needed.

    fastavro's ``schemaless_writer`` picks each union branch by *validating* the value against the branches,
    which walks every nullable record and list in full (``["null", record]`` everywhere in a Parquet-derived
    schema): about 1.6 ms per Fink row. The generated code knows the branch from ``is None`` and writes the
    same bytes (tests compare them on every shared row). It is strict: any value whose type is not exactly what
    the branch expects (``type(v) is float`` for double, ints in range, ...) raises `Bad`, and that row is
    left to fastavro, so the result is always what fastavro writes (or fastavro's error).
    """

    def __init__(self, schema: dict[str, Any]):
        super().__init__()  # named types are registered as the walk meets their definitions
        self.consts["Bad"] = Bad  # raised by the generated code
        self.lines: list[str] = []
        self.funcs: dict[int, str] = {}
        self.root = self.record_func(schema)

    def resolve(self, t: Any) -> Any:
        """A named type's definition (recorded where it is first defined), ``{"type": "long"}`` as ``"long"``."""
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
        body = [f"def {name}(r, o):", "    if r.__class__ is not dict: raise Bad"]
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
                raise Unsupported(f"union {t}")
            null_index = branches.index("null")
            other = branches[1 - null_index]
            if isinstance(other, list):
                raise Unsupported("nested union")
            null_tag, other_tag = encode_long(null_index), encode_long(1 - null_index)  # the branch indexes
            return ([f"{ind}if {var} is None:", f"{ind}    o += {null_tag!r}", f"{ind}else:",
                     f"{ind}    o += {other_tag!r}"] + self.write(other, var, ind + "    "))
        kind = t.get("type") if isinstance(t, dict) else t
        if isinstance(t, dict) and t.get("logicalType"):
            raise Unsupported(f"logical type {t['logicalType']}")
        if kind == "null":
            return [f"{ind}if {var} is not None: raise Bad"]
        if kind == "boolean":
            return [f"{ind}if {var} is True: o += b'\\x01'", f"{ind}elif {var} is False: o += b'\\x00'",
                    f"{ind}else: raise Bad"]
        if kind in ("int", "long"):
            lo, hi = (_INT_MIN, _INT_MAX) if kind == "int" else (_LONG_MIN, _LONG_MAX)
            return [f"{ind}if {var}.__class__ is not int or not {lo} <= {var} <= {hi}: raise Bad",
                    f"{ind}o += zz({var})"]
        if kind in ("float", "double"):
            pack = "pf" if kind == "float" else "pd"
            return [f"{ind}if {var}.__class__ is not float: raise Bad", f"{ind}o += {pack}({var})"]
        if kind == "string":
            b = self.tmp("b")
            return [f"{ind}if {var}.__class__ is not str: raise Bad", f"{ind}{b} = {var}.encode()",
                    f"{ind}o += zz(len({b}))", f"{ind}o += {b}"]
        if kind == "bytes":
            return [f"{ind}if {var}.__class__ is not bytes: raise Bad", f"{ind}o += zz(len({var}))",
                    f"{ind}o += {var}"]
        if kind == "fixed":
            return [f"{ind}if {var}.__class__ is not bytes or len({var}) != {int(t['size'])}: raise Bad",
                    f"{ind}o += {var}"]
        if kind == "enum":
            table = self.const({s: encode_long(i) for i, s in enumerate(t["symbols"])})
            return [f"{ind}o += {table}[{var}]"]  # KeyError (not a symbol) -> fastavro
        if kind == "record":
            return [f"{ind}{self.record_func(t)}({var}, o)"]
        if kind == "array":
            item = self.tmp("x")
            return ([f"{ind}if {var}.__class__ is not list: raise Bad", f"{ind}if {var}:",
                     f"{ind}    o += zz(len({var}))", f"{ind}    for {item} in {var}:"]
                    + self.write(t["items"], item, ind + "        ") + [f"{ind}o += b'\\x00'"])
        if kind == "map":
            items, k, v = self.tmp("m"), self.tmp("k"), self.tmp("x")
            return ([f"{ind}if {var}.__class__ is list: {items} = dict({var})",  # pyarrow: (key, value) pairs
                     f"{ind}elif {var}.__class__ is dict: {items} = {var}", f"{ind}else: raise Bad",
                     f"{ind}if {items}:", f"{ind}    o += zz(len({items}))",
                     f"{ind}    for {k}, {v} in {items}.items():"]
                    + self.write("string", k, ind + "        ") + self.write(t["values"], v, ind + "        ")
                    + [f"{ind}o += b'\\x00'"])
        raise Unsupported(f"Avro type {kind!r}")

    def build(self) -> Callable[[dict[str, Any]], bytes]:
        source = "\n".join(self.lines + ["def write(row):", "    o = bytearray()", f"    {self.root}(row, o)",
                                         "    return bytes(o)"])
        return self.compile_source(source, "<stampflow row writer>", "write")


def build_writer(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """The compiled ``write(row) -> bytes`` for ``schema``; raises `Unsupported` for a schema it does not handle
    (and a row it does not take raises `Bad`)."""
    return WriterGen(schema).build()
