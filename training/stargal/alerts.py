"""``stampflow evaluate stargal --alerts PATH...``: score a star/galaxy model on real alerts, as a user meets them.

The alerts go through the worker's own path: `FileSource` → the engine (decode, route, crop, normalise, the
model's `predict_batch`, the typed result) with an in-memory sink, so what is scored is exactly what `serve`
would publish. Each result is then compared with the PS1 reference its packet carries (`reference.py`); the
reference is read from the message bytes separately and never reaches the model.

Reported (JSON): n and recall per class with 95% Wilson intervals, balanced accuracy, the abstention rate
(results flagged ``out_of_distribution`` count as abstentions) and the balanced accuracy of the rest, the expected
calibration error, and breakdowns by band (``fid``), magnitude bin and ``isdiffpos``. Pictures: a reliability
diagram and a gallery of the worst disagreements with their three stamps (`alerts_plots.py`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from models.base import ModelInfo
from schemas.errors import StampflowError
from schemas.packet import DeadLetter, RawMessage
from stream.decode.mappers import ZTF_BANDS
from training.calibration import ECE_BINS, ece_from_bins, expected_calibration_error, reliability_bins
from training.evaluation import wilson_interval
from training.family import say
from training.stargal.reference import GALAXY, STAR, Reference, Thresholds, record_of, reference_of

CLASSES = (STAR, GALAXY)
#: Difference-image PSF magnitude bins: bright stars (saturating) sit below ~15, the faint end near 20.5.
MAG_EDGES = (-np.inf, 15.0, 17.0, 18.5, 19.5, np.inf)


def _mag_bin(mag: float | None) -> str:
    """"<15", "15-17", ..., ">=19.5": the magpsf bin of an alert."""
    if mag is None or not np.isfinite(mag):
        return "unknown"
    for lo, hi in zip(MAG_EDGES[:-1], MAG_EDGES[1:]):
        if lo <= mag < hi:
            if np.isinf(lo):
                return f"<{hi:g}"
            return f">={lo:g}" if np.isinf(hi) else f"{lo:g}-{hi:g}"
    return "unknown"


def recall_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Recall per class with Wilson intervals, balanced accuracy (mean recall over the classes present)."""
    out: dict[str, Any] = {"n": int(len(true))}
    recalls = []
    for k, name in enumerate(CLASSES):
        sel = true == k
        n = int(sel.sum())
        hit = int((pred[sel] == k).sum())
        out[f"n_{name}"] = n
        out[f"recall_{name}"] = hit / n if n else None
        out[f"recall_{name}_ci95"] = list(wilson_interval(hit, n)) if n else None
        if n:
            recalls.append(hit / n)
    out["balanced_accuracy"] = float(np.mean(recalls)) if recalls else None
    out["accuracy"] = float((true == pred).mean()) if len(true) else None
    return out


def _breakdown(keys: Sequence[str], true: np.ndarray, pred: np.ndarray, ood: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(keys)):
        sel = np.array([k == key for k in keys])
        out[key] = {**recall_scores(true[sel], pred[sel]), "abstention_rate": float(ood[sel].mean())}
    return out


def classify_alert_files(info: ModelInfo, paths: Sequence[Path], batch_size: int = 256):
    """Run the worker's engine over alert files with one model; returns (results, dead letters, messages)."""
    from stream.config import load_settings
    from stream.file_source import FileSource
    from stream.metrics import Metrics
    from stream.sinks import MemorySink
    from stream.sources import IterSource
    from stream.worker import build_engine, load_classifiers

    for p in paths:
        if not Path(p).exists():
            raise StampflowError(f"alert path {p} does not exist")
    settings = load_settings(batch={"max_size": batch_size})
    classifiers = load_classifiers(settings, [str(info.path)])
    messages: list[RawMessage] = []

    def keep(items: Iterable[RawMessage | DeadLetter]):
        for item in items:  # the engine consumes the same objects; the evaluation keeps them for references
            if isinstance(item, RawMessage):
                messages.append(item)
            yield item

    sink = MemorySink()
    engine = build_engine(settings, IterSource(keep(FileSource([Path(p) for p in paths]).iter_messages())), sink,
                          classifiers, Metrics())
    engine.run()
    return sink.results, sink.dead_letters, messages


@dataclass
class ScoredAlerts:
    """The scored alerts: one row per candid (reference, prediction, the message it came from), the arrays
    behind the numbers, and the JSON report."""

    rows: list[tuple[Reference, Any, RawMessage]]
    true: np.ndarray
    pred: np.ndarray
    probs: np.ndarray
    ood: np.ndarray
    report: dict[str, Any]


