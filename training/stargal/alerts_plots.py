"""Pictures of an alert evaluation: the reliability diagram and a gallery of the worst disagreements.

The gallery shows, for the alerts where the model was most confidently wrong against the PS1 reference, the
science, template and difference stamps as the worker decodes them (`stream.decode.Decoder`, then
`Stamp.image()`: NaN-padded edges visible, FITS orientation kept, origin lower), asinh-stretched, titled with
what the model said and what PS1 says.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from schemas.packet import Packet, RawMessage
from schemas.stamps import StampKind
from stream.decode import Decoder
from stream.decode.mappers import ZTF_BANDS
from training.plots import plot_reliability, pyplot

KINDS = (StampKind.SCIENCE, StampKind.TEMPLATE, StampKind.DIFFERENCE)


def _stamps(decoder: Decoder, msg: RawMessage) -> dict[StampKind, np.ndarray]:
    """The message's stamps through the worker's decoder; an unreadable one is left out (a blank panel)."""
    packet = decoder.decode_or_dead_letter(msg)
    out: dict[StampKind, np.ndarray] = {}
    if isinstance(packet, Packet):
        for kind, stamp in packet.stamps.items():
            try:
                out[kind] = stamp.image().data
            except Exception:  # noqa: BLE001 - the panel stays blank; the evaluation itself already scored it
                continue
    return out


def _stretch(img: np.ndarray) -> np.ndarray:
    """asinh stretch between the 1st and 99.5th percentile; NaN stays NaN (drawn as the background colour)."""
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return img
    lo, hi = np.percentile(finite, [1, 99.5])
    scaled = np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.arcsinh(10 * scaled) / np.arcsinh(10)


def plot_gallery(rows: list[tuple[Any, Any, RawMessage]], order: list[int], path: Path, title: str) -> Path:
    """Rows = (reference, prediction, message) triples; ``order`` picks which, top first; three stamps per row."""
    decoder = Decoder()
    plt = pyplot()
    n = max(len(order), 1)
    fig, axes = plt.subplots(n, 3, figsize=(6.3, 2.15 * n), dpi=100, squeeze=False)
    for row, i in enumerate(order):
        ref, pred, msg = rows[i]
        stamps = _stamps(decoder, msg)
        for col, kind in enumerate(KINDS):
            ax = axes[row][col]
            if kind in stamps:
                ax.imshow(_stretch(stamps[kind]), origin="lower", cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(kind.value, fontsize=8)
        p_label = pred.probabilities.get(pred.label, float("nan"))
        mag = f"{ref.magpsf:.1f}" if ref.magpsf is not None else "?"
        axes[row][0].set_ylabel(f"{ref.object_id}\n{ZTF_BANDS.get(ref.fid, '?')} mag {mag}\nmodel {pred.label} "
                                f"{p_label:.2f}{' OOD' if pred.out_of_distribution else ''}\nPS1 {ref.label} "
                                f"sg {ref.sgscore1:.2f}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / n))  # room for the title above the column headings
    fig.savefig(path)
    plt.close(fig)
    return path


def write_alert_pictures(scored, out_dir: Path, model: str, gallery: int = 12) -> dict[str, Path]:
    """``scored``: `training.stargal.alerts.ScoredAlerts`."""
    out = {"reliability": plot_reliability({"alerts vs PS1": scored.report["reliability"]},
                                           out_dir / "reliability_alerts.png",
                                           title=f"{model}: reliability on real alerts (PS1 reference)")}
    true, probs = scored.true, scored.probs
    p_true = probs[np.arange(len(true)), true]
    wrong = np.flatnonzero(probs.argmax(axis=1) != true)
    worst = wrong[np.argsort(p_true[wrong], kind="stable")][:gallery]  # most confidently wrong first
    if len(worst):
        out["gallery"] = plot_gallery(scored.rows, list(worst), out_dir / "worst_disagreements.png",
                                      f"{model}: {len(wrong)} disagreements with PS1, worst {len(worst)}")
    return out
