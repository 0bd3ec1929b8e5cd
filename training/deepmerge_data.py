"""DeepMerge data: the MAST HLSP files as published, label metadata checks, and GalSim mocks in the same format.

Published layout (HLSP "DEEPMERGE", doi:10.17909/t9-vqk6-pc80; Ćiprijanović et al. 2020):

* FITS, one per filter set and variant, e.g.
  ``hlsp_deepmerge_hst_acs-wfc3_illustris-z2_f814w-f160w_v1_sim-pristine.fits`` (2 filters) and
  ``hlsp_deepmerge_hst-jwst_acs-wfc3-nircam_illustris-z2_f814w-f160w-f356w_v1_sim-noisy.fits`` (3 filters):
  primary HDU = images, float64, shape (N, filters, 75, 75); extension 1 = binary table ``MergerLabels`` with
  one label per row (1 = merger, 0 = non-merger). The MAST page describes "two-extension FITS files"; the
  table's column name is not stated in what we could read, so the reader takes the table's only column (or
  the one whose name contains "label"/"merger") and the mock writer names it ``MergerLabel`` (float64,
  matching the .npy labels).
* .npy copies: images in ``…_sim-<variant>-x.npy`` (N, filters, 75, 75) float64; labels in an .npy "ending
  with labels-y.npy" (MAST page), float64 0/1 as the authors' notebook writes them (``np.ones`` / ``np.zeros``).
  The reader pairs ``X-x.npy`` with ``X-y.npy`` or ``X-labels-y.npy`` if present, else with the one
  ``*labels-y.npy`` of the same filter set in the directory; the mock writer writes
  ``…_v1_sim-<variant>-x.npy`` and ``…_v1_sim-labels-y.npy``. Loaded with ``allow_pickle=False``.

Row order of the real set (deepmerge-public ``SB25_sample_production.ipynb``): 1,624 merger stamps (406 Illustris
subhaloes x 4 cameras), then four augmented copies of them (flipud, fliplr, rot90, rot180) -> 8,120 mergers,
then 7,306 non-mergers (1,827 subhaloes). ``subsamples_y.npy`` (N, 3) int64 columns are
(merger, past merger, future merger) -> post-merger 6,020, pre-merger 2,100 rows. A random row split therefore
puts flipped copies of one galaxy on both sides; `subhalo_groups` gives the subhalo ID per row so training can
split by galaxy instead (``--set split=subhalo``).

Mocks (`write_mock_hlsp`): GalSim scenes (see `MockParams`): non-mergers are one Sérsic galaxy, some with
star-forming clumps and some with an unrelated small companion 1.6-2.6" away; mergers are either pre-mergers
(two Sérsic galaxies 0.25-1.3" apart with tidal tails/bridges) or post-mergers (one disturbed remnant with
tails and/or shells). Every component has its own colour across F814W/F160W/F356W and each filter gets its
own Gaussian PSF; "noisy" adds Gaussian sky noise to the same scenes as "pristine". They exercise the formats
and the pipeline; they are NOT Illustris galaxies, and accuracy on them says nothing about the real task.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from models.deepmerge import (CLASSES, FILTER_SETS, HLSP_FIELDS, INPUT_SIZE, INSTRUMENTS, PIXEL_SCALE, VARIANTS,
                              filters_for)
from schemas.errors import StampflowError

LABEL_EXTNAME = "MergerLabels"
LABEL_COLUMN = "MergerLabel"
HLSP_VERSION = "1"
REAL_COUNTS = {"merger": 8120, "non-merger": 7306}  # the published set, from subsamples_y.npy
REAL_MERGER_FRACTION = REAL_COUNTS["merger"] / (REAL_COUNTS["merger"] + REAL_COUNTS["non-merger"])
REAL_POST_MERGER_FRACTION = 6020 / 8120
METADATA_FILES = ("subsamples_y", "subsamples_ID", "concentration", "m20", "logMstar")

_NAME_RE = re.compile(
    r"^hlsp_deepmerge_(?P<obs>hst(?:-jwst)?)_(?P<inst>acs-wfc3(?:-nircam)?)_illustris-z2_"
    r"(?P<filters>f\d{3,4}w(?:-f\d{3,4}w)*)_v(?P<version>[0-9.]+)_sim-"
    r"(?P<product>pristine|noisy|labels)(?P<suffix>\.fits|-x\.npy|-y\.npy|-labels-y\.npy)$")


# ------------------------------------------------------------------------------------------------ names


def hlsp_stem(n_filters: int) -> str:
    """``hlsp_deepmerge_<obs>_<instrument>_illustris-z2_<filters>_v1`` for a filter set."""
    obs, inst = HLSP_FIELDS[len(filters_for(n_filters))]
    filters = "-".join(f.lower() for f in filters_for(n_filters))
    return f"hlsp_deepmerge_{obs}_{inst}_illustris-z2_{filters}_v{HLSP_VERSION}"


def hlsp_filename(n_filters: int, variant: str, kind: str = "fits") -> str:
    """File name of the FITS (``kind="fits"``), image .npy (``"x"``) or label .npy (``"y"``) of a set."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}' (pristine or noisy)")
    stem = hlsp_stem(n_filters)
    if kind == "fits":
        return f"{stem}_sim-{variant}.fits"
    if kind == "x":
        return f"{stem}_sim-{variant}-x.npy"
    if kind == "y":
        return f"{stem}_sim-labels-y.npy"
    raise ValueError(f"unknown file kind '{kind}' (fits, x or y)")