def score_alerts(results, messages: Sequence[RawMessage], model_name: str, t: Thresholds) -> ScoredAlerts:
    """Join each result with its packet's confident PS1 reference (first result per candid) and score it."""
    refs: dict[int, tuple[Reference, RawMessage]] = {}
    for msg in messages:
        rec = record_of(msg)
        ref = reference_of(rec, t) if rec is not None else None
        if ref is not None:
            refs.setdefault(ref.candid, (ref, msg))
    rows = []
    seen: set[int] = set()
    for r in results:
        ref, msg = refs.get(r.candid, (None, None))
        if ref is None or ref.label is None or r.candid in seen:
            continue
        pred = next((p for p in r.predictions if p.model == model_name), None)
        if pred is None:
            continue
        seen.add(r.candid)
        rows.append((ref, pred, msg))
    if not rows:
        raise StampflowError("no alert with a confident PS1 reference was classified by the model "
                             f"(distpsnr1 < {t.max_distance}\", sgscore1 > {t.star_min} or < {t.galaxy_max})")
    true = np.array([CLASSES.index(ref.label) for ref, _, _ in rows])
    pred = np.array([CLASSES.index(p.label) for _, p, _ in rows])
    probs = np.array([[p.probabilities.get(c, 0.0) for c in CLASSES] for _, p, _ in rows])
    ood = np.array([p.out_of_distribution for _, p, _ in rows], dtype=bool)
    bins = reliability_bins(probs, true, ECE_BINS)
    report: dict[str, Any] = {**recall_scores(true, pred)}
    report["abstention_rate"] = float(ood.mean())
    report["n_abstained"] = int(ood.sum())
    report["answered"] = recall_scores(true[~ood], pred[~ood])
    report["ece"] = ece_from_bins(bins)
    report["ece_bins"] = ECE_BINS
    report["reliability"] = bins
    refs_only = [ref for ref, _, _ in rows]
    report["by_band"] = _breakdown([ZTF_BANDS.get(ref.fid, str(ref.fid)) for ref in refs_only], true, pred, ood)
    report["by_magpsf"] = _breakdown([_mag_bin(ref.magpsf) for ref in refs_only], true, pred, ood)
    report["by_isdiffpos"] = _breakdown([{"1": "t", "0": "f"}.get(str(ref.isdiffpos), str(ref.isdiffpos))
                                         for ref in refs_only], true, pred, ood)
    return ScoredAlerts(rows=rows, true=true, pred=pred, probs=probs, ood=ood, report=report)


def training_candids(artifact: Path) -> set[int]:
    """candid of every alert an artifact was trained on (empty for artifacts trained on cutouts only)."""
    from models.stargal import WEIGHTS_FILE

    with np.load(Path(artifact) / WEIGHTS_FILE, allow_pickle=False) as z:
        return {int(c) for c in z["train_alert_candid"]} if "train_alert_candid" in z.files else set()


def evaluate_alerts(info: ModelInfo, paths: Sequence[Path], options: Any) -> dict[str, Any]:
    """Classify alert files through the worker's path and score them against the PS1 reference."""
    from training.stargal.alerts_plots import write_alert_pictures

    t = Thresholds(max_distance=options.max_distance, star_min=options.star_min, galaxy_max=options.galaxy_max)
    t0 = time.perf_counter()
    results, dead, messages = classify_alert_files(info, paths, options.batch_size)
    seconds = time.perf_counter() - t0
    scored = score_alerts(results, messages, info.name, t)
    report, true, pred, probs, ood = scored.report, scored.true, scored.pred, scored.probs, scored.ood
    # A GP remembers its training points: alerts the model was trained on are scored apart, and "unseen" is
    # the honest number (2.0.0 trained on the shared alerts; their out-of-sample score is the grouped CV in
    # metadata.json -> metrics.alerts_cv).
    trained = training_candids(info.path)
    seen = np.array([ref.candid in trained for ref, _, _ in scored.rows], dtype=bool)
    report["n_in_training_set"] = int(seen.sum())
    if seen.any():
        unseen = ~seen
        report["unseen"] = {**recall_scores(true[unseen], pred[unseen]),
                            "abstention_rate": float(ood[unseen].mean()) if unseen.any() else None,
                            "ece": expected_calibration_error(probs[unseen], true[unseen]) if unseen.any()
                            else None}
        report["note"] = ("the headline numbers include alerts the model was trained on; see 'unseen' and, for the "
                          "bundled model's own alerts, metadata.json metrics.alerts_cv (object-grouped CV)")
    out_dir = Path(options.out_dir) if options.out_dir else None
    pictures = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        pictures = write_alert_pictures(scored, out_dir, f"{info.name}@{info.version}", gallery=options.gallery)
        say(f"evaluate: pictures in {out_dir}")
    return {"model": f"{info.name}@{info.version}", "artifact": str(info.path),
            "trained_on": info.metadata.get("trained_on"),
            "alerts": {"paths": [str(Path(p).resolve()) for p in paths], "messages": len(messages),
                       "results": len(results), "dead_letters": len(dead)},
            "reference": {"source": "PS1 sgscore1/distpsnr1 carried by each packet (Tachibana & Miller 2018)",
                          "max_distance_arcsec": t.max_distance, "star_if_sgscore1_above": t.star_min,
                          "galaxy_if_sgscore1_below": t.galaxy_max},
            **report, "pictures": {k: str(v) for k, v in pictures.items()}, "seconds": round(seconds, 3)}
