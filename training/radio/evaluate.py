"""``stampflow evaluate <radio model>``: score a radio artifact on labelled radio data through the serving path.

Griese HDF5 (zip or not; ``split=valid|train|all``), FR-DEEP or MiraBest data. A model whose classes are a
superset of the data's (the 4-class FIRST model on FRI/FRII data) is restricted to the shared classes: the
predicted label is the arg-max over the shared classes' probabilities, and the unrestricted 4-way predictions are
reported beside it. Images of classes the model does not know are dropped and counted.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ModelInfo, same_scale
from schemas.errors import StampflowError
from training.cnn import load_served
from training.evaluation import classification_report
from training.radio.data import load_radio
from training.radio.options import RadioEvaluateOptions
from training.radio.train import FAMILY, TEST_SPLIT, dataset_name, prepare


def calibration_summary(info: ModelInfo, probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """ECE (15 bins) of the served probabilities (restricted to the data's classes and renormalised when the
    model has more), and whether the artifact carries a calibration."""
    from training.calibration import ece_if_calibrated, expected_calibration_error

    sums = probs.sum(axis=1, keepdims=True)
    p = np.divide(probs, sums, out=np.full_like(probs, 1.0 / probs.shape[1]), where=sums > 0)
    cal = info.metadata.get("calibration") or {}
    # a temperature set by hand (radio-first 1.1.0: T = 1, the network's own probabilities) is not a calibration
    fitted = bool(cal) and cal.get("fitted", True)
    ece = expected_calibration_error(p, y, 15)
    # at n = 200 a perfectly calibrated model's ECE is ~0.06, so the number is reported with that null beside it
    return {"ece_15_bins": ece, "ece_if_calibrated": ece_if_calibrated(p, ece, 15), "calibrated": fitted,
            "method": cal.get("method"), "temperature": cal.get("temperature"),
            **({"temperature_fixed_because": cal.get("meaning")} if cal and not fitted else {})}


def ood_summary(info: ModelInfo, flags: list) -> dict[str, Any]:
    """Share of results the artifact's out-of-distribution rule flagged (None when it has no rule)."""
    if not flags or any(f is None for f in flags):
        return {"rule": None, "flagged": None, "share": None}
    flagged = np.concatenate([np.asarray(f, dtype=bool) for f in flags])
    ood = info.metadata.get("ood") or {}
    return {"rule": ood.get("rule"), "flagged": int(flagged.sum()), "n": int(len(flagged)),
            "share": float(flagged.mean()) if len(flagged) else None}


def evaluate(info: ModelInfo, data: Path, options: RadioEvaluateOptions | None = None) -> dict[str, Any]:
    """Score a radio artifact on labelled radio data (options: `RadioEvaluateOptions`)."""
    o = options or RadioEvaluateOptions()
    clf = load_served(info, FAMILY)
    data = Path(data)
    dataset = dataset_name(o.dataset, data)
    rs = load_radio(data, dataset=dataset, labels=o.labels, limit=o.limit, survey=o.survey)
    split = o.split
    if split is None:
        held_out = TEST_SPLIT.get(rs.dataset)
        split = held_out if held_out in set(rs.splits.tolist()) else "all"
    rs = rs.select(split)
    spec = clf.input_spec
    mismatch = []
    if rs.survey not in spec.surveys:
        mismatch.append(f"survey {rs.survey} not in the model's {list(spec.surveys)}")
    if spec.pixel_scale is not None and not same_scale(rs.pixel_scale, spec.pixel_scale):
        mismatch.append(f"pixel scale {rs.pixel_scale}\"/px is not the model's {spec.pixel_scale}\"/px")
    if mismatch and not o.force:
        raise StampflowError(f"{data} does not fit {info.name}@{info.version}: {'; '.join(mismatch)} "
                             "(the stream would not route it; --set force=true evaluates anyway)")

    model_classes, data_classes = tuple(clf.classes), tuple(rs.classes)
    shared = [c for c in data_classes if c in model_classes]
    if not shared:
        raise StampflowError(f"the model's classes {list(model_classes)} and the data's {list(data_classes)} "
                             "have nothing in common")
    keep = np.isin(np.array(data_classes)[rs.labels], shared)
    dropped = {c: int((np.array(data_classes)[rs.labels] == c).sum()) for c in data_classes if c not in shared}
    rs = rs.subset(np.flatnonzero(keep))
    if len(rs) == 0:
        raise StampflowError(f"no images of the model's classes in {data} (split {split})")
    y = np.array([shared.index(data_classes[i]) for i in rs.labels])

    batch = o.batch_size
    x = prepare(rs, spec, None)
    t0 = time.perf_counter()
    preds = [clf.predict_batch(x[i:i + batch]) for i in range(0, len(x), batch)]
    seconds = time.perf_counter() - t0
    probs = np.concatenate([p.probabilities for p in preds])
    flags = [p.out_of_distribution for p in preds]
    cols = [model_classes.index(c) for c in shared]
    restricted = len(shared) < len(model_classes)
    pred = probs[:, cols].argmax(axis=1)
    report = classification_report(y, pred, shared)
    result: dict[str, Any] = {
        "model": f"{info.name}@{info.version}", "artifact": str(info.path),
        "data": {"path": str(data.resolve()), "dataset": rs.dataset, "survey": rs.survey,
                 "pixel_scale": rs.pixel_scale, "split": split, "n": int(len(rs)), "dropped_classes": dropped},
        **report,
        "seconds": seconds, "images_per_second": len(rs) / seconds if seconds > 0 else None,
        "calibration": calibration_summary(info, probs[:, cols], y),
        "out_of_distribution": ood_summary(info, flags),
    }
    if mismatch:
        result["input_mismatch"] = mismatch
    if restricted:
        full = probs.argmax(axis=1)
        cm = np.zeros((len(shared), len(model_classes)), dtype=int)
        np.add.at(cm, (y, full), 1)
        result["restricted_to"] = shared
        result["restriction"] = ("label = arg-max of the model's probabilities over the data's classes "
                                 f"{shared} only (the other classes' probabilities are ignored)")
        result["unrestricted"] = {"accuracy": float((np.array(model_classes)[full] ==
                                                     np.array(shared)[y]).mean()),
                                  "confusion_matrix": {"rows": "true", "columns": "predicted (all model classes)",
                                                       "row_labels": shared, "column_labels": list(model_classes),
                                                       "matrix": cm.tolist()}}
    return result