def parse_hlsp_name(name: str) -> dict[str, Any] | None:
    """Fields of an HLSP file name (filters upper-cased, variant), or None for other names."""
    m = _NAME_RE.match(Path(name).name)
    if not m:
        return None
    filters = tuple(f.upper() for f in m.group("filters").split("-"))
    product = m.group("product")
    return {"filters": filters, "variant": product if product in VARIANTS else None,
            "kind": "fits" if m.group("suffix") == ".fits" else ("x" if m.group("suffix") == "-x.npy" else "y"),
            "observatory": m.group("obs"), "instrument": m.group("inst"), "version": m.group("version")}


# ------------------------------------------------------------------------------------------------ reading


@dataclass
class DeepMergeSet:
    """One HLSP file (or .npy pair): images as stored (N, C, 75, 75) (possibly memory-mapped) and labels."""

    images: np.ndarray
    labels: np.ndarray          # (N,) int8: 1 = merger, 0 = non-merger
    filters: tuple[str, ...]
    variant: str | None
    path: Path
    fmt: str                    # "fits" or "npy"
    label_path: Path | None = None
    mock: bool = False
    header: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def class_names(self) -> list[str]:
        return [CLASSES[int(v)] for v in self.labels]

    def nhwc(self, rows: np.ndarray | slice | None = None, chunk: int = 1024) -> np.ndarray:
        """Images as float32 (n, 75, 75, C), the layout the model takes; read in chunks from memory maps."""
        idx = np.arange(len(self))[rows] if rows is not None else np.arange(len(self))
        out = np.empty((len(idx), *self.images.shape[2:], self.images.shape[1]), dtype=np.float32)
        for s in range(0, len(idx), chunk):
            part = np.asarray(self.images[idx[s:s + chunk]], dtype=np.float32)
            out[s:s + chunk] = np.moveaxis(part, 1, -1)
        return out


def labels_to_int(raw: np.ndarray, where: str) -> np.ndarray:
    """0/1 labels of any numeric or boolean dtype -> int8; anything else is a clear error."""
    arr = np.asarray(raw)
    if arr.dtype.names:  # a one-column record array
        arr = arr[arr.dtype.names[0]]
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise StampflowError(f"{where}: labels have shape {arr.shape}, expected one label per image")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not np.issubdtype(arr.dtype, np.number):
        raise StampflowError(f"{where}: labels are {arr.dtype}, expected numbers 0/1")
    vals = arr.astype(np.float64)
    ok = np.isfinite(vals) & ((np.abs(vals) < 1e-6) | (np.abs(vals - 1) < 1e-6))
    if not ok.all():
        bad = vals[~ok][:5]
        raise StampflowError(f"{where}: labels must be 0 (non-merger) or 1 (merger); found {bad.tolist()}")
    return np.rint(vals).astype(np.int8)


def _check_images(images: np.ndarray, where: str) -> tuple[str, ...]:
    if images.ndim != 4 or images.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        raise StampflowError(f"{where}: images have shape {images.shape}, expected (N, filters, 75, 75)")
    if images.shape[1] not in FILTER_SETS:
        raise StampflowError(f"{where}: {images.shape[1]} filters per image; DeepMerge sets have 2 or 3")
    return FILTER_SETS[images.shape[1]]


