"""Archival cutouts as stream messages: the `Cutout` value and its Avro encoding (schemas/cutout_packet/v1.avsc).

Every archival reader (`training/*_data.py`) yields `Cutout`s; `stampflow replay --format ...` encodes them as
one Avro object container per message (the writer schema travels with the message, as it does for ZTF alerts,
so the worker decodes them with the same container path) or writes many to one ``.avro`` file. Stamps are
stored as gzipped FITS: the format every survey archive uses, and what the worker's stamp decoder reads.
"""
from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import fastavro
import numpy as np

SCHEMA_DIR = Path(__file__).resolve().parent / "cutout_packet"
SCHEMA_NAME = "stampflow.cutout.v1.CutoutPacket"
VERSION = "1"


@dataclass
class Cutout:
    """One archival stamp set: per-band 2-D images plus where and what it is."""

    id: str
    survey: str
    bands: list[str]
    images: dict[str, np.ndarray]
    pixel_scale: float | None = None  # arcsec/px; None when stamps were cut and resized per object
    instrument: str | None = None
    ra: float | None = None
    dec: float | None = None
    truth_label: str | None = None
    truth_values: dict[str, float] | None = None
    truth_source: str | None = None
    dataset: str | None = None
    split: str | None = None
    observed_time: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bands = list(self.bands)
        missing = [b for b in self.bands if b not in self.images]
        if missing:
            raise ValueError(f"cutout {self.id}: no image for band(s) {', '.join(missing)}")
        for band, img in self.images.items():
            if np.ndim(img) != 2:
                raise ValueError(f"cutout {self.id}: {band} image is not 2-D (shape {np.shape(img)})")

    def has_truth(self) -> bool:
        return self.truth_label is not None or bool(self.truth_values)


@lru_cache(maxsize=None)
def schema_text() -> str:
    return (SCHEMA_DIR / f"v{VERSION}.avsc").read_text()


@lru_cache(maxsize=None)
def parsed_schema() -> dict:
    return fastavro.parse_schema(json.loads(schema_text()))


def fits_bytes(image: np.ndarray, header: dict[str, Any] | None = None) -> bytes:
    """A minimal FITS file (primary HDU, big-endian float32) holding ``image``."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(image, dtype=">f4"))
    for key, value in (header or {}).items():
        hdu.header[key] = value
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def to_record(c: Cutout, compress: bool = True) -> dict[str, Any]:
    stamps = []
    for band in c.bands:
        img = np.asarray(c.images[band])
        header = {"BAND": band[:68]}
        if c.pixel_scale is not None:
            header["PIXSCALE"] = float(c.pixel_scale)
        raw = fits_bytes(img, header)
        stamps.append({"band": band, "encoding": "FITS_GZ" if compress else "FITS",
                       "height": int(img.shape[0]), "width": int(img.shape[1]),
                       # mtime=0: the same cutout always encodes to the same bytes (idempotent replays)
                       "data": gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw})
    truth = None
    if c.has_truth():
        truth = {"label": c.truth_label, "values": {k: float(v) for k, v in (c.truth_values or {}).items()},
                 "source": c.truth_source}
    return {"cutout_schema_version": VERSION, "id": str(c.id), "survey": c.survey, "instrument": c.instrument,
            "bands": list(c.bands), "pixel_scale": None if c.pixel_scale is None else float(c.pixel_scale),
            "ra": None if c.ra is None else float(c.ra), "dec": None if c.dec is None else float(c.dec),
            "stamps": stamps, "truth": truth, "dataset": c.dataset, "split": c.split,
            "observed_time": c.observed_time, "extra": {str(k): str(v) for k, v in (c.extra or {}).items()}}


def encode_cutout(c: Cutout, compress: bool = True) -> bytes:
    """One stream message: an Avro object container holding this one record (null codec: stamps are gzipped)."""
    buf = io.BytesIO()
    fastavro.writer(buf, parsed_schema(), [to_record(c, compress)], codec="null", sync_marker=_sync_marker())
    return buf.getvalue()


@lru_cache(maxsize=None)
def _sync_marker() -> bytes:
    """A fixed sync marker (fastavro draws a random one per writer): the same cutout then always encodes to the
    same message bytes, so replays are idempotent and messages of a stream share one header prefix."""
    import hashlib

    return hashlib.sha256(schema_text().encode()).digest()[:16]


def write_cutout_file(path: str | Path, cutouts: Iterable[Cutout], compress: bool = True) -> int:
    """Many cutouts in one Avro container file; returns how many were written."""
    n = 0

    def records():
        nonlocal n
        for c in cutouts:
            n += 1
            yield to_record(c, compress)

    with open(path, "wb") as fh:
        fastavro.writer(fh, parsed_schema(), records(), codec="null", sync_interval=1 << 20)
    return n


def read_cutout_file(path: str | Path) -> list[dict[str, Any]]:
    """All records of a cutout-packet file (for tests and tools; the worker reads them through FileSource)."""
    with open(path, "rb") as fh:
        return list(fastavro.reader(fh))
