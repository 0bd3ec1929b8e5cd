"""``stampflow evaluate spin``: score a spin artifact on a catalogue + stamps directory through the serving class
(`models.cnn.KerasCNN.predict_batch`); ``--set part=test`` scores only the rows the artifact held out."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ModelInfo
from schemas.errors import StampflowError
from training.spin.data import read_spin_dir, stack_resized
from training.spin.network import CLASSES, FAMILY_NAME
from training.spin.options import SpinEvaluateOptions
from training.spin.prepare import split_parts


def evaluate(info: ModelInfo, data: Path, fam: SpinEvaluateOptions) -> dict[str, Any]:
    """Score a spin artifact (options: `SpinEvaluateOptions`)."""
    from training.cnn import load_served
    from training.evaluation import regression_report

    clf = load_served(info, FAMILY_NAME)
    ds = read_spin_dir(data, fam.catalogue, fam.limit or None)
    part = fam.part
    if part == "all":
        rows = np.arange(len(ds))
    else:  # "test": the artifact's own held-out rows, from its recorded split
        meta = info.metadata
        if meta.get("training_data", {}).get("n_images") != len(ds):
            raise StampflowError("--set part=test needs the catalogue the model was trained on (row counts differ)")
        sp = meta["split"]
        fr = tuple(sp["fractions"][k] for k in ("train", "validation", "test"))
        rows = split_parts(ds.targets, fr, int(sp["seed"]), sp.get("max_images"))[2]
    t0 = time.perf_counter()
    preds = []
    for s in range(0, len(rows), 512):
        x = stack_resized([ds.images[i] for i in rows[s:s + 512]], clf.input_spec)
        preds.append(clf.predict_batch(x).probabilities[:, 0])
    pred = np.concatenate(preds) if preds else np.zeros(0)
    seconds = time.perf_counter() - t0
    rep = regression_report(ds.targets[rows], pred, CLASSES)
    return {"model": f"{info.name}@{info.version}", "data": str(ds.catalogue), "mock_data": ds.mock is not None,
            "part": part, **{k: rep[k] for k in ("n", "mse", "rmse", "mae", "pearson_r")},
            "images_per_s_end_to_end": len(rows) / max(seconds, 1e-9)}