def _label_column(table, where: str) -> np.ndarray:
    names = list(table.columns.names)
    if len(names) == 1:
        return np.asarray(table.data[names[0]])
    hits = [n for n in names if "label" in n.lower() or "merger" in n.lower()]
    if len(hits) != 1:
        raise StampflowError(f"{where}: cannot tell the label column among {names}")
    return np.asarray(table.data[hits[0]])


def read_hlsp_fits(path: str | Path, memmap: bool = True) -> DeepMergeSet:
    """An HLSP FITS file: primary HDU images (N, C, 75, 75), labels from the ``MergerLabels`` table."""
    from astropy.io import fits

    path = Path(path)
    try:
        hdul = fits.open(path, memmap=memmap, lazy_load_hdus=False)
    except FileNotFoundError:
        raise StampflowError(f"DeepMerge file {path} does not exist") from None
    except OSError as exc:
        raise StampflowError(f"cannot read DeepMerge FITS {path}: {exc}") from None
    images = hdul[0].data
    if images is None:
        raise StampflowError(f"{path}: the primary HDU holds no images")
    filters = _check_images(images, str(path))
    tables = [h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)]
    named = [h for h in tables if h.name.upper() == LABEL_EXTNAME.upper()]
    table = named[0] if named else (tables[0] if tables else None)
    if table is None:
        raise StampflowError(f"{path}: no binary-table extension with the merger labels")
    labels = labels_to_int(_label_column(table, str(path)), str(path))
    if len(labels) != images.shape[0]:
        raise StampflowError(f"{path}: {images.shape[0]} images but {len(labels)} labels")
    parsed = parse_hlsp_name(path.name) or {}
    header = {k: hdul[0].header[k] for k in ("MOCK", "MOCKGEN", "VARIANT") if k in hdul[0].header}
    variant = parsed.get("variant") or header.get("VARIANT")
    return DeepMergeSet(images=images, labels=labels, filters=filters, variant=variant, path=path, fmt="fits",
                        label_path=path, mock=bool(header.get("MOCK", False)), header=header)


def find_label_file(x_path: Path) -> Path:
    """The label .npy that goes with an image ``…-x.npy`` (see module docstring for the rules)."""
    base = x_path.name[: -len("-x.npy")]
    for cand in (f"{base}-y.npy", f"{base}-labels-y.npy"):
        if (x_path.parent / cand).is_file():
            return x_path.parent / cand
    parsed = parse_hlsp_name(x_path.name)
    pool = sorted(x_path.parent.glob("*labels-y.npy"))
    if parsed:
        pool = [p for p in pool if (parse_hlsp_name(p.name) or {}).get("filters") == parsed["filters"]] or pool
    if len(pool) == 1:
        return pool[0]
    if not pool:
        raise StampflowError(f"no label file for {x_path} (looked for {base}-y.npy and *labels-y.npy)")
    raise StampflowError(f"several label files could go with {x_path}: {', '.join(p.name for p in pool)}")


