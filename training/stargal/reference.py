"""The Pan-STARRS1 star/galaxy reference every ZTF alert carries, and the fields a model must never read.

ZTF cross-matches each candidate with PS1 (Tachibana & Miller 2018): ``sgscore1`` is the star/galaxy score of
the nearest PS1 source (1 = star) and ``distpsnr1`` its distance in arcsec. Where that source lies within 1"
and its score is confident, the alert's science stamp is centred on it, so the two must agree. That makes the
reference a label to score against, never an input: `CATALOGUE_FIELDS` lists every cross-match field, and
`tests/unit/test_stargal_alerts.py` changes them in real packets and checks the predictions do not move.

The reference is read straight from the message bytes (fastavro on the alert's own container, or the Parquet
row), not from the worker's `Packet`, which does not even carry these fields: the decoder's projection leaves
them out.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.packet import RawMessage
from stream.decode.container import whole_record

#: ZTF candidate fields from catalogue cross-matches (PS1, Gaia, solar-system objects) plus SExtractor's own
#: star/galaxy score: what a star/galaxy model is compared with, so never an input.
CATALOGUE_FIELD = re.compile(r"^(sgscore\d|distpsnr\d|s[grizy]mag\d|objectidps\d|nmtchps|neargaia\w*|"
                             r"maggaia\w*|ssdistnr|ssmagnr|ssnamenr|classtar)$")
STAR, GALAXY = "star", "galaxy"


def is_catalogue_field(name: str) -> bool:
    """True for a candidate field a star/galaxy model must not use as input (it is what models are judged by)."""
    return CATALOGUE_FIELD.match(name) is not None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When the PS1 reference counts as confident (defaults: Tachibana & Miller's confident ends, within 1")."""

    max_distance: float = 1.0   # distpsnr1 < this, arcsec
    star_min: float = 0.9       # sgscore1 > this: star
    galaxy_max: float = 0.1     # sgscore1 < this: galaxy


@dataclass(frozen=True, slots=True)
class Reference:
    """One alert's PS1 reference and the context a breakdown needs (band, brightness, sign)."""

    candid: int
    object_id: str
    label: str | None          # star, galaxy, or None when not confident
    sgscore1: float | None
    distpsnr1: float | None
    fid: int | None            # 1 g, 2 r, 3 i
    magpsf: float | None       # difference-image PSF magnitude
    isdiffpos: str | None      # "t"/"1" brighter than the template, "f"/"0" fainter
    srmag1: float | None       # PS1 r magnitude of the reference source (its brightness, for the gallery)


def label_of(sgscore1: Any, distpsnr1: Any, t: Thresholds) -> str | None:
    if sgscore1 is None or distpsnr1 is None or sgscore1 < 0 or distpsnr1 < 0:  # -999: no PS1 source
        return None
    if distpsnr1 >= t.max_distance:
        return None
    if sgscore1 > t.star_min:
        return STAR
    if sgscore1 < t.galaxy_max:
        return GALAXY
    return None


def record_of(msg: RawMessage) -> dict[str, Any] | None:
    """The full alert record behind a message.

    The message's own Avro container is read in full when it has one: a record a source already decoded may be
    the decoder's projection (multi-record containers are split that way), which leaves the PS1 fields out.
    Parquet rows have no container and are whole rows already.
    """
    if msg.value.startswith(b"Obj\x01"):
        return whole_record(msg.value)
    return msg.record  # Parquet rows; None for Confluent-framed (Rubin) messages, which carry no PS1 reference


def reference_of(record: dict[str, Any], t: Thresholds) -> Reference | None:
    cand = record.get("candidate") or {}
    candid = record.get("candid") or cand.get("candid")
    if candid is None or "sgscore1" not in cand:
        return None
    fid = cand.get("fid")
    return Reference(candid=int(candid), object_id=str(record.get("objectId", "")),
                     label=label_of(cand.get("sgscore1"), cand.get("distpsnr1"), t),
                     sgscore1=cand.get("sgscore1"), distpsnr1=cand.get("distpsnr1"),
                     fid=int(fid) if fid is not None else None, magpsf=cand.get("magpsf"),
                     isdiffpos=cand.get("isdiffpos"), srmag1=cand.get("srmag1"))
