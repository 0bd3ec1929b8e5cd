"""Morphology scores: RMSE of the vote fractions (all, the paper's per-stamp form, per class), top-class accuracy
with its confusion matrix, the training-mean baseline, and the same per CLASH row filter."""
from __future__ import annotations

from typing import Any

import numpy as np

from training.morphology.dataset import MorphologyData
from training.morphology.network import CLASH_FILTERS, CLASSES

PAPER_RMSE = 0.0991  # Pérez-Carrasco et al. 2019, CLASH test set


def fractions_report(y_true: np.ndarray, y_pred: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, Any]:
    """RMSE (all fractions; and the paper's mean per-stamp RMSE), per-class RMSE, top-class accuracy + matrix."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(CLASSES):
        raise ValueError(f"expected (N, {len(CLASSES)}) arrays, got {t.shape} and {p.shape}")
    err = p - t
    n = len(t)
    out: dict[str, Any] = {
        "n": int(n),
        "rmse": float(np.sqrt(np.mean(err ** 2))) if n else float("nan"),
        # Keras computed the paper's loss per stamp (sqrt of the mean over the 5 fractions), then averaged.
        "rmse_paper": float(np.mean(np.sqrt(np.mean(err ** 2, axis=1)))) if n else float("nan"),
        "mae": float(np.mean(np.abs(err))) if n else float("nan"),
        "rmse_per_class": {c: float(np.sqrt(np.mean(err[:, i] ** 2))) if n else float("nan")
                           for i, c in enumerate(CLASSES)},
    }
    from training.evaluation import classification_report

    cls = classification_report(t.argmax(axis=1), p.argmax(axis=1), CLASSES) if n else None
    if cls is not None:
        out["top_class_accuracy"] = cls["accuracy"]
        out["top_class_accuracy_ci95"] = cls["accuracy_ci95"]
        out["confusion_matrix"] = cls["confusion_matrix"]
        out["per_class"] = cls["per_class"]
    if baseline is not None and n:
        b = np.broadcast_to(np.asarray(baseline, dtype=np.float64), t.shape)
        out["rmse_predict_training_mean"] = float(np.sqrt(np.mean((b - t) ** 2)))
    return out


def short(r: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a `fractions_report` (summaries and study arms)."""
    keep = ("n", "rmse", "rmse_paper", "top_class_accuracy", "top_class_accuracy_ci95", "rmse_predict_training_mean",
            "rmse_per_class")
    return {k: r[k] for k in keep if k in r}


def per_filter(test: MorphologyData, pred: np.ndarray) -> dict[str, dict[str, Any]]:
    """RMSE and top-class accuracy of the rows labelled in each CLASH filter."""
    out = {}
    bands = np.array(test.row_bands)
    for b in CLASH_FILTERS:
        m = bands == b
        if m.any():
            r = fractions_report(test.y[m], pred[m])
            out[b] = {"n": r["n"], "rmse": r["rmse"], "top_class_accuracy": r["top_class_accuracy"]}
    return out
