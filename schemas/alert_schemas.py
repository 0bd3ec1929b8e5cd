"""The official ZTF alert schemas shipped as package data (``schemas/ztf/v<version>/*.avsc``).

The ZTF schema is split over several files with named types; fastavro resolves the references only when the
named types are parsed before the types that use them: cutout, candidate, prv_candidate, fp_hist, then alert.
The files are verbatim copies of ZwickyTransientFacility/ztf-avro-alert (see ``schemas/ztf/PROVENANCE.md``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro

ZTF_SCHEMA_DIR = Path(__file__).resolve().parent / "ztf"

#: Parse order for the named types of the split ZTF schema (dependencies first).
ZTF_SCHEMA_ORDER = ("cutout", "candidate", "prv_candidate", "fp_hist", "alert")


def ztf_schema_versions() -> list[str]:
    """The ZTF schema versions shipped with the package, e.g. ``["4.02"]``."""
    return sorted(p.name[1:] for p in ZTF_SCHEMA_DIR.glob("v*") if (p / "alert.avsc").is_file())


def load_ztf_schema_json(version: str = "4.02") -> dict[str, Any]:
    """The alert schema of ``version`` as one self-contained JSON document (named types inlined at first use).

    Useful for writing alerts (fastavro.writer embeds this JSON in the container header).
    """
    return json.loads(json.dumps(_expand(version)))


def load_ztf_schema(version: str = "4.02") -> dict[str, Any]:
    """Parse the ZTF alert schema of ``version`` with fastavro and return the parsed ``ztf.alert`` schema."""
    return _parsed(version)


@lru_cache(maxsize=None)
def _read_parts(version: str) -> dict[str, dict[str, Any]]:
    directory = ZTF_SCHEMA_DIR / f"v{version}"
    if not directory.is_dir():
        raise ValueError(f"unknown ZTF schema version {version!r}; shipped: {', '.join(ztf_schema_versions())}")
    parts: dict[str, dict[str, Any]] = {}
    for name in ZTF_SCHEMA_ORDER:
        path = directory / f"{name}.avsc"
        if path.is_file():  # older schema versions have no fp_hist
            parts[name] = json.loads(path.read_text(encoding="utf-8"))
    if "alert" not in parts:
        raise ValueError(f"ZTF schema {version} has no alert.avsc in {directory}")
    return parts


@lru_cache(maxsize=None)
def _parsed(version: str) -> dict[str, Any]:
    named: dict[str, Any] = {}
    parsed: dict[str, Any] = {}
    for name, schema in _read_parts(version).items():
        parsed[name] = fastavro.parse_schema(schema, named_schemas=named)
    return parsed["alert"]


def _expand(version: str) -> dict[str, Any]:
    parts = _read_parts(version)
    defs: dict[str, dict[str, Any]] = {}
    for name, schema in parts.items():
        if name != "alert":
            defs[f"{schema.get('namespace', '')}.{schema['name']}".lstrip(".")] = schema
    seen: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            if node in defs and node not in seen:
                seen.add(node)
                return walk(defs[node])
            return node
        if isinstance(node, list):
            return [walk(x) for x in node]
        if isinstance(node, dict):
            out = dict(node)
            if out.get("type") == "record":
                out["fields"] = [dict(f, type=walk(f["type"])) for f in out["fields"]]
            elif out.get("type") == "array":
                out["items"] = walk(out["items"])
            elif out.get("type") == "map":
                out["values"] = walk(out["values"])
            return out
        return node

    return walk(parts["alert"])
