"""CANDELS and CLASH morphology data: the published label CSVs, FITS stamps named by ID, mocks, replay.

Published form (Pérez-Carrasco et al. 2019, github.com/mperezcarrasco/CLASH):

* ``CANDELS_labels.csv`` (7567 GOODS-S galaxies, IDs ``GDS_<region>_<number>``, e.g. ``GDS_deep2_10000``) and
  ``CLASH_labels.csv`` (1600 stamps, IDs ``<cluster>_<filter>_<object>``, e.g. ``macs1206_f435w_1322``: one
  galaxy labelled in one of the 16 CLASH filters, 100 per filter). Columns: ``ID, p_smooth, p_features,
  p_irregular, p_point_source, p_unclassifiable``; each row is a vote fraction and sums to 1.
* One FITS file per stamp, named ``<ID>.fits`` (``galaxies_to_predict/a611_f475w_860.fits`` holds the labelled
  ``a611_f475w_860``), in the data directory itself or in ``stamps/`` beside the CSV (the authors' layout:
  ``CANDELS/CANDELS_labels.csv`` + ``CANDELS/stamps/``). The real CLASH stamp is a single primary HDU,
  big-endian float32, 48x48, with the HST/ACS header of the mosaic (FILTER1/FILTER2, CD matrix of 0.065"/px).
  Stamps are cut at four Petrosian radii, so their size varies per object; the model resizes them whole
  (`InputSpec.geometry = "resize"`), which is why packets carry ``pixel_scale=None``.

The stamp images are not available here. `write_mock_candels` / `write_mock_clash` write stamps in exactly that
format for every real label row, drawn to match the row's vote fractions (see `draw_stamp`): training on them
exercises the whole pipeline with the real label distribution, but the morphologies are simulated and every
model trained on them is marked ``"trained_on": "mock"``.

``python -m training.morphology_data mock --labels DIR --out DIR`` writes both mock sets; see docs/morphology.md.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import math
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from models.morphology import CANDELS_BAND, CLASH_FILTERS, CLASSES, LABEL_COLUMNS, PREPROCESS
from schemas.errors import StampflowError

DATASETS = ("candels", "clash")
LABEL_FILES = {"candels": "CANDELS_labels.csv", "clash": "CLASH_labels.csv"}
STAMP_SUFFIXES = (".fits", ".fits.gz", ".fit")

# Native mosaic pixel scales (arcsec/px): HLF GOODS-S F160W at 60 mas; CLASH mosaics at 65 mas, as the CD
# matrix of the published a611 stamp says (1.80556e-5 deg).
CANDELS_PIXEL_SCALE = 0.06
CLASH_PIXEL_SCALE = 0.065

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
    """The first 2-D HDU of a stamp as native float32 (NaN kept), with its header."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None and np.ndim(hdu.data) == 2:
                    return np.asarray(hdu.data, dtype=np.float32), hdu.header.copy()
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


# --------------------------------------------------------------------------------------- arrays for training


@dataclass
class MorphologyData:
    """Model-ready arrays: x (N, size, size, C) after geometry and recipe, y (N, 5) fractions."""

    dataset: str
    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    groups: list[str]
    row_bands: list[str]
    bands: tuple[str, ...]    # the filters used: the channels when stacked, the pooled rows' filters otherwise
    stack: str                # "row" (one channel: each row's own stamp) or "channels" (galaxy stack)
    report: JoinReport
    skipped: dict[str, list[str]] = field(default_factory=dict)

    @property
    def channels(self) -> tuple[str, ...]:
        """What a model trained on this takes: the stacked filters, or the single filter of the rows."""
        return self.bands if self.stack == "channels" else self.bands[:1]

    @property
    def top(self) -> np.ndarray:
        return self.y.argmax(axis=1)

    def with_recipe(self, recipe: dict | None) -> "MorphologyData":
        """A copy whose ``x`` went through a model's recipe (``x`` here must be geometry-only)."""
        from models.preprocess import apply_recipe

        return MorphologyData(self.dataset, apply_recipe(self.x, recipe), self.y, self.ids, self.groups,
                              self.row_bands, self.bands, self.stack, self.report, self.skipped)

    def subset(self, idx: np.ndarray) -> "MorphologyData":
        idx = np.asarray(idx, dtype=int)
        return MorphologyData(self.dataset, self.x[idx], self.y[idx], [self.ids[i] for i in idx],
                              [self.groups[i] for i in idx], [self.row_bands[i] for i in idx], self.bands,
                              self.stack, self.report, self.skipped)


def prepare_stamps(stamps: Sequence[np.ndarray], spec, recipe: dict | None = PREPROCESS) -> np.ndarray:
    """Per-object stamps (H, W) or (H, W, C) of any size -> (N, size, size, C) through the serving path
    (`prepare_images` with the spec's geometry, then `apply_recipe`)."""
    from models.preprocess import apply_recipe, prepare_images

    if not stamps:
        return np.zeros((0, spec.size, spec.size, spec.n_channels), dtype=np.float32)
    out = np.empty((len(stamps), spec.size, spec.size, spec.n_channels), dtype=np.float32)
    by_shape: dict[tuple, list[int]] = {}
    for k, s in enumerate(stamps):
        by_shape.setdefault(np.shape(s), []).append(k)
    for _, rows in by_shape.items():  # one vectorised call per stamp size
        out[rows] = prepare_images(np.stack([stamps[k] for k in rows]), spec)
    return apply_recipe(out, recipe) if recipe is not None else out


