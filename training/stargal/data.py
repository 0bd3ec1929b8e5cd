"""The ZTF star/galaxy training data: ``star_N.fits`` / ``galaxy_N.fits`` cutouts (label in the file name).

Training and evaluation read them here, de-duplicated by content hash (the published set holds byte-identical
copies), fitted to the model's 20x20 grid and NaN-filled exactly as served stamps are. The archive (replay)
reader in `training.stargal.archive` lists the same files in the same order.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.preprocess import fill_nan, fit_to_spec
from schemas.errors import CutoutError, StampflowError
from schemas.stamps import read_fits_file

STARGAL_RE = re.compile(r"^(star|galaxy)_(\d+)\.fits$")


def stargal_files(root: Path) -> list[tuple[str, int, Path]]:
    """(label, N, path) of every ``star_N.fits`` / ``galaxy_N.fits`` in ``root``: stars first, then by N."""
    entries = []
    for p in Path(root).iterdir():
        m = STARGAL_RE.match(p.name)
        if m and p.is_file():
            entries.append((m.group(1), int(m.group(2)), p))
    entries.sort(key=lambda e: (e[0] != "star", e[1]))
    return entries


@dataclass
class StarGalLoadInfo:
    """What `load_stargal_dir` saw: file counts, dropped duplicates, and the content hashes kept."""

    directory: str
    n_files: int
    n_duplicates: int
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (dropped file, kept file)
    conflicting_labels: int = 0
    hashes: list[str] = field(default_factory=list)                  # sha256 of each kept file, in order

    def dataset_sha256(self) -> str:
        """sha256 over the sorted per-file hashes: identifies the de-duplicated data set, order-free."""
        return hashlib.sha256("\n".join(sorted(self.hashes)).encode()).hexdigest()


def load_stargal_dir(directory: str | Path, size: int = 20, return_info: bool = False):
    """Load ``star_N.fits`` / ``galaxy_N.fits`` from ``directory``.

    Returns ``(images (N, size, size) float32, labels (N,) str 'star'/'galaxy', names list)``, or with
    ``return_info=True`` a 4-tuple whose last item is a `StarGalLoadInfo`. Files are read in (label, N) order;
    byte-identical files (sha256) are kept once (the first in that order). Images are fitted to ``size`` with
    `fit_to_spec` and NaN-filled, exactly as served stamps are. Raises `StampflowError` for a missing directory
    or one without matching files.
    """
    root = Path(directory)
    if not root.is_dir():
        raise StampflowError(f"star/galaxy data directory {root} does not exist")
    entries = stargal_files(root)
    if not entries:
        raise StampflowError(f"no star_*.fits or galaxy_*.fits files in {root}")
    seen: dict[str, tuple[str, str]] = {}
    images, labels, names, hashes = [], [], [], []
    duplicates: list[tuple[str, str]] = []
    conflicts = 0
    for label, _, path in entries:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            kept_name, kept_label = seen[digest]
            duplicates.append((path.name, kept_name))
            conflicts += kept_label != label
            continue
        seen[digest] = (path.name, label)
        try:
            img = read_fits_file(path)
        except CutoutError as exc:  # the message names the file; a user's data problem is one line
            raise StampflowError(str(exc)) from None
        images.append(fill_nan(fit_to_spec(img, size)))
        labels.append(label)
        names.append(path.name)
        hashes.append(digest)
    arr = np.stack(images).astype(np.float32, copy=False)
    labels_arr = np.array(labels)
    if not return_info:
        return arr, labels_arr, names
    info = StarGalLoadInfo(directory=str(root), n_files=len(entries), n_duplicates=len(duplicates),
                           duplicates=duplicates, conflicting_labels=conflicts, hashes=hashes)
    return arr, labels_arr, names, info
