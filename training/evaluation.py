"""Scores and splits shared by every family: classification and regression reports, seeded stratified splits,
artifact version numbering."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.registry import version_key


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: rows true class index, columns predicted class index."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (np.asarray(true, dtype=int), np.asarray(pred, dtype=int)), 1)
    return m


def balanced_accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``true``: what a balanced test set (Griese ``valid``,
    a user weighing both star and galaxy) scores, whatever the class mix of the part it is measured on."""
    true, pred = np.asarray(true), np.asarray(pred)
    return float(np.mean([(pred[true == c] == c).mean() for c in np.unique(true)]))


def classification_report(true: np.ndarray, pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy + 95% Wilson CI, labelled confusion matrix (rows true, cols predicted), per-class metrics."""
    true, pred = np.asarray(true, dtype=int), np.asarray(pred, dtype=int)
    n = int(len(true))
    correct = int((true == pred).sum())
    cm = confusion_matrix(true, pred, len(classes))
    per_class = {}
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        support, predicted = int(cm[i].sum()), int(cm[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    lo, hi = wilson_interval(correct, n)
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "accuracy_ci95": [lo, hi],
            "ci_method": "Wilson score interval, 95%",
            "confusion_matrix": {"labels": list(classes), "rows": "true", "columns": "predicted",
                                 "matrix": cm.tolist()},
            "per_class": per_class}




def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split -> (train indices, test indices), both sorted."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) per element, classes spread evenly over the folds."""
    rng = np.random.default_rng(seed + 1)
    fold = np.empty(len(labels), dtype=int)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = np.arange(len(idx)) % k
    return fold


def stratified_split_fractions(labels: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Seeded stratified split into ``len(fractions)`` parts (e.g. 0.7/0.15/0.15); each part sorted.

    Per class, part sizes are rounded from the fractions and the remainder goes to the first part, so every
    element lands in exactly one part. Continuous targets can be stratified by passing their quantile bins.
    """
    fr = np.asarray(fractions, dtype=float)
    if fr.ndim != 1 or len(fr) < 2 or (fr <= 0).any() or abs(fr.sum() - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 2 positive numbers summing to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    labels = np.asarray(labels)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        sizes = [int(round(len(idx) * f)) for f in fr[1:]]
        first = len(idx) - sum(sizes)
        if first < 0:
            sizes[-1] += first
            first = 0
        bounds = np.cumsum([first] + sizes)
        for k, chunk in enumerate(np.split(idx, bounds[:-1])):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.array([], dtype=int) for p in parts]


def quantile_bins(values: np.ndarray, bins: int = 5) -> np.ndarray:
    """Bin index per value by quantile: stratifies a regression split so every part spans the target range."""
    v = np.asarray(values, dtype=float)
    edges = np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, v, side="right")


def regression_report(true: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """MSE, RMSE, MAE and Pearson r per output and over all outputs."""
    t = np.asarray(true, dtype=float).reshape(len(true), -1)
    p = np.asarray(pred, dtype=float).reshape(len(pred), -1)
    if t.shape != p.shape:
        raise ValueError(f"true {t.shape} and predicted {p.shape} differ")

    def stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
        err = b - a
        mse = float(np.mean(err ** 2)) if err.size else float("nan")
        r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) if a.size > 1 and a.std() > 0 and b.std() > 0 \
            else float("nan")
        return {"mse": mse, "rmse": math.sqrt(mse) if mse == mse else mse, "mae": float(np.mean(np.abs(err))),
                "pearson_r": r}

    out = {"n": int(len(t)), **stats(t, p)}
    out["per_output"] = {name: stats(t[:, i], p[:, i]) for i, name in enumerate(names)}
    return out


def next_version(root: Path, name: str, default: str = "1.0.0") -> str:
    """The next minor version of ``name`` under a registry root (``default`` when there is none yet)."""
    base = Path(root) / name
    existing = [p.name for p in base.glob("*") if (p / "metadata.json").exists()] if base.is_dir() else []
    if not existing:
        return default
    latest = max(existing, key=version_key)
    parts = latest.split(".")
    if len(parts) == 3 and all(x.isdigit() for x in parts):
        return f"{parts[0]}.{int(parts[1]) + 1}.0"
    return latest + ".1"
