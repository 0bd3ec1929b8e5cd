"""From a read spin set to model inputs and parts: the serving preprocessing and the seeded split stratified by
lambda_R quintiles, shared by training and by ``evaluate --set part=test``."""
from __future__ import annotations

import numpy as np

from training.spin.data import SpinSet, stack_resized
from training.spin.network import PREPROCESS, input_spec


def split_parts(targets: np.ndarray, fractions, seed: int, max_images: int | None = None) -> list[np.ndarray]:
    """Train / validation / test indices, stratified by lambda_R quintiles (optionally a seeded subset)."""
    from training.evaluation import quantile_bins, stratified_split_fractions

    bins = quantile_bins(targets, 5) if len(targets) >= 10 else np.zeros(len(targets), dtype=int)
    parts = stratified_split_fractions(bins, fractions, seed)
    if max_images and max_images < len(targets):
        rng = np.random.default_rng(seed)
        parts = [np.sort(rng.permutation(p)[:max(2, int(round(max_images * f)))]) for p, f in zip(parts, fractions)]
    return parts


def prepared_inputs(ds: SpinSet, rows) -> np.ndarray:
    """Stamps of ``rows`` through the serving geometry (resize to 80) and recipe (1/255): (n, 80, 80, 3)."""
    from models.preprocess import apply_recipe

    return apply_recipe(stack_resized([ds.images[i] for i in rows], input_spec()), PREPROCESS)
