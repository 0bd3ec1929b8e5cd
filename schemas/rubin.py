"""Rubin (LSST) alert schemas, loaded from Rubin's own package ``lsst-alert-packet`` (pinned in pyproject.toml).

stampflow carries no copy of them: every schema version the package ships (3.0 to 11.x) is read from its
``lsst/alert/packet/schema/<major>/<minor>/`` directory with the package's own loader (`Schema.from_file`, which
resolves the split ``lsst.vM_m.*.avsc`` files), together with the sample alert shipped next to each version.

Schema ids follow Rubin's convention for Confluent framing (``Schema.get_schema_id`` in the package, and the ids
Rubin's registry serves): ``major * 100 + minor``, so 7.1 is 701 and 11.1 is 1101. The text behind an id is the
schema's Avro *parsing canonical form*, which is exactly what Rubin's ``syncAllSchemasToRegistry`` uploads; the
local resolver and a registry loaded from the package (deploy/registry) therefore serve the same bytes.
"""
from __future__ import annotations

import io
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import fastavro

__all__ = ["RUBIN_PACKAGE", "rubin_package_version", "rubin_schema_versions", "rubin_schema_id",
           "rubin_version_of_id", "rubin_schema", "rubin_schema_text", "rubin_schema_by_id", "rubin_sample_alert",
           "encode_rubin_alert", "frame_confluent"]

RUBIN_PACKAGE = "lsst-alert-packet"
_VERSION_DIR = re.compile(r"^\d+$")


def rubin_package_version() -> str:
    """The installed lsst-alert-packet version (named in error messages, so a missing id says where we looked)."""
    return metadata.version(RUBIN_PACKAGE)


def _schema_root() -> Path:
    from lsst.alert.packet.schema import get_schema_root  # Rubin's own package; imported only when needed
    return Path(str(get_schema_root()))


@lru_cache(maxsize=None)
def rubin_schema_versions() -> tuple[tuple[int, int], ...]:
    """Every (major, minor) the package ships with an alert schema, ascending: ((3, 0), (4, 0), ..., (11, 1))."""
    root = _schema_root()
    found = []
    for major_dir in root.iterdir():
        if not (major_dir.is_dir() and _VERSION_DIR.match(major_dir.name)):
            continue
        for minor_dir in major_dir.iterdir():
            if not (minor_dir.is_dir() and _VERSION_DIR.match(minor_dir.name)):
                continue
            major, minor = int(major_dir.name), int(minor_dir.name)
            if (minor_dir / f"lsst.v{major}_{minor}.alert.avsc").is_file():
                found.append((major, minor))
    return tuple(sorted(found))


def rubin_schema_id(major: int, minor: int) -> int:
    """Rubin's Confluent schema id of a version: major * 100 + minor (the package zero-pads the minor to 2 digits)."""
    if not 0 <= minor < 100:
        raise ValueError(f"Rubin schema minor version must be 0..99, got {minor}")
    return major * 100 + minor


def rubin_version_of_id(schema_id: int) -> tuple[int, int] | None:
    """(major, minor) of a Rubin schema id the package ships, or None."""
    version = divmod(int(schema_id), 100)
    return version if version in rubin_schema_versions() else None


def _check(major: int, minor: int) -> Path:
    if (major, minor) not in rubin_schema_versions():
        shipped = ", ".join(f"{a}.{b}" for a, b in rubin_schema_versions())
        raise ValueError(f"{RUBIN_PACKAGE} {rubin_package_version()} ships no Rubin alert schema {major}.{minor} "
                         f"(it ships {shipped})")
    return _schema_root() / str(major) / str(minor)


@lru_cache(maxsize=None)
def rubin_schema(major: int, minor: int) -> dict[str, Any]:
    """The resolved ``lsst.v<major>_<minor>.alert`` schema definition, read by the package's own loader."""
    from lsst.alert.packet.schema import Schema
    directory = _check(major, minor)
    return Schema.from_file(str(directory / f"lsst.v{major}_{minor}.alert.avsc")).definition


@lru_cache(maxsize=None)
def rubin_schema_text(major: int, minor: int) -> str:
    """The schema's Avro parsing canonical form: the text Rubin registers (and a registry serves) under its id."""
    return fastavro.schema.to_parsing_canonical_form(rubin_schema(major, minor))


def rubin_schema_by_id(schema_id: int) -> str | None:
    """The schema text behind a Rubin schema id, or None when the package ships no such version."""
    version = rubin_version_of_id(schema_id)
    return rubin_schema_text(*version) if version else None


def rubin_sample_alert(major: int, minor: int) -> dict[str, Any]:
    """The sample alert the package ships with a version (``sample_data/fakeAlert.avro``), as a record."""
    path = _check(major, minor) / "sample_data" / "fakeAlert.avro"
    with path.open("rb") as fh:
        records = list(fastavro.reader(fh))
    if len(records) != 1:
        raise ValueError(f"{path} holds {len(records)} alerts, expected 1")
    return records[0]


def frame_confluent(schema_id: int, body: bytes) -> bytes:
    """Confluent wire framing, as Rubin frames its alerts: magic byte 0, 4-byte big-endian schema id, Avro body."""
    return b"\x00" + int(schema_id).to_bytes(4, "big") + body


def encode_rubin_alert(record: dict[str, Any], major: int, minor: int) -> bytes:
    """One alert as Rubin publishes it: schemaless Avro with schema ``major.minor`` behind Confluent framing."""
    buf = io.BytesIO()
    # The full definition, as the package's Schema.serialize writes: it keeps the logical types (timestamps as
    # datetimes in the sample alerts of 8.0+) that the canonical form drops; the bytes are the same.
    fastavro.schemaless_writer(buf, rubin_schema(major, minor), record)
    return frame_confluent(rubin_schema_id(major, minor), buf.getvalue())