def parse_filters(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``f435w,f606w`` / ``all`` / ``optical`` ... -> upper-case CLASH filter names in the given order."""
    if value is None:
        return ()
    if isinstance(value, str):
        key = value.strip().lower()
        groups = {"all": CLASH_FILTERS, "uv": CLASH_FILTERS[:4], "optical": CLASH_FILTERS[4:11],
                  "nir": CLASH_FILTERS[11:]}
        if key in groups:
            return tuple(groups[key])
        value = [v for v in key.split(",") if v.strip()]
    out = tuple(v.strip().upper() for v in value)
    bad = [v for v in out if v not in CLASH_FILTERS]
    if bad:
        raise StampflowError(f"unknown CLASH filter(s) {', '.join(bad)} (known: {', '.join(CLASH_FILTERS)})")
    if len(set(out)) != len(out):
        raise StampflowError(f"filter list {','.join(out)} repeats a filter")
    return out


def load_morphology(root: str | Path, dataset: str | None = None, *, filters: Sequence[str] | str | None = None,
                    stack: str = "row", size: int | None = None, recipe: dict | None = PREPROCESS,
                    limit: int | None = None, progress: bool = False) -> MorphologyData:
    """Join a label CSV with its stamps and prepare model inputs.

    ``stack="row"``: one channel per label row, the row's own stamp (CANDELS: F160W; CLASH: the rows of the
    listed ``filters``, all 16 when None). ``stack="channels"`` (CLASH only): every label row of the listed
    filters gets the stack of its galaxy's stamps in ``filters`` order, the input of a combined-filter model;
    rows whose galaxy lacks one of them are skipped and listed in ``skipped``.
    """
    from tqdm.auto import tqdm

    from models.base import InputSpec
    from models.morphology import INPUT_SIZE, input_spec_dict

    if stack not in ("row", "channels"):
        raise StampflowError(f"stack must be 'row' or 'channels', got '{stack}'")
    csv_path = labels_file(root, dataset)
    labels = read_labels(csv_path, dataset)
    dataset = labels.dataset
    if dataset == "candels":
        asked = [f.strip().upper() for f in (filters.split(",") if isinstance(filters, str) else filters or [])]
        if asked and asked != [CANDELS_BAND]:
            raise StampflowError("CANDELS stamps are F160W only")
        if stack == "channels":
            raise StampflowError("stacking filters as channels needs CLASH data")
        bands: tuple[str, ...] = (CANDELS_BAND,)
    else:
        bands = parse_filters(filters) or CLASH_FILTERS
    stamps = index_stamps(stamps_dir(csv_path))
    joined, report = join(labels, stamps)
    rows = [k for k in joined if row_band(labels.ids[k], dataset) in bands]
    if limit is not None:
        rows = rows[:limit]
    n_channels = len(bands) if stack == "channels" else 1
    spec = InputSpec.from_dict(input_spec_dict(bands[:n_channels], size or INPUT_SIZE))

    images: list[np.ndarray] = []
    kept: list[int] = []
    skipped: dict[str, list[str]] = {"missing_channels": [], "unreadable": [], "filter_mismatch": []}
    cache: dict[str, np.ndarray] = {}

    def load(sid: str) -> np.ndarray:
        if sid not in cache:
            img, header = read_stamp(stamps[sid])
            found = header_band(header)
            if found and found != row_band(sid, dataset):
                skipped["filter_mismatch"].append(sid)
                raise StampflowError(f"{stamps[sid]}: header filter {found}, ID says {row_band(sid, dataset)}")
            cache[sid] = img
        return cache[sid]

    for k in tqdm(rows, desc=f"load {dataset}", unit="stamp", disable=not progress, file=sys.stderr):
        sid = labels.ids[k]
        try:
            if stack == "row":
                images.append(load(sid))
            else:
                cid = parse_clash_id(sid)
                need = [cid.stamp_id(b) for b in bands]
                if any(s not in stamps for s in need):
                    skipped["missing_channels"].append(sid)
                    continue
                planes = [load(s) for s in need]
                if len({p.shape for p in planes}) != 1:
                    skipped["unreadable"].append(sid)  # one galaxy, one cut: sizes must agree across filters
                    continue
                images.append(np.stack(planes, axis=-1))
        except StampflowError:
            if sid not in skipped["filter_mismatch"]:
                skipped["unreadable"].append(sid)
            continue
        kept.append(k)
    x = prepare_stamps(images, spec, recipe)
    ids = [labels.ids[k] for k in kept]
    return MorphologyData(dataset=dataset, x=x, y=labels.fractions[kept].astype(np.float32), ids=ids,
                          groups=[galaxy_key(i, dataset) for i in ids], row_bands=[row_band(i, dataset) for i in ids],
                          bands=bands, stack=stack, report=report, skipped=skipped)


def grouped_stratified_split(top: np.ndarray, groups: Sequence[str], fractions: Sequence[float],
                             seed: int) -> list[np.ndarray]:
    """Seeded split of rows into parts where all rows of one galaxy land in the same part.

    Galaxies are stratified by the top class of their mean vote fractions (CLASH labels one galaxy in up to 16
    filters: splitting rows would put the same galaxy in training and test; the authors' code drops such
    test rows, we never create them).
    """
    from training.evaluation import stratified_split_fractions

    groups = list(groups)
    uniq = sorted(set(groups))
    pos = {g: i for i, g in enumerate(uniq)}
    gidx = np.array([pos[g] for g in groups])
    votes = np.zeros((len(uniq), int(top.max()) + 1 if len(top) else 1))
    np.add.at(votes, (gidx, np.asarray(top, dtype=int)), 1.0)
    parts = stratified_split_fractions(votes.argmax(axis=1), fractions, seed)
    return [np.sort(np.flatnonzero(np.isin(gidx, p))) for p in parts]


# ---------------------------------------------------------------------------------------------------- mocks
#
# What the mocks are: for every real label row, a stamp whose morphology is a mixture of templates weighted by
# that row's vote fractions -- a Sérsic n~3-5 spheroid (smooth), an exponential disk with two-armed log spirals
# and star-forming knots (features), a few bright off-centre clumps on an asymmetric diffuse body (irregular),
# the PSF with diffraction spikes (point source) -- convolved with the filter's PSF, on sky with correlated
# Gaussian noise; the unclassifiable fraction lowers the S/N and, with that probability, adds an artefact
# (mosaic edge, bright star, satellite trail, or nothing at all). The dominant class therefore dominates the
# picture and the minor fractions are visible as minor components, so the fractions can be regressed.
# What they are not: real galaxies. Colours, the morphology-redshift mix, lensing arcs, cluster light, real
# PSFs and drizzle artefacts are absent, so scores on mocks say the pipeline works, not how well the real
# morphologies would be recovered.

# Approximate cluster centres (deg, J2000; good to about an arcminute), used only to place mock stamps.
CLASH_CLUSTERS: dict[str, tuple[float, float]] = {
    "a209": (22.969, -13.611), "a383": (42.014, -3.529), "a611": (120.2367, 36.0566), "a1423": (179.322, 33.611),
    "a2261": (260.613, 32.133), "clj1226": (186.713, 33.547), "macs0329": (52.423, -2.196),
    "macs0416": (64.038, -24.067), "macs0429": (67.400, -2.885), "macs0647": (101.953, 70.248),
    "macs0717": (109.398, 37.745), "macs0744": (116.220, 39.457), "macs1115": (168.966, 1.499),
    "macs1149": (177.399, 22.398), "macs1206": (181.551, -8.801), "macs1311": (197.757, -3.178),
    "macs1423": (215.949, 24.078), "macs1720": (260.070, 35.607), "macs1931": (292.957, -26.576),
    "macs2129": (322.359, -7.691), "ms2137": (325.063, -23.661), "rxj1347": (206.878, -11.753),
    "rxj1532": (233.224, 30.350), "rxj2129": (322.417, 0.089), "rxj2248": (342.183, -44.531),
}
GOODS_S_CENTRE = (53.1228, -27.8050)

# Per filter: PSF FWHM (arcsec), relative depth (multiplies the galaxy's S/N: the UV images are shallower; the
# labels already say how often a galaxy was unclassifiable there, which lowers S/N further), pivot wavelength
# (Angstrom, header PHOTPLAM).
FILTER_PROPS: dict[str, tuple[float, float, float]] = {
    "F225W": (0.085, 0.45, 2372.0), "F275W": (0.085, 0.5, 2710.0), "F336W": (0.085, 0.55, 3355.0),
    "F390W": (0.085, 0.75, 3924.0), "F435W": (0.10, 0.8, 4330.0), "F475W": (0.10, 0.9, 4747.0),
    "F606W": (0.10, 1.0, 5922.0), "F625W": (0.10, 0.95, 6311.0), "F775W": (0.105, 0.9, 7693.0),
    "F814W": (0.11, 1.0, 8057.0), "F850LP": (0.115, 0.75, 9033.0), "F105W": (0.14, 0.9, 10552.0),
    "F110W": (0.145, 1.0, 11534.0), "F125W": (0.15, 0.9, 12486.0), "F140W": (0.16, 0.9, 13923.0),
    "F160W": (0.175, 1.0, 15369.0),
}

# Sky level and per-pixel noise of the published a611 F475W stamp (edge median and 1.4826 * MAD).
CLASH_SKY, CLASH_NOISE = 0.050, 0.0154
# HLF mosaics are sky-subtracted; the noise level only sets the units, the asinh recipe divides it out.
CANDELS_SKY, CANDELS_NOISE = 0.0, 0.004


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


@dataclass
class GalaxyShape:
    """Everything about one mock galaxy that does not depend on the filter."""

    size: int                 # stamp side (native pixels) = 4 Petrosian radii
    centre: tuple[float, float]
    pa: float                 # radians
    q_sph: float
    n_sph: float
    q_disk: float
    arm_pitch: float          # radians
    arm_phase: float
    n_arms: int
    knots: np.ndarray         # (k, 4): radius (Rp units), angle offset, sigma (Rp units), arm, in the disk plane
    clumps: np.ndarray        # (m, 4): x, y, sigma (Rp units), weight
    diffuse: tuple[float, float, float, float]  # x, y (Rp units), q, pa of the irregular body
    neighbour: tuple[float, float, float, float, float] | None  # x, y (Rp), r_e (Rp), n, flux ratio
    snr: float                # matched-filter S/N of the galaxy in a depth-1 filter
    sky_offset: float
    ps_offset: tuple[float, float]
    spike_angle: float
    # Light profile scale / the stamp's Petrosian radius. The published a611 stamp (100% smooth) has a
    # half-light radius of 0.19 stamp sides and a concentration 5 log(r80/r20) of 2.6 (sky from the stamp
    # edges); Sérsic n = 3-5 profiles scaled by Petrosian theory alone (r_e = Rp / 1.75) gave 0.09-0.11 and
    # 3.6: the galaxies fill their stamps more than the catalogue radius implies. Scaling every profile by a
    # median 2 (with a spread: one galaxy is all we have to calibrate on) and n = 2-4.5 gives 0.14-0.16 and ~3.1.
    extent: float = 1.0


def draw_shape(rng: np.random.Generator, fractions: np.ndarray, pixel_scale: float,
               detection_fwhm: float) -> GalaxyShape:
    """Filter-independent parameters of one galaxy whose (mean) vote fractions are ``fractions``."""
    point_like = fractions[3] >= max(fractions[:3].max(), 0.5 * fractions.max())
    if point_like:
        # The Petrosian radius of an unresolved source is about the PSF FWHM.
        rp_arcsec = detection_fwhm * rng.uniform(1.0, 1.6)
    else:
        rp_arcsec = float(np.exp(rng.normal(math.log(0.75), 0.4)))
    size = int(np.clip(round(4 * rp_arcsec / pixel_scale), 20, 160))
    k = int(rng.integers(6, 14))
    n_arms = int(rng.choice([2, 2, 2, 3]))
    knots = np.column_stack([rng.uniform(0.15, 0.85, k), rng.normal(0, 0.25, k), rng.uniform(0.04, 0.09, k),
                             rng.integers(0, n_arms, k)])
    m = int(rng.integers(3, 7))
    rad = 0.7 * np.sqrt(rng.uniform(0, 1, m))
    ang = rng.uniform(0, 2 * np.pi, m)
    clumps = np.column_stack([rad * np.cos(ang), rad * np.sin(ang), rng.uniform(0.1, 0.3, m),
                              rng.dirichlet(np.full(m, 0.8))])
    neighbour = None
    if rng.random() < 0.25:
        r, a = rng.uniform(1.3, 1.9), rng.uniform(0, 2 * np.pi)
        neighbour = (r * math.cos(a), r * math.sin(a), rng.uniform(0.1, 0.3), float(rng.choice([1.0, 2.0, 4.0])),
                     rng.uniform(0.05, 0.5))
    return GalaxyShape(
        size=size, centre=tuple(rng.uniform(-0.7, 0.7, 2)), pa=rng.uniform(0, np.pi), q_sph=rng.uniform(0.6, 1.0),
        n_sph=rng.uniform(2.0, 4.5), q_disk=rng.uniform(0.3, 1.0), arm_pitch=math.radians(rng.uniform(12, 30)),
        arm_phase=rng.uniform(0, 2 * np.pi), n_arms=n_arms, knots=knots, clumps=clumps,
        diffuse=(rng.normal(0, 0.15), rng.normal(0, 0.15), rng.uniform(0.35, 0.8), rng.uniform(0, np.pi)),
        neighbour=neighbour, snr=float(np.clip(np.exp(rng.normal(math.log(150), 0.6)), 30, 1500)),
        sky_offset=rng.normal(0, 0.1), ps_offset=tuple(rng.uniform(-0.3, 0.3, 2)),
        spike_angle=rng.uniform(0, np.pi / 2), extent=float(np.clip(np.exp(rng.normal(math.log(2.0), 0.2)), 1.2, 3)))


def _unit(img: np.ndarray) -> np.ndarray:
    s = float(img.sum())
    return img / s if s > 0 else img


def _sersic_b(n: float) -> float:
    return 2.0 * n - 1.0 / 3.0 + 4.0 / (405.0 * n) + 46.0 / (25515.0 * n * n)


def _psf_kernel(fwhm_px: float, spike_angle: float, spikes: float = 0.02) -> np.ndarray:
    """Moffat (beta = 3) core plus four faint diffraction spikes, on the (oversampled) pixel grid given."""
    half = int(math.ceil(4 * fwhm_px)) + 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    beta = 3.0
    alpha = fwhm_px / (2 * math.sqrt(2 ** (1 / beta) - 1))
    core = (1 + (x * x + y * y) / alpha ** 2) ** (-beta)
    spike = np.zeros_like(core)
    for ang in (spike_angle, spike_angle + np.pi / 2):
        u = x * math.cos(ang) + y * math.sin(ang)
        v = -x * math.sin(ang) + y * math.cos(ang)
        spike += np.exp(-0.5 * (v / (0.35 * fwhm_px)) ** 2) / (1 + (u / fwhm_px) ** 2)
    return _unit(_unit(core) * (1 - spikes) + _unit(spike) * spikes)


def draw_stamp(shape: GalaxyShape, fractions: np.ndarray, band: str, rng: np.random.Generator, *,
               pixel_scale: float, noise: float, sky: float) -> np.ndarray:
    """One mock stamp (shape.size square, float32) for a galaxy seen in ``band`` with these vote fractions."""
    from scipy import ndimage, signal

    fr = np.clip(np.asarray(fractions, dtype=np.float64), 0, 1)
    n = shape.size
    os_ = 3 if n <= 64 else 2
    rp = n / 4.0 * os_  # Petrosian radius in oversampled pixels
    gs = rp * shape.extent  # the galaxy's own scale (see GalaxyShape.extent)
    c = (np.arange(n * os_) + 0.5) - n * os_ / 2.0
    xx, yy = np.meshgrid(c - shape.centre[0] * os_, c - shape.centre[1] * os_)
    cos_pa, sin_pa = math.cos(shape.pa), math.sin(shape.pa)
    u = xx * cos_pa + yy * sin_pa
    v = -xx * sin_pa + yy * cos_pa

    # Component weights: the dominant class dominates the light (power 1.5), minor classes stay visible.
    w = fr[:4] ** 1.5
    if w.sum() <= 0:  # an all-unclassifiable row: some faint, undefined blob
        w = rng.dirichlet(np.ones(4)) * np.array([1, 1, 1, 0.2])
    w = w / w.sum()
    img = np.zeros_like(xx)
    if w[0] > 0:  # spheroid: bigger and rounder the more "smooth" it is, a bulge when minor
        re = gs * (0.22 + 0.35 * w[0])
        r = np.hypot(u, v / shape.q_sph)
        img += w[0] * _unit(np.exp(-_sersic_b(shape.n_sph) * ((r / re) ** (1 / shape.n_sph) - 1)))
    if w[1] > 0:  # disk with log-spiral arms and knots along them, contrast growing with the fraction
        rd = gs / 2.16 / 1.678  # exponential scale length for r_e = Rp / 2.16
        vd = v / shape.q_disk
        r = np.hypot(u, vd) + 1e-6
        theta = np.arctan2(vd, u)
        amp = 0.35 + 0.6 * w[1]
        arms = 1 + amp * np.cos(shape.n_arms * (theta - np.log(r / rd) / math.tan(shape.arm_pitch)) + shape.arm_phase)
        disk = np.exp(-r / rd) * arms * (1 - np.exp(-(r / (0.6 * rd)) ** 2) * 0.5)
        knots = np.zeros_like(xx)
        for kr, dphi, ks, arm in shape.knots:
            rk = kr * gs
            phi = math.log(max(rk, 1e-3) / rd) / math.tan(shape.arm_pitch) + dphi - shape.arm_phase / shape.n_arms
            phi += (2 * np.pi / shape.n_arms) * arm
            ku, kv = rk * math.cos(phi), rk * math.sin(phi) * shape.q_disk
            knots += np.exp(-0.5 * ((u - ku) ** 2 + (v - kv) ** 2) / (ks * gs) ** 2)
        img += w[1] * _unit(0.75 * _unit(disk) + (0.1 + 0.25 * w[1]) * _unit(knots))
    if w[2] > 0:  # irregular: bright clumps on an asymmetric, offset diffuse body
        dx, dy, dq, dpa = shape.diffuse
        du = (xx - dx * gs) * math.cos(dpa) + (yy - dy * gs) * math.sin(dpa)
        dv = -(xx - dx * gs) * math.sin(dpa) + (yy - dy * gs) * math.cos(dpa)
        body = np.exp(-np.hypot(du, dv / dq) / (0.4 * gs))
        clumps = np.zeros_like(xx)
        for cx, cy, cs, cw in shape.clumps:
            clumps += cw * np.exp(-0.5 * ((xx - cx * gs) ** 2 + (yy - cy * gs) ** 2) / (cs * gs) ** 2) / cs ** 2
        img += w[2] * _unit((0.6 - 0.3 * w[2]) * _unit(body) + (0.4 + 0.3 * w[2]) * _unit(clumps))
    if w[3] > 0:  # point source: all its light in one sub-pixel, the PSF does the rest
        ps = np.zeros_like(xx)
        iy = int(np.clip(n * os_ / 2 + shape.ps_offset[1] * os_, 0, n * os_ - 1))
        ix = int(np.clip(n * os_ / 2 + shape.ps_offset[0] * os_, 0, n * os_ - 1))
        ps[iy, ix] = 1.0
        img += w[3] * ps
    if shape.neighbour is not None:
        nx, ny, nre, nn, nflux = shape.neighbour
        r = np.hypot(xx - nx * rp, yy - ny * rp)
        img += nflux * _unit(np.exp(-_sersic_b(nn) * ((r / (nre * rp)) ** (1 / nn) - 1)))

    fwhm, depth, _ = FILTER_PROPS.get(band, FILTER_PROPS["F160W"])
    kernel = _psf_kernel(fwhm / pixel_scale * os_, shape.spike_angle)
    img = signal.fftconvolve(img, kernel, mode="same")
    img = img.reshape(n, os_, n, os_).sum(axis=(1, 3))

    # S/N: the galaxy's, the filter's depth, and the unclassifiable vote (the faint, noisy ones).
    p_unc = fr[4]
    snr = shape.snr * depth * max(0.01, 1.0 - 0.95 * p_unc) ** 1.5 * rng.uniform(0.8, 1.25)
    flux = snr * noise / max(float(np.sqrt(np.sum(img ** 2))), 1e-12)
    img = img * flux
    # Drizzled mosaics have pixel-correlated noise: smooth white noise with a small kernel, keep its sigma.
    kern = np.array([[0.05, 0.1, 0.05], [0.1, 0.4, 0.1], [0.05, 0.1, 0.05]])
    white = rng.normal(0.0, 1.0, (n, n))
    corr = ndimage.convolve(white, kern, mode="wrap") / math.sqrt(float((kern ** 2).sum()))
    img = img + sky * (1 + shape.sky_offset) + noise * corr

    if rng.random() < p_unc:
        img = _artefact(img, rng, n, noise, flux, pixel_scale, fwhm, sky)
    return img.astype(np.float32)


def _artefact(img: np.ndarray, rng: np.random.Generator, n: int, noise: float, flux: float, pixel_scale: float,
              fwhm: float, sky: float) -> np.ndarray:
    """What makes a stamp unclassifiable besides faintness: the mosaic edge, a bright star, a satellite trail."""
    from scipy import signal

    kind = rng.choice(["edge", "star", "trail", "empty"], p=[0.35, 0.25, 0.2, 0.2])
    yy, xx = np.mgrid[0:n, 0:n] - (n - 1) / 2.0
    if kind == "edge":  # outside the drizzled footprint the mosaic is exactly zero
        ang = rng.uniform(0, 2 * np.pi)
        d = rng.uniform(-0.1, 0.3) * n
        img = np.where(xx * math.cos(ang) + yy * math.sin(ang) > d, 0.0, img)
    elif kind == "star":
        star = np.zeros((n, n))
        r, a = rng.uniform(0.15, 0.45) * n, rng.uniform(0, 2 * np.pi)
        star[int(np.clip(n / 2 + r * math.sin(a), 0, n - 1)), int(np.clip(n / 2 + r * math.cos(a), 0, n - 1))] = 1
        star = signal.fftconvolve(star, _psf_kernel(fwhm / pixel_scale, rng.uniform(0, np.pi / 2), 0.06), "same")
        img = img + star * flux * rng.uniform(3, 20)
    elif kind == "trail":
        ang, off = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3) * n
        dist = np.abs(xx * math.sin(ang) - yy * math.cos(ang) - off)
        img = img + noise * rng.uniform(5, 30) * np.exp(-0.5 * (dist / rng.uniform(0.6, 1.5)) ** 2)
    else:  # nothing there: the detection was noise or the galaxy is below the surface-brightness limit
        img = sky + noise * rng.normal(0, 1, (n, n)) + (img - sky) * 0.1
    return img


def _header_cards(band: str, dataset: str, *, target: str, ra: float, dec: float, size: int, pixel_scale: float,
                  sky: float, exptime: float) -> list[tuple[str, Any, str]]:
    """The keywords of the published CLASH stamp's header that a mock can fill honestly (same names, types and
    order; WFC3 headers name the filter FILTER, ACS ones FILTER1/FILTER2, as in the real archives)."""
    instrument, detector = instrument_for(band)
    cards: list[tuple[str, Any, str]] = [
        ("ORIGIN", "stampflow mock", "FITS file originator"),
        ("TELESCOP", "HST", "telescope used to acquire data"),
        ("INSTRUME", instrument, "identifier for instrument used to acquire data"),
        ("EQUINOX", 2000.0, "equinox of celestial coord. system"),
        ("TARGNAME", target, "proposer's target name"),
        ("RA_TARG", ra, "right ascension of the target (deg) (J2000)"),
        ("DEC_TARG", dec, "declination of the target (deg) (J2000)"),
        ("EXPTIME", exptime, "exposure duration (seconds)--calculated"),
        ("DETECTOR", detector, "detector in use"),
    ]
    if instrument == "ACS":
        cards += [("FILTER1", band, "element selected from filter wheel 1"),
                  ("FILTER2", "CLEAR2L", "element selected from filter wheel 2")]
    else:
        cards += [("FILTER", band, "element selected from filter wheel")]
    deg = pixel_scale / 3600.0
    cards += [
        ("MDRIZSKY", sky, "Sky value computed by MultiDrizzle"),
        ("BUNIT", "ELECTRONS", "brightness units"),
        ("WCSAXES", 2, "number of World Coordinate System axes"),
        ("CRPIX1", size / 2.0, "x-coordinate of reference pixel"),
        ("CRPIX2", size / 2.0, "y-coordinate of reference pixel"),
        ("CRVAL1", ra, "first axis value at reference pixel"),
        ("CRVAL2", dec, "second axis value at reference pixel"),
        ("CTYPE1", "RA---TAN", "the coordinate type for the first axis"),
        ("CTYPE2", "DEC--TAN", "the coordinate type for the second axis"),
        ("CD1_1", -deg, "partial of first axis coordinate w.r.t. x"),
        ("CD1_2", 0.0, "partial of first axis coordinate w.r.t. y"),
        ("CD2_1", 0.0, "partial of second axis coordinate w.r.t. x"),
        ("CD2_2", deg, "partial of second axis coordinate w.r.t. y"),
        ("PHOTPLAM", FILTER_PROPS[band][2], "Pivot wavelength (Angstroms)"),
    ]
    return cards


def write_stamp_fits(path: str | Path, image: np.ndarray, cards: list[tuple[str, Any, str]],
                     history: Sequence[str] = ()) -> Path:
    """One stamp as the published ones are: a single primary HDU of big-endian float32 with the given cards."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(image, dtype=">f4"))
    del hdu.header["EXTEND"]  # the published stamps have no EXTEND card
    for key, value, comment in cards:
        hdu.header[key] = (value, comment)
    for line in history:
        hdu.header["HISTORY"] = line
    path = Path(path)
    hdu.writeto(path, overwrite=True)
    return path


