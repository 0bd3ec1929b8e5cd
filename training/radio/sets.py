"""A labelled radio data set in memory (`RadioSet`), the surveys' constants, and the small helpers every radio
reader shares (`training.radio.griese`, `.batches`, `.fits`; `.data` picks the reader)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from schemas.errors import StampflowError

GRIESE_CLASSES = ("FRI", "FRII", "Compact", "Bent")
FR_CLASSES = ("FRI", "FRII")
MIRABEST_FITS_CLASSES = ("FRI", "FRII", "Hybrid")
FIRST_PIXEL_SCALE = 1.8   # arcsec/px (FIRST survey grid; Griese, FR-DEEP FIRST, MiraBest)
NVSS_PIXEL_SCALE = 15.0   # arcsec/px (FR-DEEP NVSS, as published)
BAND = "1.4GHz"
SURVEY_PIXEL_SCALE = {"FIRST": FIRST_PIXEL_SCALE, "NVSS": NVSS_PIXEL_SCALE}
DATASETS = ("griese", "frdeep-first", "frdeep-nvss", "mirabest", "mirabest-fits", "radio-fits")


@dataclass
class RadioSet:
    """Images and labels of one radio data set (one survey, one pixel scale)."""

    images: np.ndarray            # (N, H, W), uint8 as published (float32 for FITS)
    labels: np.ndarray            # (N,) int index into ``classes``
    classes: tuple[str, ...]
    splits: np.ndarray            # (N,) str: train / valid / test
    ids: list[str]
    survey: str
    pixel_scale: float
    dataset: str
    source: str
    ra: np.ndarray | None = None  # (N,) deg, NaN where unknown; None when the data set has no coordinates
    dec: np.ndarray | None = None
    extra: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray | Sequence[int]) -> "RadioSet":
        idx = np.asarray(idx, dtype=int)
        return RadioSet(images=self.images[idx], labels=self.labels[idx], classes=self.classes,
                        splits=self.splits[idx], ids=[self.ids[i] for i in idx], survey=self.survey,
                        pixel_scale=self.pixel_scale, dataset=self.dataset, source=self.source,
                        ra=None if self.ra is None else self.ra[idx], dec=None if self.dec is None else self.dec[idx],
                        extra=[self.extra[i] for i in idx] if self.extra else [])

    def select(self, split: str | Sequence[str] | None) -> "RadioSet":
        """Keep the given split(s) (``all``/None keeps everything); unknown names raise `StampflowError`."""
        wanted = parse_splits(split)
        if wanted is None:
            return self
        have = sorted(set(self.splits.tolist()))
        missing = [s for s in wanted if s not in have]
        if missing:
            raise StampflowError(f"{self.source} has no '{', '.join(missing)}' split (it has: {', '.join(have)})")
        return self.subset(np.flatnonzero(np.isin(self.splits, wanted)))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for s in sorted(set(self.splits.tolist())):
            m = self.splits == s
            out[s] = {c: int(((self.labels == i) & m).sum()) for i, c in enumerate(self.classes)}
        return out


def parse_splits(split: str | Sequence[str] | None) -> list[str] | None:
    """``"train,valid"`` or a list -> the split names; None (keep everything) for None, empty or ``all``."""
    if split is None:
        return None
    items = [s.strip() for s in (split.split(",") if isinstance(split, str) else split) if s and s.strip()]
    if not items or "all" in items:
        return None
    return items


def existing_path(path: str | Path, what: str) -> Path:
    """``path`` as a Path, or one clear line naming ``what`` was missing."""
    p = Path(path)
    if not p.exists():
        raise StampflowError(f"{what} {p} does not exist")
    return p


def find_file(directory: Path, patterns: Sequence[str]) -> Path | None:
    """The first match of the first pattern that matches anything in ``directory`` (sorted), else None."""
    for pat in patterns:
        hits = sorted(directory.glob(pat))
        if hits:
            return hits[0]
    return None


def int_option(v: Any) -> int | None:
    """A replay reader's integer option (``--set limit=N`` arrives as text); None when unset."""
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        raise StampflowError(f"expected an integer option, got {v!r}") from None
