"""DeepMerge data: the MAST HLSP files as published (names, FITS and .npy readers) and the label metadata checks.

Mock files in the same format: `training.deepmerge.mocks`; the replay reader: `training.deepmerge.archive`.

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
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from schemas.errors import StampflowError
from training.deepmerge.network import CLASSES, FILTER_SETS, HLSP_FIELDS, INPUT_SIZE, VARIANTS, filters_for

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


def mock_description(ds: DeepMergeSet) -> dict[str, Any] | None:
    """The mock generator's description when ``ds`` is one of our mock files, else None."""
    desc_file = ds.path.parent / "mock_description.json"
    if desc_file.is_file():
        desc = json.loads(desc_file.read_text())
        if ds.path.name in {Path(p).name for p in desc.get("files", {}).values()}:
            return desc
    if ds.mock:
        return {"generator": str(ds.header.get("MOCKGEN", "mock")), "note": "no mock_description.json beside it"}
    return None


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