@dataclass
class MockReport:
    dataset: str
    out_dir: Path
    stamps: int
    label_rows: int
    per_class: dict[str, int]


def _mock_history(dataset: str, sid: str, fractions: np.ndarray, seed: int) -> list[str]:
    top = CLASSES[int(np.argmax(fractions))]
    return [f"stampflow mock {dataset} stamp (not a real image), seed {seed}",
            f"drawn for {sid}: dominant class {top}, fractions " + ",".join(f"{f:.3f}" for f in fractions)]


def write_mock_candels(labels_csv: str | Path, out_dir: str | Path, *, seed: int = 0, limit: int | None = None,
                       progress: bool = True) -> MockReport:
    """``out_dir/CANDELS_labels.csv`` (the real file, copied verbatim) + ``out_dir/stamps/<ID>.fits`` (F160W)."""
    from tqdm.auto import tqdm

    labels = read_labels(labels_csv, "candels")
    out = Path(out_dir)
    (out / "stamps").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(labels.path, out / LABEL_FILES["candels"])
    n = len(labels) if limit is None else min(limit, len(labels))
    fwhm = FILTER_PROPS[CANDELS_BAND][0]
    counts = {c: 0 for c in CLASSES}
    for k in tqdm(range(n), desc="mock CANDELS", unit="stamp", disable=not progress, file=sys.stderr):
        sid, fr = labels.ids[k], labels.fractions[k]
        rng = np.random.default_rng(_seed(seed, "candels", sid))
        shape = draw_shape(rng, fr, CANDELS_PIXEL_SCALE, fwhm)
        img = draw_stamp(shape, fr, CANDELS_BAND, rng, pixel_scale=CANDELS_PIXEL_SCALE, noise=CANDELS_NOISE,
                         sky=CANDELS_SKY)
        ra = GOODS_S_CENTRE[0] + rng.uniform(-0.08, 0.08) / math.cos(math.radians(GOODS_S_CENTRE[1]))
        dec = GOODS_S_CENTRE[1] + rng.uniform(-0.08, 0.08)
        cards = _header_cards(CANDELS_BAND, "candels", target="GOODS-SOUTH", ra=ra, dec=dec, size=shape.size,
                              pixel_scale=CANDELS_PIXEL_SCALE, sky=CANDELS_SKY, exptime=float(rng.uniform(2e3, 8e4)))
        write_stamp_fits(out / "stamps" / f"{sid}.fits", img, cards, _mock_history("CANDELS", sid, fr, seed))
        counts[CLASSES[int(np.argmax(fr))]] += 1
    return MockReport("candels", out, n, len(labels), counts)


