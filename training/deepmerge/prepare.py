"""From a read HLSP set to model inputs and parts: the serving preprocessing, and the seeded train / validation /
test split (by rows, or by Illustris subhalo), shared by training and by ``evaluate --set part=test``."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from schemas.errors import StampflowError
from training.deepmerge.hlsp import DeepMergeSet, subhalo_groups
from training.deepmerge.network import PREPROCESS, input_spec


def prepared_inputs(ds: DeepMergeSet, rows=None) -> np.ndarray:
    """Images of ``rows`` through the serving geometry and recipe: float32 (n, 75, 75, C)."""
    from models.preprocess import apply_recipe, prepare_images

    spec = input_spec(len(ds.filters))
    return apply_recipe(prepare_images(ds.nhwc(rows), spec), PREPROCESS)


def group_split(labels: np.ndarray, groups: np.ndarray, fractions, seed: int) -> list[np.ndarray]:
    """Stratified split of *groups* (all rows of a group land in one part), returned as row indices."""
    from training.evaluation import stratified_split_fractions

    uniq, first = np.unique(groups, return_index=True)
    g_labels = labels[first]
    inconsistent = [g for g in uniq if len(np.unique(labels[groups == g])) > 1]
    if inconsistent:
        raise StampflowError(f"{len(inconsistent)} subhaloes have both labels; cannot split by subhalo")
    parts = stratified_split_fractions(g_labels, fractions, seed)
    return [np.sort(np.flatnonzero(np.isin(groups, uniq[p]))) for p in parts]


def default_metadata_dir() -> Path:
    """The deepmerge-public label metadata under the data root (`stream.config.data_root`)."""
    from stream.config import data_root

    return data_root() / "deepmerge_metadata"


def split_rows(ds: DeepMergeSet, method: str, fractions, seed: int, metadata: Path | None) -> list[np.ndarray]:
    """Train / validation / test row indices by ``method`` ("stratified" rows or "subhalo" groups)."""
    from training.evaluation import stratified_split_fractions

    if method == "stratified":
        return stratified_split_fractions(ds.labels, fractions, seed)
    if method == "subhalo":
        groups = subhalo_groups(metadata or default_metadata_dir())
        if len(groups) != len(ds):
            raise StampflowError(f"--set split=subhalo needs one subhalo ID per row: the metadata has "
                                 f"{len(groups)}, {ds.path.name} has {len(ds)} rows")
        return group_split(ds.labels, groups, fractions, seed)
    raise StampflowError(f"--set split={method}: stratified or subhalo")


def split_parts(ds: DeepMergeSet, method: str, fractions: Sequence[float], seed: int, metadata: Path | None,
                max_images: int | None = None) -> list[np.ndarray]:
    """`split_rows`, then with ``max_images`` a seeded class-balanced subset of each part (quick runs and tests):
    training draws its parts here, and evaluation recomputes the held-out part from the artifact's record."""
    parts = split_rows(ds, method, fractions, seed, metadata)
    if max_images and max_images < len(ds):
        rng = np.random.default_rng(seed)
        parts = [np.sort(rng.permutation(p)[:max(2, int(round(max_images * f)))]) for p, f in zip(parts, fractions)]
    return parts
