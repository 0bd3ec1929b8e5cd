"""``stampflow evaluate MODEL`` for a morphology artifact: score it on a CANDELS or CLASH stamp set through the
serving class (`models.cnn.KerasCNN.predict_batch`), by default on the rows it held out."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ModelInfo
from schemas.errors import StampflowError
from training.morphology.dataset import load_morphology
from training.morphology.labels import labels_file, read_labels
from training.morphology.metrics import PAPER_RMSE, fractions_report, per_filter
from training.morphology.network import CANDELS_BAND, FAMILY_NAME
from training.morphology.options import MorphologyEvaluateOptions


def evaluate(info: ModelInfo, data: Path, fam: MorphologyEvaluateOptions) -> dict[str, Any]:
    """Score a morphology artifact on a CANDELS or CLASH stamp set through ``KerasCNN.predict_batch``.

    The model's channels decide the rows: F160W on CANDELS (or CLASH rows labelled in F160W); one CLASH filter:
    the rows labelled in it; several: every row of those filters with the galaxy's stack. Options: ``split``
    (``test``/``validation``: the artifact's own held-out IDs; ``all``; default ``test`` when the data holds
    them, else ``all``), ``dataset``, ``limit``, ``batch_size`` (`MorphologyEvaluateOptions`).
    """
    from training.cnn import load_served

    clf = load_served(info, FAMILY_NAME)
    spec = clf.input_spec
    channels = tuple(spec.channels or ())
    dataset = fam.dataset or read_labels(labels_file(data)).dataset
    if dataset == "candels" and channels != (CANDELS_BAND,):
        raise StampflowError(f"{info.name} takes {'+'.join(channels)}; CANDELS stamps are F160W only")
    stack = "channels" if len(channels) > 1 else "row"
    raw = load_morphology(data, dataset, filters=channels if dataset == "clash" else None, stack=stack,
                          size=spec.size, recipe=None, limit=fam.limit)
    meta_split = info.metadata.get("split") or {}
    held = {"test": set(meta_split.get("test_ids") or []), "validation": set(meta_split.get("validation_ids") or [])}
    trained_on_this = (info.metadata.get("training_data") or {}).get("dataset") == dataset
    split = fam.split or ("test" if held["test"] & set(raw.ids) else "all")
    if split in held:
        rows = np.array([k for k, i in enumerate(raw.ids) if i in held[split]], dtype=int)
    else:  # "all"
        rows = np.arange(len(raw.ids))
    sub = raw.subset(rows)
    if not len(sub.ids):
        raise StampflowError(f"no labelled stamps of {'+'.join(channels)} in {data} (split {split})")
    batch = fam.batch_size
    t0 = time.perf_counter()
    probs = np.concatenate([clf.predict_batch(sub.x[i:i + batch]).probabilities for i in range(0, len(sub.x), batch)])
    seconds = time.perf_counter() - t0
    in_training = sum(1 for i in sub.ids if i not in held["test"] and i not in held["validation"]) \
        if trained_on_this else 0
    report = fractions_report(sub.y, probs)
    result: dict[str, Any] = {
        "model": f"{info.name}@{info.version}", "artifact": str(info.path),
        "trained_on": info.metadata.get("trained_on"),
        "data": {"path": str(Path(data).resolve()), "dataset": dataset, "channels": list(channels), "split": split,
                 "n": len(sub.ids), "join": raw.report.as_dict(),
                 "skipped": {k: len(v) for k, v in raw.skipped.items()}, "rows_in_model_training_set": in_training},
        **report, "paper_clash_test_rmse": PAPER_RMSE,
        "seconds": seconds, "images_per_second": len(sub.ids) / seconds if seconds > 0 else None}
    if dataset == "clash":
        result["per_row_filter"] = per_filter(sub, probs)
    return result
