"""Pictures of an alert evaluation: the reliability diagram and a gallery of the worst disagreements.

The gallery shows, for the alerts where the model was most confidently wrong against the PS1 reference, the
science, template and difference stamps (decoded by the same `schemas.stamps` decoder the worker uses, asinh
stretch, FITS orientation kept: origin lower), titled with what the model said and what PS1 says.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from schemas.packet import RawMessage
from schemas.stamps import read_fits_array
from training.plots import plot_reliability, pyplot
from training.stargal.reference import record_of

STAMP_FIELDS = (("science", "cutoutScience"), ("template", "cutoutTemplate"), ("difference", "cutoutDifference"))


def _stamps(msg: RawMessage) -> dict[str, np.ndarray | None]:
    rec = record_of(msg) or {}
    out: dict[str, np.ndarray | None] = {}
    for kind, key in STAMP_FIELDS:
        blob = rec.get(key)
        data = blob.get("stampData") if isinstance(blob, dict) else None
        try:
            out[kind] = read_fits_array(data) if data else None
        except Exception:  # noqa: BLE001 - a gallery panel left blank says the stamp is unreadable
            out[kind] = None
    return out


def _stretch(img: np.ndarray) -> np.ndarray:
    """asinh stretch between the 1st and 99.5th percentile; NaN stays NaN (drawn as the background colour)."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return img
    lo, hi = np.percentile(finite, [1, 99.5])
    scaled = np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.arcsinh(10 * scaled) / np.arcsinh(10)


def plot_gallery(rows: Sequence[tuple[Any, Any]], messages: Sequence[RawMessage], order: Sequence[int],
                 path: Path, title: str) -> Path:
    """Rows = (reference, prediction) pairs; ``order`` picks which, top first; three stamps per row."""
    by_candid: dict[int, RawMessage] = {}
    for msg in messages:
        rec = record_of(msg)
        if rec is not None:
            candid = rec.get("candid") or (rec.get("candidate") or {}).get("candid")
            if candid is not None:
                by_candid.setdefault(int(candid), msg)
    plt = pyplot()
    n = max(len(order), 1)
    fig, axes = plt.subplots(n, 3, figsize=(6.3, 2.15 * n), dpi=100, squeeze=False)
    for row, i in enumerate(order):
        ref, pred = rows[i]
        stamps = _stamps(by_candid[ref.candid]) if ref.candid in by_candid else {}
        for col, (kind, _) in enumerate(STAMP_FIELDS):
            ax = axes[row][col]
            img = stamps.get(kind)
            if img is not None:
                ax.imshow(_stretch(img), origin="lower", cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(kind, fontsize=8)
        p_label = pred.probabilities.get(pred.label, float("nan"))
        band = {1: "g", 2: "r", 3: "i"}.get(ref.fid, "?")
        mag = f"{ref.magpsf:.1f}" if ref.magpsf is not None else "?"
        axes[row][0].set_ylabel(f"{ref.object_id}\n{band} mag {mag}\nmodel {pred.label} {p_label:.2f}"
                                f"{' OOD' if pred.out_of_distribution else ''}\nPS1 {ref.label} "
                                f"sg {ref.sgscore1:.2f}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / n))  # room for the title above the column headings
    fig.savefig(path)
    plt.close(fig)
    return path


def write_alert_pictures(rows, messages, true: np.ndarray, probs: np.ndarray, report: dict[str, Any],
                         out_dir: Path, model: str, gallery: int = 12) -> dict[str, Path]:
    out = {"reliability": plot_reliability({"alerts vs PS1": report["reliability"]},
                                           out_dir / "reliability_alerts.png",
                                           title=f"{model}: reliability on real alerts (PS1 reference)")}
    p_true = probs[np.arange(len(true)), true]
    wrong = np.flatnonzero(probs.argmax(axis=1) != true)
    worst = wrong[np.argsort(p_true[wrong], kind="stable")][:gallery]  # most confidently wrong first
    if len(worst):
        out["gallery"] = plot_gallery(rows, messages, list(worst), out_dir / "worst_disagreements.png",
                                      f"{model}: {len(wrong)} disagreements with PS1, worst {len(worst)}")
    return out