def write_mock_clash(labels_csv: str | Path, out_dir: str | Path, *, seed: int = 0, limit: int | None = None,
                     filters: Sequence[str] | str | None = "all", progress: bool = True) -> MockReport:
    """``out_dir/CLASH_labels.csv`` (verbatim) + ``out_dir/stamps/<cluster>_<filter>_<object>.fits``.

    Every labelled row gets its stamp, drawn from its own fractions (``limit``: the galaxies of the first
    ``limit`` rows, with all their rows). Each labelled galaxy is also drawn in the
    other ``filters`` (all 16 by default: CLASH imaged every cluster in all of them), from the mean fractions
    of the galaxy's labelled rows, so combined-filter models have every channel; those stamps have no label row,
    as in the real survey. One galaxy keeps one shape, size and position across filters; PSF, depth and noise
    follow the filter.
    """
    from tqdm.auto import tqdm

    labels = read_labels(labels_csv, "clash")
    extra = parse_filters(filters) if filters else ()
    out = Path(out_dir)
    (out / "stamps").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(labels.path, out / LABEL_FILES["clash"])
    by_galaxy: dict[str, list[int]] = {}
    for k, sid in enumerate(labels.ids):
        by_galaxy.setdefault(parse_clash_id(sid).galaxy, []).append(k)
    if limit is not None:  # the galaxies of the first `limit` rows, each with all its label rows
        first = {parse_clash_id(labels.ids[k]).galaxy for k in range(min(limit, len(labels)))}
        by_galaxy = {g: ks for g, ks in by_galaxy.items() if g in first}
    rows = [k for ks in by_galaxy.values() for k in ks]
    counts = {c: 0 for c in CLASSES}
    written = 0
    detection_fwhm = FILTER_PROPS["F814W"][0]
    for gal, ks in tqdm(by_galaxy.items(), desc="mock CLASH", unit="galaxy", disable=not progress,
                        file=sys.stderr):
        cid = parse_clash_id(labels.ids[ks[0]])
        mean_fr = labels.fractions[ks].mean(axis=0)
        grng = np.random.default_rng(_seed(seed, "clash", gal))
        shape = draw_shape(grng, mean_fr, CLASH_PIXEL_SCALE, detection_fwhm)
        centre = CLASH_CLUSTERS.get(cid.cluster, (0.0, 0.0))
        ra = centre[0] + grng.uniform(-0.025, 0.025) / math.cos(math.radians(centre[1]))
        dec = centre[1] + grng.uniform(-0.025, 0.025)
        target = ("ABELL" + cid.cluster[1:]) if cid.cluster.startswith("a") else cid.cluster.upper()
        own = {parse_clash_id(labels.ids[k]).filter: k for k in ks}
        for band in sorted(set(own) | set(extra), key=CLASH_FILTERS.index):
            sid = cid.stamp_id(band)
            fr = labels.fractions[own[band]] if band in own else mean_fr
            rng = np.random.default_rng(_seed(seed, "clash", sid))
            img = draw_stamp(shape, fr, band, rng, pixel_scale=CLASH_PIXEL_SCALE, noise=CLASH_NOISE, sky=CLASH_SKY)
            cards = _header_cards(band, "clash", target=target, ra=ra, dec=dec, size=shape.size,
                                  pixel_scale=CLASH_PIXEL_SCALE, sky=CLASH_SKY * (1 + shape.sky_offset),
                                  exptime=float(rng.uniform(2e3, 5e3)))
            history = _mock_history("CLASH", sid, fr, seed)
            if band not in own:
                history.append("no label row for this filter: drawn from the galaxy's mean labelled fractions")
            write_stamp_fits(out / "stamps" / f"{sid}.fits", img, cards, history)
            written += 1
        for k in ks:
            counts[CLASSES[int(np.argmax(labels.fractions[k]))]] += 1
    return MockReport("clash", out, written, len(rows), counts)


