"""PNG plots written next to a trained artifact (matplotlib, Agg backend: no display needed): confusion
matrices, training curves, predicted-vs-true scatter plots, reliability diagrams and the star/galaxy normalisation
comparison."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed); imported when a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> Path:
    """Lay out, write and close one figure (closing frees it: training draws many in one process)."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    pyplot().close(fig)
    return path


def plot_confusion_matrix(matrix: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                          title: str = "Confusion matrix") -> Path:
    """Counts with row-normalised shading; rows are the true class, columns the predicted class."""
    plt = pyplot()
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
    return save(fig, path)


def plot_normalisation_comparison(table: Sequence[dict], path: str | Path,
                                  title: str = "Normalisation / feature comparison") -> Path:
    """Grouped bars: validation (CV) accuracy per normalisation, one bar per feature setting, with error bars."""
    plt = pyplot()
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
    return save(fig, path)


def plot_curves(history: dict[str, list[float]], path: Path, title: str = "Training curves") -> Path:
    """Loss and every other metric per epoch, training vs validation, one panel each."""
    plt = pyplot()
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.2 * max(len(names), 1), 3.4), dpi=110,
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save(fig, path)


def plot_scatter(true: np.ndarray, pred: np.ndarray, names: Sequence[str], path: Path,
                 title: str = "Predicted vs true") -> Path:
    """Predicted against true, one panel per output, with the identity line and the RMSE."""
    plt = pyplot()
    t = np.asarray(true, dtype=float).reshape(len(true), -1)
    p = np.asarray(pred, dtype=float).reshape(len(pred), -1)
    k = t.shape[1]
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 3.4), dpi=110, squeeze=False)
    for i, ax in enumerate(axes[0]):
        lo, hi = float(min(t[:, i].min(), p[:, i].min())), float(max(t[:, i].max(), p[:, i].max()))
        ax.scatter(t[:, i], p[:, i], s=6, alpha=0.5)
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        rmse = float(np.sqrt(np.mean((p[:, i] - t[:, i]) ** 2)))
        ax.set_title(f"{names[i]}  RMSE {rmse:.3f}", fontsize=9)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    fig.suptitle(title)
    return save(fig, path)


def write_training_plots(history: dict[str, list[float]], out_dir: Path, report: dict[str, Any], task: str,
                         classes: Sequence[str], *, true: np.ndarray | None = None,
                         pred: np.ndarray | None = None, name: str = "") -> dict[str, str]:
    """Curves PNG, plus a confusion matrix (classifiers, from ``report``) or a scatter plot (regression and
    vote fractions, from ``true``/``pred``). Returns {plot name: file name}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"curves": plot_curves(history, out_dir / "training_curves.png", f"{name} training curves").name}
    cm = report.get("confusion_matrix")
    if cm is not None:
        plots["confusion_matrix"] = plot_confusion_matrix(cm["matrix"], cm["labels"], out_dir / "confusion_matrix.png",
                                                          f"{name} confusion matrix (test)").name
    if task in ("regression", "fractions") and true is not None and pred is not None:
        plots["scatter"] = plot_scatter(true, pred, classes, out_dir / "scatter.png", f"{name} predicted vs true").name
    return plots


def plot_reliability(curves: dict[str, list[dict[str, Any]]], path: str | Path,
                     title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin (`training.calibration.reliability_bins`), one line per named set.

    The diagonal is perfect calibration; points below it are over-confident. The legend carries each set's ECE.
    """
    from training.calibration import ECE_BINS, ece_from_bins

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.4, 4.2), dpi=120)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
    for name, rows in curves.items():
        pts = [(r["confidence"], r["accuracy"]) for r in rows if r["n"]]
        if not pts:
            continue
        x, y = zip(*pts)
        ax.plot(x, y, marker="o", ms=3, lw=1.2,
                label=f"{name} (n={sum(r['n'] for r in rows)}, ECE {ece_from_bins(rows):.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"confidence of the predicted class ({ECE_BINS} bins)")
    ax.set_ylabel("fraction correct")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return save(fig, path)


def plot_coverage(curves: dict[str, list[dict[str, float]]], path: str | Path,
                  title: str = "Interval coverage") -> Path:
    """A regression reliability diagram: observed share of true values inside mean +/- z sigma against the
    nominal Gaussian share, one line per named set (rows ``{"nominal", "observed"}``). The diagonal is perfect
    calibration; below it the intervals are too narrow. The legend carries each set's coverage at 68%."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.4, 4.2), dpi=120)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
    for name, rows in curves.items():
        x = np.array([r["nominal"] for r in rows])
        y = np.array([r["observed"] for r in rows])
        at68 = float(np.interp(0.6827, x, y))
        ax.plot(x, y, lw=1.4, label=f"{name} (68%: {at68:.2f})")
    ax.axvline(0.6827, color="grey", lw=0.6, ls=":")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("nominal coverage of mean +/- z sigma")
    ax.set_ylabel("observed coverage")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return save(fig, path)
