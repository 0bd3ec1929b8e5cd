"""CANDELS and CLASH labels: the published vote-fraction CSVs and the stamp IDs they use.

Published form (Pérez-Carrasco et al. 2019, github.com/mperezcarrasco/CLASH): ``CANDELS_labels.csv`` (7567
GOODS-S galaxies, IDs ``GDS_<region>_<number>``, e.g. ``GDS_deep2_10000``) and ``CLASH_labels.csv`` (1600 stamps,
IDs ``<cluster>_<filter>_<object>``, e.g. ``macs1206_f435w_1322``: one galaxy labelled in one of the 16 CLASH
filters, 100 per filter). Columns: ``ID, p_smooth, p_features, p_irregular, p_point_source, p_unclassifiable``;
each row is a vote fraction and sums to 1. The stamps are read by `training.morphology.stamps`.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.errors import StampflowError
from training.morphology.network import CANDELS_BAND, CLASH_FILTERS, LABEL_COLUMNS

DATASETS = ("candels", "clash")
LABEL_FILES = {"candels": "CANDELS_labels.csv", "clash": "CLASH_labels.csv"}

# Row sums in the published CSVs are 1 to ~1e-9 (fractions written with 9 decimals).
SUM_TOLERANCE = 1e-3

_CLASH_ID = re.compile(r"^(?P<cluster>[a-z]+[0-9]+)_(?P<filter>f[0-9]{3}(?:w|lp|m|n))_(?P<object>[0-9]+)$",
                       re.IGNORECASE)
_CANDELS_ID = re.compile(r"^(?P<field>GDS)_(?P<region>[a-z]+[0-9]*)_(?P<object>[0-9]+)$", re.IGNORECASE)


# ------------------------------------------------------------------------------------------------- IDs


@dataclass(frozen=True)
class ClashID:
    """``macs1206_f435w_1322`` -> cluster ``macs1206``, filter ``F435W``, object ``1322``."""

    cluster: str
    filter: str
    object_id: str

    @property
    def galaxy(self) -> str:
        """The galaxy across filters: the same object is labelled in several filters."""
        return f"{self.cluster}_{self.object_id}"

    def stamp_id(self, band: str) -> str:
        return f"{self.cluster}_{band.lower()}_{self.object_id}"


@dataclass(frozen=True)
class CandelsID:
    """``GDS_deep2_10000`` -> field ``GDS`` (GOODS-South), region ``deep2``, object ``10000``."""

    field: str
    region: str
    object_id: str


def parse_clash_id(stamp_id: str) -> ClashID:
    m = _CLASH_ID.match(stamp_id.strip())
    if m is None:
        raise StampflowError(f"'{stamp_id}' is not a CLASH stamp ID (<cluster>_<filter>_<object>, "
                             "e.g. macs1206_f435w_1322)")
    band = m.group("filter").upper()
    if band not in CLASH_FILTERS:
        raise StampflowError(f"'{stamp_id}': {band} is not one of the 16 CLASH filters")
    return ClashID(m.group("cluster").lower(), band, m.group("object"))


def parse_candels_id(stamp_id: str) -> CandelsID:
    m = _CANDELS_ID.match(stamp_id.strip())
    if m is None:
        raise StampflowError(f"'{stamp_id}' is not a CANDELS GOODS-S ID (GDS_<region>_<number>)")
    return CandelsID(m.group("field").upper(), m.group("region").lower(), m.group("object"))


def is_clash_id(stamp_id: str) -> bool:
    """Whether ``stamp_id`` has the CLASH form (its filter not checked)."""
    return _CLASH_ID.match(stamp_id) is not None


def galaxy_key(stamp_id: str, dataset: str) -> str:
    """The object a row is about: splits keep all rows of one galaxy on the same side."""
    return parse_clash_id(stamp_id).galaxy if dataset == "clash" else stamp_id


def row_band(stamp_id: str, dataset: str) -> str:
    return parse_clash_id(stamp_id).filter if dataset == "clash" else CANDELS_BAND


def instrument_for(band: str) -> tuple[str, str]:
    """(INSTRUME, DETECTOR) of an HST filter as CLASH/CANDELS observed it."""
    band = band.upper()
    if band in ("F225W", "F275W", "F336W", "F390W"):
        return "WFC3", "UVIS"
    if band in ("F105W", "F110W", "F125W", "F140W", "F160W"):
        return "WFC3", "IR"
    return "ACS", "WFC"


# ---------------------------------------------------------------------------------------------- labels


@dataclass
class LabelTable:
    """One label CSV: IDs in file order and the (N, 5) vote fractions in `CLASSES` order."""

    dataset: str
    path: Path
    ids: list[str]
    fractions: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def top(self) -> np.ndarray:
        return self.fractions.argmax(axis=1)

    def index(self) -> dict[str, int]:
        return {i: k for k, i in enumerate(self.ids)}


def _detect_dataset(first_id: str) -> str:
    if _CANDELS_ID.match(first_id):
        return "candels"
    if _CLASH_ID.match(first_id):
        return "clash"
    raise StampflowError(f"cannot tell CANDELS from CLASH by the ID '{first_id}'")


def read_labels(path: str | Path, dataset: str | None = None) -> LabelTable:
    """Parse a published label CSV, checking the header, the IDs and that every row is a set of fractions."""
    path = Path(path)
    if not path.is_file():
        raise StampflowError(f"label file {path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        expected = ["ID", *LABEL_COLUMNS]
        if header is None or [h.strip() for h in header] != expected:
            raise StampflowError(f"{path}: header must be {','.join(expected)}, got {header}")
        ids: list[str] = []
        rows: list[list[float]] = []
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(expected):
                raise StampflowError(f"{path}:{line}: expected {len(expected)} columns, got {len(rec)}")
            try:
                vals = [float(v) for v in rec[1:]]
            except ValueError:
                raise StampflowError(f"{path}:{line}: non-numeric fraction in {rec}") from None
            ids.append(rec[0].strip())
            rows.append(vals)
    if not ids:
        raise StampflowError(f"{path}: no label rows")
    dataset = dataset or _detect_dataset(ids[0])
    if dataset not in DATASETS:
        raise StampflowError(f"unknown dataset '{dataset}' (candels or clash)")
    parse = parse_clash_id if dataset == "clash" else parse_candels_id
    for i in ids:
        parse(i)
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise StampflowError(f"{path}: duplicate ID {dup}")
    fr = np.asarray(rows, dtype=np.float64)
    bad = ~np.isfinite(fr).all(axis=1) | (fr < -1e-9).any(axis=1) | (fr > 1 + 1e-9).any(axis=1) | \
        (np.abs(fr.sum(axis=1) - 1.0) > SUM_TOLERANCE)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise StampflowError(f"{path}: row {ids[k]} is not a set of vote fractions summing to 1 ({rows[k]})")
    return LabelTable(dataset=dataset, path=path, ids=ids, fractions=np.clip(fr, 0.0, 1.0))


def labels_file(root: str | Path, dataset: str | None = None) -> Path:
    """The label CSV of a data directory (or the CSV itself)."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise StampflowError(f"morphology data {root} does not exist")
    names = [LABEL_FILES[dataset]] if dataset else list(LABEL_FILES.values())
    found = [root / n for n in names if (root / n).is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise StampflowError(f"{root} has no {' or '.join(names)}")
    raise StampflowError(f"{root} holds both CANDELS and CLASH labels: say --set dataset=candels|clash")
