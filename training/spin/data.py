"""SDSS spin data: RGB stamps (JPEG/PNG) + a CSV catalogue of lambda_R.

Mocks in that layout: `training.spin.mocks`; the replay reader: `training.spin.archive`.

Layout read by `read_spin_dir` (what sdss_CNN works from: SkyServer colour cutouts plus MaNGA kinematics):

* a directory with one catalogue ``*.csv`` (or ``--set catalogue=FILE``) and the images beside it or in an
  ``images/`` subdirectory;
* the catalogue's image column, matched case-insensitively, one of ``filename``, ``file``, ``image``, ``path``
  (a path relative to the catalogue), or an ID column, one of ``id``, ``plateifu``, ``mangaid``, ``objid``,
  ``name`` (the image is ``<id>.jpg``, ``.jpeg`` or ``.png``);
* the target column: any header that, lower-cased with non-letters removed, reads ``lambdar``
  (lambda_R, lambda_r, LambdaR), ``lambdare`` (lambda_Re, lambda_R_e) or ``spin``;
* rows with an empty or non-numeric lambda_R are skipped and counted; a missing image is an error.

Images are 8-bit RGB; SDSS colour images map i, r, g to R, G, B (Lupton et al. 2004), so channel 0 is "i".
They are kept as 0..255 floats: the model's recipe scales by 1/255, in training and serving alike.
"""
from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from schemas.errors import StampflowError

IMAGE_COLUMNS = ("filename", "file", "image", "path")
ID_COLUMNS = ("id", "plateifu", "mangaid", "objid", "name")
TARGET_KEYS = ("lambdar", "lambdare", "spin")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CATALOGUE_NAME = "lambda_R.csv"


def _norm(header: str) -> str:
    return re.sub(r"[^a-z]", "", header.lower())


@dataclass
class SpinSet:
    """Images (as loaded, each (H, W, 3) uint8, sizes may differ), targets and where they came from."""

    images: list[np.ndarray]
    targets: np.ndarray          # (N,) float64 lambda_R
    ids: list[str]
    files: list[Path]
    catalogue: Path
    columns: dict[str, str]      # {"image"|"id": header, "target": header}
    skipped: int = 0
    mock: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def find_catalogue(path: Path, catalogue: str | None = None) -> Path:
    if catalogue:
        p = Path(catalogue)
        p = p if p.is_absolute() or p.exists() else path / p
        if not p.is_file():
            raise StampflowError(f"spin catalogue {p} does not exist")
        return p
    if path.is_file() and path.suffix.lower() == ".csv":
        return path
    if not path.is_dir():
        raise StampflowError(f"spin data {path} does not exist")
    found = sorted(path.glob("*.csv"))
    if len(found) != 1:
        what = "no" if not found else "several"
        raise StampflowError(f"{what} CSV catalogue in {path}; name one with --set catalogue=FILE")
    return found[0]


def _columns(header: Sequence[str], where: Path) -> tuple[str, str, str]:
    """(kind "image"|"id", image/id header, target header) from a CSV header row."""
    lower = {h.strip().lower(): h for h in header}
    target = [h for h in header if _norm(h) in TARGET_KEYS]
    if not target:
        raise StampflowError(f"{where}: no lambda_R column (headers: {', '.join(header)}; accepted: lambda_R, "
                             "lambda_Re, spin and case/underscore variants)")
    for name in IMAGE_COLUMNS:
        if name in lower:
            return "image", lower[name], target[0]
    for name in ID_COLUMNS:
        if name in lower:
            return "id", lower[name], target[0]
    raise StampflowError(f"{where}: no image or ID column (headers: {', '.join(header)}; accepted: "
                         f"{', '.join(IMAGE_COLUMNS + ID_COLUMNS)})")


def _image_for_id(root: Path, ident: str) -> Path | None:
    for folder in (root, root / "images"):
        for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
            p = folder / f"{ident}{suffix}"
            if p.is_file():
                return p
    return None


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (grey or RGBA converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise StampflowError(f"spin image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise StampflowError(f"cannot read image {path}: {exc}") from None


def read_catalogue(path: str | Path, catalogue: str | None = None) -> tuple[list[dict[str, Any]], dict[str, str],
                                                                             Path, int]:
    """Rows {"id", "file", "lambda_R"} of the catalogue, the columns used, its path and rows skipped."""
    path = Path(path)
    cat = find_catalogue(path, catalogue)
    root = cat.parent
    with open(cat, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise StampflowError(f"{cat} is empty") from None
        kind, key_col, target_col = _columns(header, cat)
        ki, ti = header.index(key_col), header.index(target_col)
        rows, skipped = [], 0
        for line in reader:
            if not line or all(not c.strip() for c in line):
                continue
            try:
                value = float(line[ti])
            except (ValueError, IndexError):
                skipped += 1
                continue
            if not math.isfinite(value):
                skipped += 1
                continue
            key = line[ki].strip()
            if kind == "image":
                f = (root / key) if not Path(key).is_absolute() else Path(key)
                ident = Path(key).stem
            else:
                f = _image_for_id(root, key)
                ident = key
                if f is None:
                    raise StampflowError(f"{cat}: no image {key}.jpg/.jpeg/.png in {root} or {root / 'images'}")
            rows.append({"id": ident, "file": f, "lambda_R": value})
    if not rows:
        raise StampflowError(f"{cat}: no rows with a numeric {target_col}")
    return rows, {kind: key_col, "target": target_col}, cat, skipped


def read_spin_dir(path: str | Path, catalogue: str | None = None, limit: int | None = None) -> SpinSet:
    """The catalogue and its images (see module docstring)."""
    rows, cols, cat, skipped = read_catalogue(path, catalogue)
    if limit:
        rows = rows[:int(limit)]
    images = [read_rgb(r["file"]) for r in rows]
    mock = None
    desc = cat.parent / "mock_description.json"
    if desc.is_file():
        mock = json.loads(desc.read_text())
    return SpinSet(images=images, targets=np.array([r["lambda_R"] for r in rows], dtype=np.float64),
                   ids=[r["id"] for r in rows], files=[r["file"] for r in rows], catalogue=cat, columns=cols,
                   skipped=skipped, mock=mock)


def stack_resized(images: Sequence[np.ndarray], spec) -> np.ndarray:
    """(H, W, 3) uint8 images of any sizes -> (N, size, size, 3) float32 0..255 through the serving geometry."""
    from models.preprocess import prepare_images

    out = np.empty((len(images), spec.size, spec.size, 3), dtype=np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(img.shape, []).append(i)
    for idx in by_shape.values():
        out[idx] = prepare_images(np.stack([images[i] for i in idx]).astype(np.float32), spec)
    return out
