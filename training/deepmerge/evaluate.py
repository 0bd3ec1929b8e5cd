"""``stampflow evaluate deepmerge[-noisy]``: score an artifact on an HLSP file or directory through the serving
class (`models.cnn.KerasCNN.predict_batch`); ``--set part=test`` scores only the rows the artifact held out."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ModelInfo
from schemas.errors import StampflowError
from training.deepmerge.hlsp import mock_description, read_hlsp
from training.deepmerge.metrics import binary_report
from training.deepmerge.network import FAMILY_NAME
from training.deepmerge.options import DeepMergeEvaluateOptions
from training.deepmerge.prepare import split_parts


def evaluate(info: ModelInfo, data: Path, fam: DeepMergeEvaluateOptions) -> dict[str, Any]:
    """Score an artifact on an HLSP file or directory (options: `DeepMergeEvaluateOptions`)."""
    from models.preprocess import prepare_images
    from training.cnn import load_served

    clf = load_served(info, FAMILY_NAME)
    spec = clf.input_spec
    meta = info.metadata
    ds = read_hlsp(data, variant=fam.variant, n_filters=fam.filters or len(spec.channels), fmt=fam.format)
    if tuple(ds.filters) != tuple(spec.channels):
        raise StampflowError(f"{ds.path.name} has filters {ds.filters}, the model takes {spec.channels}")
    part = fam.part
    if part == "all":
        rows = np.arange(len(ds))
    else:  # "test": the artifact's own held-out rows, from its recorded split
        sp = meta.get("split", {})
        if meta.get("training_data", {}).get("n_images") != len(ds):
            raise StampflowError("--set part=test needs the file the model was trained on (row counts differ)")
        fr = tuple(sp["fractions"][k] for k in ("train", "validation", "test"))
        rows = split_parts(ds, sp.get("method", "stratified"), fr, int(sp.get("seed", 0)), fam.metadata,
                           sp.get("max_images"))[2]
    if fam.limit is not None:
        rows = rows[:fam.limit]
    threshold = fam.threshold
    t0 = time.perf_counter()
    probs = []
    for s in range(0, len(rows), 1024):
        x = prepare_images(ds.nhwc(rows[s:s + 1024]), spec)
        probs.append(clf.predict_batch(x).probabilities[:, 1])
    p = np.concatenate(probs) if probs else np.zeros(0)
    seconds = time.perf_counter() - t0
    rep = binary_report(ds.labels[rows], p, threshold)
    return {"model": f"{info.name}@{info.version}", "data": str(ds.path), "format": ds.fmt, "variant": ds.variant,
            "mock_data": mock_description(ds) is not None, "part": part, "n": int(len(rows)),
            "accuracy": rep["accuracy"], "accuracy_ci95": rep["accuracy_ci95"], "precision": rep["precision"],
            "recall": rep["recall"], "f1": rep["f1"], "roc_auc": rep["roc_auc"], "brier": rep["brier"],
            "threshold": threshold, "confusion_matrix": rep["confusion_matrix"], "per_class": rep["per_class"],
            "images_per_s_end_to_end": len(rows) / max(seconds, 1e-9)}
