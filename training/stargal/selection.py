"""Model selection for the star/galaxy GP: every normalisation x feature setting, scored by stratified k-fold CV
on the training part, then one variant chosen by the one-standard-error rule.

Each variant is also refitted on the whole training part and scored on the hold-out part, for the table only
(not for choosing): the hold-out part is otherwise touched once, at the end.
"""
from __future__ import annotations

import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from models.preprocess import normalise
from models.stargal import pca_fit
from training.stargal.gp import GPClassifier
from training.stargal.options import StargalOptions

# Normalisations ordered by invariance to an additive sky level and a gain: z-score and asinh (median/MAD)
# remove both, min-max too but is outlier-driven, l2 only removes gain, raw neither.
INVARIANCE_PREFERENCE = ("zscore", "asinh", "minmax", "l2", "raw")


def feature_transform(flat_fit: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Centring mean and projection (``(dims, D)``, or ``(0, D)`` meaning identity) fitted on ``flat_fit``."""
    if dims and dims < flat_fit.shape[1]:
        mean, comps, _ = pca_fit(flat_fit, dims)
        return mean, comps
    return flat_fit.mean(axis=0), np.zeros((0, flat_fit.shape[1]))


def apply_transform(flat: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    x = flat - mean
    return x @ comps.T if comps.size else x


def features_label(dims: int) -> str:
    return f"pca{dims}" if dims else "pixels"


def make_gp(o: StargalOptions, seed: int, *, final: bool, smoothness: float | None = None) -> GPClassifier:
    """A selection fit (nu fixed at 0.5, the selection optimiser) or the final fit (nu optimised for Matern);
    ``smoothness`` fixes nu instead (the alert CV and final fit of ``--set smoothness=...``)."""
    return GPClassifier(kernel=o.kernel, nn_count=o.nn_count, batch_count=o.batch_count, init_points=o.init_points,
                        n_iter=o.n_iter, optimizer=o.final_optimizer if final else o.selection_optimizer,
                        optimise_smoothness=(final and o.optimise_smoothness and o.kernel == "matern"
                                             and smoothness is None),
                        smoothness=0.5 if smoothness is None else smoothness, seed=seed)


@dataclass
class Split:
    """Class indices, their one-hot rows and the seeded parts: hold-out rows, training rows and CV folds."""

    y: np.ndarray           # (N,) class index
    onehot: np.ndarray      # (N, K)
    train_idx: np.ndarray   # rows of the training part
    hold_idx: np.ndarray    # rows of the hold-out part
    fold_of: np.ndarray     # (len(train_idx),) fold number of each training row


def score_variant(flat: np.ndarray, dims: int, norm: str, split: Split, o: StargalOptions, seed: int,
                  tick) -> dict[str, Any]:
    """One table row: pooled CV accuracy (and its spread over folds), hold-out accuracy of a refit on the whole
    training part, fit time and peak traced memory."""
    train_idx, hold_idx, y, onehot = split.train_idx, split.hold_idx, split.y, split.onehot
    correct_per_fold, fold_times = [], []
    for f in range(o.folds):
        fit_rows, val_rows = train_idx[split.fold_of != f], train_idx[split.fold_of == f]
        mean, comps = feature_transform(flat[fit_rows], dims)
        gp = make_gp(o, seed, final=False).fit(apply_transform(flat[fit_rows], mean, comps), onehot[fit_rows])
        means, _ = gp.posterior(apply_transform(flat[val_rows], mean, comps))
        correct_per_fold.append((int((np.argmax(means, 1) == y[val_rows]).sum()), len(val_rows)))
        fold_times.append(gp.fit_seconds)
        tick()
    # Whole training part -> hold-out, with time and peak traced memory of fit + predict.
    tracemalloc.start()
    t0 = time.perf_counter()
    mean, comps = feature_transform(flat[train_idx], dims)
    gp = make_gp(o, seed, final=False).fit(apply_transform(flat[train_idx], mean, comps), onehot[train_idx])
    means, _ = gp.posterior(apply_transform(flat[hold_idx], mean, comps))
    full_seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tick()
    d_eff = comps.shape[0] if comps.size else flat.shape[1]
    accs = [c / n for c, n in correct_per_fold]
    return {
        "normalisation": norm, "features": features_label(dims), "dims": int(d_eff),
        "val_accuracy": sum(c for c, _ in correct_per_fold) / len(train_idx),
        "val_accuracy_std": float(np.std(accs)),
        "holdout_accuracy": float((np.argmax(means, 1) == y[hold_idx]).mean()),
        "fit_seconds": float(np.mean(fold_times)), "train_and_predict_seconds": full_seconds,
        "peak_memory_mb": peak / 1e6,
        # What MuyGPyS's make_train_tensors would hold: a (batch, k, k, features) float64 difference tensor.
        "muygpys_diff_tensor_mb": min(o.batch_count, len(train_idx)) * o.nn_count ** 2 * d_eff * 8 / 1e6,
        "hyperparameters": gp.hyperparameters,
    }


def select(images: np.ndarray, split: Split, o: StargalOptions, seed: int,
           progress: bool) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, np.ndarray]]:
    """Score every variant; returns (table, the chosen row (also flagged ``chosen``), flat features per
    normalisation for the final fit)."""
    from tqdm.auto import tqdm

    flat_by_norm = {n: normalise(images, n).reshape(len(images), -1).astype(np.float64) for n in o.normalisations}
    variants = [(n, d) for n in o.normalisations for d in o.pca_dims]
    bar = tqdm(total=len(variants) * (o.folds + 1), desc="stargal selection", unit="fit", disable=not progress)
    table = [score_variant(flat_by_norm[norm], dims, norm, split, o, seed, lambda: bar.update(1))
             for norm, dims in variants]
    bar.close()
    return table, choose(table, o.folds), flat_by_norm


def choose(table: list[dict[str, Any]], folds: int) -> dict[str, Any]:
    """One-standard-error rule: among variants whose CV accuracy is within one standard error of the best,
    prefer normalisations invariant to sky level and gain, then fewer dims.

    Alert science stamps have a different sky (median ~150 counts vs ~270 in the training cutouts) and band,
    and an offset-sensitive normalisation puts them far outside the training distribution (posterior variance
    10.6 vs 0.16 median).
    """
    top = max(table, key=lambda r: r["val_accuracy"])
    se = top["val_accuracy_std"] / np.sqrt(folds)
    near = [r for r in table if r["val_accuracy"] >= top["val_accuracy"] - se - 1e-12]
    best = min(near, key=lambda r: (INVARIANCE_PREFERENCE.index(r["normalisation"]), r["dims"],
                                    -r["val_accuracy"]))
    best["chosen"] = True
    return best


def format_table(rows: Sequence[dict]) -> str:
    head = f"{'normalisation':<13} {'features':<8} {'dims':>4} {'CV acc':>7} {'+-':>6} {'hold-out':>8} " \
           f"{'fit s':>6} {'peak MB':>8} {'MuyGPyS diff MB':>15}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['normalisation']:<13} {r['features']:<8} {r['dims']:>4} {r['val_accuracy']:>7.4f} "
                     f"{r['val_accuracy_std']:>6.4f} {r['holdout_accuracy']:>8.4f} {r['fit_seconds']:>6.2f} "
                     f"{r['peak_memory_mb']:>8.1f} {r['muygpys_diff_tensor_mb']:>15.1f}"
                     + ("  <- chosen" if r.get("chosen") else ""))
    return "\n".join(lines)