def read_hlsp_npy(x_path: str | Path, y_path: str | Path | None = None, mmap: bool = True) -> DeepMergeSet:
    """An HLSP ``-x.npy`` image array (memory-mapped) and its label ``.npy``; never unpickles."""
    x_path = Path(x_path)
    if not x_path.is_file():
        raise StampflowError(f"DeepMerge file {x_path} does not exist")
    y_path = Path(y_path) if y_path is not None else find_label_file(x_path)
    try:
        images = np.load(x_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        raw = np.load(y_path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise StampflowError(f"cannot read {x_path} / {y_path} as plain .npy arrays: {exc}") from None
    filters = _check_images(images, str(x_path))
    labels = labels_to_int(raw, str(y_path))
    if len(labels) != images.shape[0]:
        raise StampflowError(f"{x_path}: {images.shape[0]} images but {y_path.name} has {len(labels)} labels")
    parsed = parse_hlsp_name(x_path.name) or {}
    return DeepMergeSet(images=images, labels=labels, filters=filters, variant=parsed.get("variant"), path=x_path,
                        fmt="npy", label_path=y_path)


def resolve_hlsp_path(path: str | Path, variant: str | None = None, n_filters: int | None = None,
                      fmt: str | None = None) -> Path:
    """A file as given, or the one HLSP file in a directory matching variant / filter count / format."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise StampflowError(f"DeepMerge data {path} does not exist")
    cands = []
    for p in sorted(path.iterdir()):
        info = parse_hlsp_name(p.name)
        if not info or info["kind"] == "y":
            continue
        if variant and info["variant"] != variant:
            continue
        if n_filters and len(info["filters"]) != int(n_filters):
            continue
        if fmt and info["kind"] != ("fits" if fmt == "fits" else "x"):
            continue
        cands.append((info["kind"] != "fits", p))  # FITS first: it carries its own labels
    if not cands:
        raise StampflowError(f"no DeepMerge HLSP file in {path} (hlsp_deepmerge_*.fits or *-x.npy)")
    cands.sort()
    best = [p for k, p in cands if k == cands[0][0]]
    if len(best) > 1:
        raise StampflowError(f"several DeepMerge files in {path} ({', '.join(p.name for p in best)}); "
                             "choose with --set variant=pristine|noisy / filters=2|3 or give the file")
    return best[0]


def read_hlsp(path: str | Path, variant: str | None = None, n_filters: int | None = None,
              fmt: str | None = None) -> DeepMergeSet:
    """FITS or .npy pair (dispatch on the name); a directory picks its one matching file."""
    p = resolve_hlsp_path(path, variant, n_filters, fmt)
    if p.name.endswith(".fits") or p.name.endswith(".fits.gz"):
        return read_hlsp_fits(p)
    if p.name.endswith("-x.npy"):
        return read_hlsp_npy(p)
    raise StampflowError(f"{p} is neither an HLSP .fits nor an image '-x.npy' file")


# ------------------------------------------------------------------------------------- label metadata


def load_label_metadata(meta_dir: str | Path) -> dict[str, np.ndarray]:
    """The deepmerge-public label metadata: subsamples_y (N, 3), subsamples_ID, concentration, m20, logMstar."""
    meta_dir = Path(meta_dir)
    out = {}
    for name in METADATA_FILES:
        f = meta_dir / f"{name}.npy"
        if not f.is_file():
            raise StampflowError(f"DeepMerge metadata {f} does not exist")
        out[name] = np.load(f, allow_pickle=False)
    n = {k: len(v) for k, v in out.items()}
    if len(set(n.values())) != 1:
        raise StampflowError(f"DeepMerge metadata arrays differ in length: {n}")
    if out["subsamples_y"].ndim != 2 or out["subsamples_y"].shape[1] != 3:
        raise StampflowError(f"subsamples_y has shape {out['subsamples_y'].shape}, expected (N, 3)")
    return out


def real_label_vector(meta_dir: str | Path) -> np.ndarray:
    """The published merger labels (float64 0/1, HLSP row order) from subsamples_y[:, 0]."""
    return load_label_metadata(meta_dir)["subsamples_y"][:, 0].astype(np.float64)


def merger_stages(meta_dir: str | Path) -> np.ndarray:
    """Per row: "post" (past merger), "pre" (future merger) or "none" (non-merger), from subsamples_y."""
    y = load_label_metadata(meta_dir)["subsamples_y"]
    return np.where(y[:, 0] == 0, "none", np.where(y[:, 1] == 1, "post", "pre"))


def subhalo_groups(meta_dir: str | Path) -> np.ndarray:
    """Illustris subhalo ID per row: all cameras and flipped/rotated copies of one galaxy share it."""
    return load_label_metadata(meta_dir)["subsamples_ID"].astype(np.int64)


def check_labels_against_metadata(labels: np.ndarray, meta_dir: str | Path,
                                  rows: Sequence[int] | slice | None = None) -> dict[str, Any]:
    """Compare loaded labels with subsamples_y[:, 0] (rows: which metadata rows the file holds)."""
    meta = load_label_metadata(meta_dir)["subsamples_y"][:, 0]
    ref = meta[rows] if rows is not None else meta
    labels = np.asarray(labels)
    if len(ref) != len(labels):
        return {"comparable": False, "n_file": int(len(labels)), "n_metadata": int(len(ref))}
    mism = np.flatnonzero(ref.astype(int) != labels.astype(int))
    return {"comparable": True, "n": int(len(labels)), "agree": bool(len(mism) == 0),
            "mismatches": int(len(mism)), "first_mismatch": int(mism[0]) if len(mism) else None,
            "merger_fraction_file": float(labels.mean()) if len(labels) else None,
            "merger_fraction_metadata": float(ref.mean()) if len(ref) else None}


# ------------------------------------------------------------------------------------------------ mocks


@dataclass(frozen=True)
class MockParams:
    """GalSim mock parameters (lengths in arcsec, fluxes in arbitrary counts; recorded in artifacts).

    Sizes and PSFs follow z~2 HST/JWST imaging loosely: half-light radii of 1-4 kpc are 0.12-0.45" at z=2;
    PSF FWHM ~0.09" (ACS F814W), ~0.18" (WFC3/IR F160W), ~0.14" (NIRCam F356W). At z=2 F814W samples the
    rest-frame UV, so it is fainter and star-forming clumps and tails are relatively bluer (brighter there).
    """

    size: int = INPUT_SIZE
    pixel_scale: float = PIXEL_SCALE
    psf_fwhm: tuple[tuple[str, float], ...] = (("F814W", 0.09), ("F160W", 0.18), ("F356W", 0.14))
    colour: tuple[tuple[str, float], ...] = (("F814W", 0.45), ("F160W", 1.0), ("F356W", 1.5))  # old stars
    young_colour: tuple[tuple[str, float], ...] = (("F814W", 1.1), ("F160W", 1.0), ("F356W", 0.8))  # clumps
    colour_scatter_dex: float = 0.12
    noise_sigma: tuple[tuple[str, float], ...] = (("F814W", 0.02), ("F160W", 0.04), ("F356W", 0.03))
    flux_range: tuple[float, float] = (30.0, 300.0)          # F160W total flux of the primary, log-uniform
    hlr_range: tuple[float, float] = (0.12, 0.45)            # log-uniform
    sersic_n_range: tuple[float, float] = (0.7, 4.0)
    max_ellipticity: float = 0.6
    centre_jitter: float = 0.05
    # non-mergers
    companion_probability: float = 0.35                       # unrelated small galaxy far away
    companion_distance: tuple[float, float] = (1.6, 2.6)
    companion_flux_ratio: tuple[float, float] = (0.05, 0.2)
    clump_probability: float = 0.35                           # 1-3 star-forming clumps in the disc
    clump_flux_fraction: tuple[float, float] = (0.03, 0.12)
    # mergers
    post_merger_fraction: float = REAL_POST_MERGER_FRACTION   # used when no stage metadata is given
    pair_separation: tuple[float, float] = (0.25, 1.3)
    pair_flux_ratio: tuple[float, float] = (0.25, 1.0)
    tail_flux_fraction: tuple[float, float] = (0.03, 0.12)
    shell_probability: float = 0.5                            # post-mergers
    asymmetry_flux_fraction: tuple[float, float] = (0.05, 0.2)  # post-merger off-centre second nucleus/plume

    def lookup(self, table: tuple[tuple[str, float], ...], band: str) -> float:
        return dict(table)[band]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("psf_fwhm", "colour", "young_colour", "noise_sigma"):
            d[k] = dict(d[k])
        return d


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _colour(rng: np.random.Generator, base: tuple[tuple[str, float], ...], scatter: float) -> dict[str, float]:
    return {b: float(v * 10 ** rng.normal(0, scatter)) for b, v in base}


def _galaxy(rng: np.random.Generator, p: MockParams, flux: float, offset=(0.0, 0.0), hlr_scale: float = 1.0,
            n: float | None = None) -> dict[str, Any]:
    # n on a 0.05 grid: GalSim caches its Sérsic tables per n, which makes drawing thousands ~3x faster
    n = n if n is not None else rng.uniform(*p.sersic_n_range)
    return {"kind": "sersic", "n": round(float(n) * 20) / 20,
            "hlr": _loguniform(rng, *p.hlr_range) * hlr_scale, "flux": float(flux),
            "ellipticity": float(rng.uniform(0, p.max_ellipticity)), "pa": float(rng.uniform(0, 180)),
            "offset": [float(offset[0]), float(offset[1])],
            "colour": _colour(rng, p.colour, p.colour_scatter_dex)}


def _tail(rng: np.random.Generator, p: MockParams, flux: float, start, direction: float) -> dict[str, Any]:
    return {"kind": "tail", "start": [float(start[0]), float(start[1])], "direction": float(direction),
            "length": float(rng.uniform(0.8, 2.0)), "curvature": float(rng.choice([-1, 1]) * rng.uniform(30, 110)),
            "width": float(rng.uniform(0.06, 0.14)), "knots": 12, "fade": float(rng.uniform(0.3, 0.8)),
            "flux": float(flux), "colour": _colour(rng, p.young_colour, p.colour_scatter_dex)}


def mock_scene(rng: np.random.Generator, merger: bool, stage: str | None = None,
               p: MockParams = MockParams()) -> dict[str, Any]:
    """One random scene (JSON-able): a non-merger, a pre-merger or a post-merger (``stage`` pre/post/None)."""
    flux = _loguniform(rng, *p.flux_range)
    jitter = rng.normal(0, p.centre_jitter, 2)
    comps: list[dict[str, Any]] = []
    if not merger:
        main = _galaxy(rng, p, flux, jitter)
        comps.append(main)
        if rng.random() < p.clump_probability:
            for _ in range(int(rng.integers(1, 4))):
                r = rng.uniform(0.3, 1.2) * main["hlr"]
                a = rng.uniform(0, 2 * np.pi)
                comps.append({"kind": "sersic", "n": 0.5, "hlr": float(rng.uniform(0.03, 0.06)),
                              "flux": float(flux * rng.uniform(*p.clump_flux_fraction)), "ellipticity": 0.0,
                              "pa": 0.0, "offset": [float(jitter[0] + r * np.cos(a)), float(jitter[1] + r * np.sin(a))],
                              "colour": _colour(rng, p.young_colour, p.colour_scatter_dex)})
        if rng.random() < p.companion_probability:
            d, a = rng.uniform(*p.companion_distance), rng.uniform(0, 2 * np.pi)
            comps.append(_galaxy(rng, p, flux * rng.uniform(*p.companion_flux_ratio), (d * np.cos(a), d * np.sin(a)),
                                 hlr_scale=0.6))
        return {"label": 0, "stage": "none", "components": comps}
    stage = stage or ("post" if rng.random() < p.post_merger_fraction else "pre")
    if stage == "pre":
        sep, a = rng.uniform(*p.pair_separation), rng.uniform(0, 2 * np.pi)
        ratio = rng.uniform(*p.pair_flux_ratio)
        comps.append(_galaxy(rng, p, flux, jitter))
        other = (jitter[0] + sep * np.cos(a), jitter[1] + sep * np.sin(a))
        comps.append(_galaxy(rng, p, flux * ratio, other, hlr_scale=0.8))
        # tidal tails leave both galaxies roughly away from each other, plus sometimes a faint bridge
        for start, direction in ((jitter, np.degrees(a) + 180 + rng.normal(0, 40)),
                                 (other, np.degrees(a) + rng.normal(0, 40))):
            if rng.random() < 0.8:
                comps.append(_tail(rng, p, flux * rng.uniform(*p.tail_flux_fraction), start, direction))
        if rng.random() < 0.4:
            comps.append({**_tail(rng, p, flux * rng.uniform(0.02, 0.05), jitter, np.degrees(a)),
                          "length": float(sep), "curvature": float(rng.normal(0, 15))})
    else:
        comps.append(_galaxy(rng, p, flux, jitter, n=rng.uniform(1.5, 4.0)))
        if rng.random() < 0.6:  # an off-centre second nucleus or plume: the remnant is asymmetric
            r, a = rng.uniform(0.1, 0.35), rng.uniform(0, 2 * np.pi)
            comps.append(_galaxy(rng, p, flux * rng.uniform(*p.asymmetry_flux_fraction),
                                 (jitter[0] + r * np.cos(a), jitter[1] + r * np.sin(a)), hlr_scale=0.5))
        for _ in range(int(rng.integers(1, 3))):
            comps.append(_tail(rng, p, flux * rng.uniform(*p.tail_flux_fraction), jitter, rng.uniform(0, 360)))
        if rng.random() < p.shell_probability:
            base = rng.uniform(0, 360)
            for k in range(int(rng.integers(1, 3))):
                comps.append({"kind": "shell", "radius": float(rng.uniform(0.6, 1.6)),
                              "angle": float(base + 180 * k + rng.normal(0, 20)),
                              "opening": float(rng.uniform(60, 140)), "width": float(rng.uniform(0.05, 0.1)),
                              "centre": [float(jitter[0]), float(jitter[1])],
                              "flux": float(flux * rng.uniform(0.02, 0.06)),
                              "colour": _colour(rng, p.colour, p.colour_scatter_dex)})
    return {"label": 1, "stage": stage, "components": comps}


def _component_profile(c: dict[str, Any], band: str):
    from training import mock_galaxies as mg

    f = c["flux"] * c["colour"][band]
    if c["kind"] == "sersic":
        return mg.sersic(c["n"], c["hlr"], f, c["ellipticity"], c["pa"], tuple(c["offset"]))
    if c["kind"] == "tail":
        return mg.tidal_tail(tuple(c["start"]), c["direction"], c["length"], c["curvature"], f, width=c["width"],
                             knots=c["knots"], fade=c["fade"])
    if c["kind"] == "shell":
        return mg.shell(c["radius"], c["angle"], c["opening"], f, width=c["width"], centre=tuple(c["centre"]))
    raise ValueError(f"unknown component kind {c['kind']!r}")


def render_scene(scene: dict[str, Any], filters: Sequence[str], p: MockParams = MockParams(),
                 noise_rng: np.random.Generator | None = None) -> np.ndarray:
    """A scene in each filter (its own PSF) -> float64 (C, size, size); Gaussian sky noise if ``noise_rng``."""
    import galsim

    from training import mock_galaxies as mg

    out = np.empty((len(filters), p.size, p.size), dtype=np.float64)
    for i, band in enumerate(filters):
        prof = galsim.Add([_component_profile(c, band) for c in scene["components"]], gsparams=mg.GSPARAMS)
        img = mg.draw(prof, p.size, p.pixel_scale, mg.make_psf(p.lookup(p.psf_fwhm, band)))
        if noise_rng is not None:
            img = mg.add_noise(img, noise_rng, sigma=p.lookup(p.noise_sigma, band))
        out[i] = img
    return out


def mock_labels(n: int, rng: np.random.Generator, merger_fraction: float = REAL_MERGER_FRACTION) -> np.ndarray:
    """``n`` labels (float64 0/1) with the real class balance, mergers first as in the HLSP row order."""
    n_merger = int(round(n * merger_fraction))
    return np.concatenate([np.ones(n_merger), np.zeros(n - n_merger)]).astype(np.float64)


def write_mock_hlsp(out_dir: str | Path, labels: np.ndarray | None = None, n: int | None = None,
                    n_filters: int = 2, variants: Sequence[str] = VARIANTS, formats: Sequence[str] = ("fits", "npy"),
                    seed: int = 0, params: MockParams = MockParams(), stages: Sequence[str] | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Write mock HLSP files (same names, HDU layout, column and dtypes as published) into ``out_dir``.

    ``labels``: the label vector to write (e.g. the real one from `real_label_vector`, or a slice of it); else
    ``n`` labels with the real class balance. ``stages`` ("pre"/"post"/"none" per row, e.g. `merger_stages`)
    picks the merger kind per row. Every variant renders the same scenes ("noisy" = "pristine" + sky noise,
    as in the HLSP). Returns the paths written and a description of the mock (parameters, counts, seed).
    """
    from tqdm.auto import tqdm

    from training import mock_galaxies as mg

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if labels is None:
        if not n or n < 2:
            raise StampflowError("give the labels to write or a number of mock images n >= 2")
        labels = mock_labels(int(n), rng)
    labels = np.asarray(labels, dtype=np.float64)
    y = labels_to_int(labels, "mock labels")
    if stages is not None and len(stages) != len(y):
        raise StampflowError(f"{len(stages)} merger stages for {len(y)} labels")
    for v in variants:
        if v not in VARIANTS:
            raise StampflowError(f"unknown variant '{v}' (pristine or noisy)")
    filters = filters_for(n_filters)
    scenes = [mock_scene(rng, bool(y[i]), None if stages is None or stages[i] == "none" else str(stages[i]), params)
              for i in range(len(y))]
    cubes = {v: np.empty((len(y), len(filters), params.size, params.size), dtype=np.float64) for v in variants}
    noise_rng = np.random.default_rng(rng.integers(2**63))
    for i in tqdm(range(len(y)), desc="deepmerge mocks", unit="img", disable=not progress):
        clean = render_scene(scenes[i], filters, params)
        for v in variants:
            if v == "pristine":
                cubes[v][i] = clean
            else:
                for j, band in enumerate(filters):
                    cubes[v][i, j] = mg.add_noise(clean[j], noise_rng, sigma=params.lookup(params.noise_sigma, band))
    written: dict[str, str] = {}
    for v in variants:
        if "fits" in formats:
            written[f"{v}.fits"] = str(_write_fits(out_dir / hlsp_filename(n_filters, v, "fits"), cubes[v], labels, v))
        if "npy" in formats:
            xp = out_dir / hlsp_filename(n_filters, v, "x")
            np.save(xp, cubes[v], allow_pickle=False)
            written[f"{v}-x.npy"] = str(xp)
    if "npy" in formats:
        yp = out_dir / hlsp_filename(n_filters, variants[0], "y")
        np.save(yp, labels, allow_pickle=False)
        written["labels-y.npy"] = str(yp)
    stage_arr = np.array([s["stage"] for s in scenes])
    description = {
        "generator": "training.deepmerge_data.write_mock_hlsp (GalSim)", "seed": int(seed), "n": int(len(y)),
        "filters": list(filters), "variants": list(variants), "formats": list(formats),
        "counts": {"merger": int(y.sum()), "non-merger": int(len(y) - y.sum()),
                   "pre-merger": int((stage_arr == "pre").sum()), "post-merger": int((stage_arr == "post").sum())},
        "params": params.as_dict(), "files": written,
    }
    (out_dir / "mock_description.json").write_text(json.dumps(description, indent=2))
    return description


def _write_fits(path: Path, images: np.ndarray, labels: np.ndarray, variant: str) -> Path:
    from astropy.io import fits

    primary = fits.PrimaryHDU(np.asarray(images, dtype=np.float64))
    primary.header["MOCK"] = (True, "stampflow mock, not the MAST HLSP images")
    primary.header["MOCKGEN"] = ("training.deepmerge_data", "GalSim mocks")
    primary.header["VARIANT"] = (variant, "pristine or noisy")
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name=LABEL_COLUMN, format="D", array=np.asarray(labels, dtype=np.float64))], name=LABEL_EXTNAME)
    table.header["EXTNAME"] = LABEL_EXTNAME  # astropy upper-cases ``name=``; keep the published spelling
    fits.HDUList([primary, table]).writeto(path, overwrite=True)
    return path


