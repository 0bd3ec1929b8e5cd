"""Model-ready morphology arrays: label rows joined with their stamps, prepared on the serving path, and the
galaxy-grouped split."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from schemas.errors import StampflowError
from training.morphology.labels import galaxy_key, labels_file, parse_clash_id, read_labels, row_band
from training.morphology.network import CANDELS_BAND, CLASH_FILTERS, INPUT_SIZE, PREPROCESS, input_spec_dict
from training.morphology.stamps import JoinReport, header_band, index_stamps, join, read_stamp, stamps_dir


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
