"""CANDELS and CLASH stamps: FITS files named by ID, their index, and the join with the label rows.

One FITS file per stamp, named ``<ID>.fits`` (``galaxies_to_predict/a611_f475w_860.fits`` holds the labelled
``a611_f475w_860``), in the data directory itself or in ``stamps/`` beside the CSV (the authors' layout:
``CANDELS/CANDELS_labels.csv`` + ``CANDELS/stamps/``). The real CLASH stamp is a single primary HDU, big-endian
float32, 48x48, with the HST/ACS header of the mosaic (FILTER1/FILTER2, CD matrix of 0.065"/px). Stamps are cut
at four Petrosian radii, so their size varies per object; the model resizes them whole
(`InputSpec.geometry = "resize"`), which is why packets carry ``pixel_scale=None``.

The stamp images are not available here: `training.morphology.mock_files` writes stamps in exactly this format
for every real label row.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import CutoutError, StampflowError
from schemas.stamps import read_fits_file
from training.morphology.labels import LabelTable

STAMP_SUFFIXES = (".fits", ".fits.gz", ".fit")

# Native mosaic pixel scales (arcsec/px): HLF GOODS-S F160W at 60 mas; CLASH mosaics at 65 mas, as the CD
# matrix of the published a611 stamp says (1.80556e-5 deg).
CANDELS_PIXEL_SCALE = 0.06
CLASH_PIXEL_SCALE = 0.065


def stamps_dir(root: str | Path) -> Path:
    root = Path(root)
    if root.is_file():
        root = root.parent
    return root / "stamps" if (root / "stamps").is_dir() else root


def stamp_id_of(path: Path) -> str | None:
    name = path.name
    for suffix in STAMP_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def index_stamps(directory: str | Path) -> dict[str, Path]:
    """ID -> FITS path for every ``<ID>.fits`` (or ``.fits.gz``) in ``directory``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StampflowError(f"stamp directory {directory} does not exist")
    out: dict[str, Path] = {}
    for p in sorted(directory.iterdir()):
        sid = stamp_id_of(p)
        if sid is not None and p.is_file():
            out.setdefault(sid, p)
    return out


@dataclass
class JoinReport:
    """How label rows and stamp files matched up."""

    n_labels: int
    n_stamps: int
    n_joined: int
    labels_without_stamps: list[str] = field(default_factory=list)
    stamps_without_labels: list[str] = field(default_factory=list)

    def as_dict(self, examples: int = 10) -> dict[str, Any]:
        return {"label_rows": self.n_labels, "stamps": self.n_stamps, "joined": self.n_joined,
                "labels_without_stamps": len(self.labels_without_stamps),
                "stamps_without_labels": len(self.stamps_without_labels),
                "examples_labels_without_stamps": self.labels_without_stamps[:examples],
                "examples_stamps_without_labels": self.stamps_without_labels[:examples]}


def join(labels: LabelTable, stamps: dict[str, Path]) -> tuple[list[int], JoinReport]:
    """Label rows that have a stamp (indices into ``labels``), and what did not match either way."""
    have = [k for k, i in enumerate(labels.ids) if i in stamps]
    label_set = set(labels.ids)
    report = JoinReport(n_labels=len(labels), n_stamps=len(stamps), n_joined=len(have),
                        labels_without_stamps=[i for i in labels.ids if i not in stamps],
                        stamps_without_labels=sorted(s for s in stamps if s not in label_set))
    return have, report


def read_stamp(path: str | Path) -> tuple[np.ndarray, Any]:
    """A stamp's image (`schemas.stamps.read_fits_file`: the first 2-D HDU as native float32, NaN kept) and the
    header of that HDU (its filter is checked against the ID, its WCS gives the position)."""
    try:
        return read_fits_file(path), stamp_header(path)
    except CutoutError as exc:
        raise StampflowError(str(exc)) from None


def stamp_header(path: str | Path):
    """The header of the first image HDU with two or more axes: the one `read_fits_file` reads the image from."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) >= 2:
                    return hdu.header.copy()
    except OSError as exc:
        raise StampflowError(f"cannot read stamp {path}: {exc}") from None
    raise StampflowError(f"stamp {path} has no 2-D image HDU")


def header_band(header) -> str | None:
    """The filter of an HST header: WFC3's FILTER, or ACS's FILTER1/FILTER2 that is not a CLEAR position."""
    if header.get("FILTER"):
        return str(header["FILTER"]).strip().upper()
    for key in ("FILTER1", "FILTER2"):
        val = str(header.get(key, "")).strip().upper()
        if val and not val.startswith("CLEAR"):
            return val
    return None