# ---------------------------------------------------------------------------------------------- replay


def iter_deepmerge_cutouts(path: str | Path, **options: Any) -> Iterator:
    """Yield one `Cutout` per HLSP row (survey HST, bands = the filters, truth merger / non-merger).

    Options (strings from the CLI are accepted): ``variant`` and ``filters`` (2|3) to pick a file in a
    directory, ``start`` and ``limit`` to replay part of a file, ``split`` to tag the cutouts.
    """
    from schemas.cutout_packet import Cutout

    n_filters = int(options["filters"]) if options.get("filters") else None
    data = read_hlsp(path, variant=options.get("variant"), n_filters=n_filters, fmt=options.get("format"))
    start = int(options.get("start", 0) or 0)
    limit = options.get("limit")
    stop = len(data) if limit in (None, "") else min(len(data), start + int(limit))
    variant = data.variant or "unknown"
    dataset = f"deepmerge-{variant}" + ("-mock" if data.mock else "")
    for s in range(start, stop, 512):
        block = np.asarray(data.images[s:min(stop, s + 512)], dtype=np.float32)
        for k, cube in enumerate(block):
            i = s + k
            yield Cutout(id=f"{data.path.name}:{i}", survey="HST", instrument=INSTRUMENTS[len(data.filters)],
                         bands=list(data.filters), images={b: np.ascontiguousarray(cube[j])
                                                           for j, b in enumerate(data.filters)},
                         pixel_scale=PIXEL_SCALE, truth_label=CLASSES[int(data.labels[i])],
                         truth_source="DeepMerge HLSP MergerLabels" + (" (mock)" if data.mock else ""),
                         dataset=dataset, split=options.get("split"),
                         extra={"row": str(i), "variant": variant, "file": data.path.name})


iter_cutouts = iter_deepmerge_cutouts
