"""The projection: which fields of a writer schema a `Packet` needs, and the reader schema keeping only those.

Only these fields are materialised (objectId, candid, schemavsn, a few candidate fields and the three cutouts;
Rubin: diaSourceId, a few diaSource fields, diaObject.diaObjectId and the cutouts; stampflow cutout packets
whole); everything else is skipped by the generated reader or by fastavro's schema resolution.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ZTF_CANDIDATE_FIELDS", "LSST_DIASOURCE_FIELDS", "EXTRA_FIELDS", "projection_spec", "projection_schema"]

# What a Packet needs. None = the whole value; a set = a record projected onto those fields.
ZTF_CANDIDATE_FIELDS = frozenset({"jd", "ra", "dec", "fid", "candid", "magpsf", "sigmapsf", "isdiffpos", "rb",
                                  "drb", "programid"})
LSST_DIASOURCE_FIELDS = frozenset({"diaSourceId", "diaObjectId", "ssObjectId", "midpointMjdTai", "midPointTai",
                                   "ra", "dec", "decl", "band", "filterName", "psfFlux", "psfFluxErr", "snr",
                                   "reliability"})
#: Top-level broker/label fields copied into ``Packet.extra`` when present (Fink SIMBAD/TNS labels etc.).
EXTRA_FIELDS = ("cdsxmatch", "tns", "tnsclass", "finkclass", "labels", "topic")
_TOP_SPEC: dict[str, Any] = {
    "objectId": None, "candid": None, "schemavsn": None, "candidate": ZTF_CANDIDATE_FIELDS,
    "cutoutScience": None, "cutoutTemplate": None, "cutoutDifference": None,
    "diaSourceId": None, "alertId": None, "lsst_schema_version": None,
    "diaSource": LSST_DIASOURCE_FIELDS, "diaObject": frozenset({"diaObjectId"}),
    **{name: None for name in EXTRA_FIELDS},
    # stampflow cutout packets (schemas/cutout_packet): small records, read whole
    **{name: None for name in ("cutout_schema_version", "id", "survey", "instrument", "bands", "pixel_scale",
                               "ra", "dec", "stamps", "truth", "dataset", "split", "observed_time")},
}


def _strip(schema: Any) -> Any:
    """A parsed fastavro schema without fastavro's private keys."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if not k.startswith("__")}
    if isinstance(schema, list):
        return [_strip(x) for x in schema]
    return schema


def projection_spec(writer: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``writer`` (a record schema) a Packet needs: name -> None (whole) or set (sub-fields)."""
    names = {f["name"] for f in writer.get("fields", [])}
    return {name: spec for name, spec in _TOP_SPEC.items() if name in names}


def projection_schema(parsed_writer: dict[str, Any], named: dict[str, Any],
                      spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A reader schema keeping only ``spec``'s fields of ``parsed_writer``; named types inlined at first use."""
    spec = projection_spec(parsed_writer) if spec is None else spec
    defined: set[str] = set()

    def typ(t: Any, sub: Any) -> Any:
        if isinstance(t, str):
            if t in named:
                if t in defined:
                    return t
                return typ(named[t], sub)
            return t
        if isinstance(t, list):
            return [typ(x, sub) for x in t]
        kind = t.get("type")
        if kind == "record":
            defined.add(t["name"])
            fields = []
            for f in t["fields"]:
                if isinstance(sub, (set, frozenset)):
                    if f["name"] not in sub:
                        continue
                    inner = None
                elif isinstance(sub, dict):
                    if f["name"] not in sub:
                        continue
                    inner = sub[f["name"]]
                else:
                    inner = None
                fields.append({k: (typ(v, inner) if k == "type" else v) for k, v in f.items()
                               if not k.startswith("__")})
            return {"type": "record", "name": t["name"], "fields": fields}
        if kind in ("enum", "fixed"):
            defined.add(t["name"])
            return _strip(t)
        if kind == "array":
            return {**_strip(t), "items": typ(t["items"], None)}
        if kind == "map":
            return {**_strip(t), "values": typ(t["values"], None)}
        return _strip(t)

    return typ(parsed_writer, spec)