# --------------------------------------------------------------------------------------------------- replay


def iter_morphology_cutouts(path: Path, dataset: str | None = None, bands: str = "galaxy",
                            unlabelled: str | bool = False, **options: Any) -> Iterator[Any]:
    """Cutouts of a CANDELS or CLASH stamp set (``stampflow replay --format candels|clash``).

    One cutout per labelled stamp, with the five fractions as ``truth_values`` and the top class as
    ``truth_label``; ``unlabelled=true`` adds the stamps that have no label row (no truth). CLASH: ``bands=galaxy``
    (default) carries every filter in which the galaxy has a stamp, so combined-filter models can take it (the
    truth is the label of ``extra['label_filter']``); ``bands=row`` only the labelled filter. Stamps are
    per-object sizes cut at four Petrosian radii, so ``pixel_scale`` is None (the native mosaic scale is in
    ``extra['native_pixel_scale']``).
    """
    from schemas.cutout_packet import Cutout

    if options:
        raise StampflowError(f"unknown option(s) for the morphology reader: {', '.join(options)}")
    if bands not in ("galaxy", "row"):
        raise StampflowError(f"bands must be 'galaxy' or 'row', got '{bands}'")
    with_unlabelled = unlabelled if isinstance(unlabelled, bool) else str(unlabelled).lower() in ("1", "true", "yes")
    csv_path = labels_file(path, dataset)
    labels = read_labels(csv_path, dataset)
    dataset = labels.dataset
    stamps = index_stamps(stamps_dir(csv_path))
    joined, report = join(labels, stamps)
    if not joined and not (with_unlabelled and stamps):
        raise StampflowError(f"no stamps in {stamps_dir(csv_path)} match the {len(labels)} rows of {csv_path.name}")
    scale = CLASH_PIXEL_SCALE if dataset == "clash" else CANDELS_PIXEL_SCALE
    survey_name = "CLASH" if dataset == "clash" else "CANDELS"

    def make(sid: str, fractions: np.ndarray | None) -> Cutout:
        img, header = read_stamp(stamps[sid])
        if dataset == "clash":
            cid = parse_clash_id(sid)
            band_list = [cid.filter]
            if bands == "galaxy":
                band_list += [b for b in CLASH_FILTERS if b != cid.filter and cid.stamp_id(b) in stamps]
            images = {cid.filter: img}
            for b in band_list[1:]:
                images[b] = read_stamp(stamps[cid.stamp_id(b)])[0]
            extra = {"cluster": cid.cluster, "object_id": cid.object_id, "label_filter": cid.filter,
                     "instruments": ",".join(f"{b}:{'/'.join(instrument_for(b))}" for b in band_list)}
            row_b = cid.filter
        else:
            cand = parse_candels_id(sid)
            band_list, images = [CANDELS_BAND], {CANDELS_BAND: img}
            extra = {"field": cand.field, "region": cand.region, "object_id": cand.object_id}
            row_b = CANDELS_BAND
        found = header_band(header)
        if found and found != row_b:
            raise StampflowError(f"{stamps[sid]}: header filter {found} does not match the ID's {row_b}")
        extra.update({"file": stamps[sid].name, "native_pixel_scale": str(scale), "stamp_size": str(img.shape[0]),
                      "survey_program": survey_name})
        truth = None if fractions is None else {c: float(f) for c, f in zip(CLASSES, fractions)}
        ra = header.get("CRVAL1")
        dec = header.get("CRVAL2")
        return Cutout(id=sid, survey="HST", instrument=instrument_for(row_b)[0], bands=band_list, images=images,
                      pixel_scale=None, ra=float(ra) if ra is not None else None,
                      dec=float(dec) if dec is not None else None,
                      truth_label=None if fractions is None else CLASSES[int(np.argmax(fractions))],
                      truth_values=truth, truth_source=None if fractions is None else
                      f"{survey_name} visual classifications ({csv_path.name}, vote fractions)",
                      dataset=dataset, extra=extra)

    for k in joined:
        yield make(labels.ids[k], labels.fractions[k])
    if with_unlabelled:
        for sid in report.stamps_without_labels:
            if dataset == "clash" and not _CLASH_ID.match(sid):
                continue
            yield make(sid, None)


