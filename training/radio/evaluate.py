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
    probs = np.concatenate([clf.predict_batch(x[i:i + batch]).probabilities for i in range(0, len(x), batch)])
    seconds = time.perf_counter() - t0
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
