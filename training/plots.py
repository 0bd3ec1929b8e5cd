"""PNG plots written next to a trained artifact (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Counts with row-normalised shading; rows are the true class, columns the predicted class."""
    plt = _pyplot()
    m = np.asarray(matrix, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{int(m[i, j])}\n{frac[i, j]:.1%}", ha="center", va="center",
                    color="white" if frac[i, j] > 0.6 else "black", fontsize=9)
    # rotated: five or more class names (morphology) overlap when horizontal
    ax.set_xticks(range(len(classes)), classes, rotation=35 if len(classes) > 3 else 0, ha="right" if len(classes) > 3 else "center")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_normalisation_comparison(table: Sequence[dict], path: str | Path,
                                  title: str = "Normalisation / feature comparison") -> Path:
    """Grouped bars: validation (CV) accuracy per normalisation, one bar per feature setting, with error bars."""
    plt = _pyplot()
    norms = list(dict.fromkeys(r["normalisation"] for r in table))
    feats = list(dict.fromkeys(r["features"] for r in table))
    width = 0.8 / max(len(feats), 1)
    fig, ax = plt.subplots(figsize=(7.5, 4.0), dpi=120)
    x = np.arange(len(norms))
    for j, f in enumerate(feats):
        vals, errs = [], []
        for n in norms:
            row = next((r for r in table if r["normalisation"] == n and r["features"] == f), None)
            vals.append(row["val_accuracy"] if row else np.nan)
            errs.append(row.get("val_accuracy_std", 0.0) if row else 0.0)
        ax.bar(x + (j - (len(feats) - 1) / 2) * width, vals, width, yerr=errs, capsize=2, label=f)
    chosen = [r for r in table if r.get("chosen")]
    if chosen:
        ax.axhline(chosen[0]["val_accuracy"], color="k", lw=0.8, ls="--", label="chosen")
    lo = np.nanmin([r["val_accuracy"] for r in table])
    ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    ax.set_xticks(x, norms)
    ax.set_ylabel("cross-validated accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
