"""DeepMerge scores: ROC AUC and curve, the binary report (accuracy with a Wilson interval, merger-class
precision/recall/F1, Brier score) and the ROC plot."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.deepmerge.network import CLASSES


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN with a single class."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s, t = np.asarray(score)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, fp = np.cumsum(t)[last], np.cumsum(~t)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def binary_report(y: np.ndarray, p_merger: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Classification report at ``threshold`` plus ROC AUC, Brier score and the merger-class P/R/F1 on top."""
    from training.evaluation import classification_report

    y = np.asarray(y, dtype=int)
    pred = (np.asarray(p_merger) >= threshold).astype(int)
    rep = classification_report(y, pred, CLASSES)
    m = rep["per_class"]["merger"]
    rep.update({"threshold": threshold, "roc_auc": roc_auc(y, p_merger),
                "brier": float(np.mean((np.asarray(p_merger, dtype=float) - y) ** 2)) if len(y) else float("nan"),
                "precision": m["precision"], "recall": m["recall"], "f1": m["f1"]})
    return rep


def plot_roc(y: np.ndarray, p: np.ndarray, path: Path, title: str) -> Path:
    from training.plots import pyplot

    plt = pyplot()
    fpr, tpr = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(3.8, 3.6), dpi=120)
    ax.plot(fpr, tpr, label=f"AUC {roc_auc(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.7)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (merger recall)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