iter_cutouts = iter_morphology_cutouts


# ------------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.morphology_data",
                                 description="Write mock CANDELS/CLASH stamps for the real label rows.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mock", help="mock stamps in the published format, one per real label row")
    m.add_argument("--labels", required=True, type=Path,
                   help="directory with CANDELS_labels.csv and/or CLASH_labels.csv (or one CSV)")
    m.add_argument("--out", required=True, type=Path, help="writes OUT/CANDELS/ and OUT/CLASH/")
    m.add_argument("--dataset", choices=("candels", "clash", "both"), default="both")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--limit", type=int, default=None, help="only the first N label rows (quick runs)")
    m.add_argument("--filters", default="all",
                   help="CLASH: also draw every labelled galaxy in these filters (default all 16)")
    args = ap.parse_args(argv)
    try:
        todo = ("candels", "clash") if args.dataset == "both" else (args.dataset,)
        for ds in todo:
            csv_path = labels_file(args.labels, ds)
            if ds == "candels":
                rep = write_mock_candels(csv_path, args.out / "CANDELS", seed=args.seed, limit=args.limit)
            else:
                rep = write_mock_clash(csv_path, args.out / "CLASH", seed=args.seed, limit=args.limit,
                                       filters=args.filters)
            print(f"{ds}: {rep.stamps} stamps for {rep.label_rows} label rows in {rep.out_dir} "
                  f"(dominant classes {rep.per_class})")
    except StampflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
