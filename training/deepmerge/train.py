"""Train DeepMerge (``stampflow train deepmerge``); `training.deepmerge.evaluate` scores an artifact.

Training (`train`):

1. read an HLSP file (FITS with its ``MergerLabels`` table, or an ``-x.npy`` + labels ``.npy`` pair; a directory
   picks its one file, ``--set variant=... filters=2|3 format=fits|npy`` choose), shape (N, C, 75, 75) -> NHWC;
2. the serving geometry (`prepare_images`, crop 75) and recipe (`apply_recipe`, asinh) -- the same path the
   worker runs;
3. seeded stratified split, 70/10/20 as in the paper (``--set fractions=0.7,0.1,0.2``). ``--set split=subhalo``
   splits by Illustris subhalo instead (``subsamples_ID.npy`` from ``--set metadata=DIR``, default
   ``<data root>/deepmerge_metadata``): the published set holds four cameras and four flipped/rotated copies
   of every merger, so a row split lets copies of one galaxy sit on both sides;
4. the paper's augmentation on the fly: random flips and 90-degree rotations (the 8 lossless symmetries of a
   square stamp; the authors made flipud/fliplr/rot90/rot180 copies of the mergers offline);
5. Adam + binary cross-entropy with early stopping on the validation loss (the paper's set-up), progress bar,
   training images/s;
6. test metrics through the serving `tf.function` (accuracy with Wilson CI, precision/recall/F1, ROC AUC,
   Brier score, confusion matrix), inference images/s at batch 256, curves / confusion / ROC PNGs;
7. artifact ``deepmerge`` (pristine) or ``deepmerge-noisy`` with ``trained_on`` "mock" when the file is one of
   our mocks (FITS header ``MOCK`` or a ``mock_description.json`` naming it) and the mock parameters recorded.

The ``--set`` options are `training.deepmerge.options.DeepMergeOptions`.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import StampflowError
from training.deepmerge.hlsp import check_labels_against_metadata, mock_description, read_hlsp
from training.deepmerge.metrics import binary_report, plot_roc
from training.deepmerge.network import (CLASSES, FAMILY_NAME, INPUT_SIZE, PIXEL_SCALE_NOTE, PREPROCESS, TASK,
                                        build_model, input_spec, model_name)
from training.deepmerge.options import DeepMergeOptions
from training.deepmerge.prepare import default_metadata_dir, prepared_inputs, split_parts
from training.family import TrainOptions, say

DEFAULT_EPOCHS = 40
DEFAULT_BATCH = 128                  # the paper's batch size
DEFAULT_LR = 1e-3                    # Keras' Adam default, as in the notebook


def _file_sha256(path: Path, limit: int = 1 << 26) -> str:
    """sha256 of the first 64 MiB and the size: identifies a file cheaply, even a 2 GB HLSP file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(limit))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()


def train(opts: TrainOptions, fam: DeepMergeOptions) -> dict[str, Any]:
    """Train DeepMerge on an HLSP file (real or mock) and save the artifact; returns a JSON-able summary."""
    from training.augment import dihedral_augmentation
    from training.cnn import configure_device, fit, inference_rate, predict_array, save_artifact
    from training.plots import write_training_plots

    ds = read_hlsp(opts.data, variant=fam.variant, n_filters=fam.filters or None, fmt=fam.format)
    variant = fam.variant or ds.variant or "pristine"
    max_images = fam.max_images
    seed = int(opts.seed)
    device = configure_device(opts.mixed_precision, seed=seed)
    fractions = fam.fractions
    method = fam.split
    meta_dir = fam.metadata
    parts = split_parts(ds, method, fractions, seed, meta_dir, max_images)
    train_idx, val_idx, test_idx = parts
    for name, idx in zip(("train", "validation", "test"), parts):
        if len(np.unique(ds.labels[idx])) < 2:
            raise StampflowError(f"the {name} part has a single class; use more images")
    say(f"deepmerge: {ds.path.name}: {len(ds)} images, filters {', '.join(ds.filters)}, variant {variant}; "
        f"split {method} {len(train_idx)}/{len(val_idx)}/{len(test_idx)}", quiet=fam.quiet)
    x_tr, x_va, x_te = (prepared_inputs(ds, idx) for idx in parts)
    y_tr, y_va, y_te = (ds.labels[idx].astype(np.float32) for idx in parts)

    import keras

    lr = opts.learning_rate or DEFAULT_LR
    dense_activation = fam.dense_activation
    dropout = fam.dropout
    if opts.from_model:
        from training.cnn import freeze_first, load_keras_model

        model, src = load_keras_model(opts.from_model, [opts.registry_root])
        if tuple(model.inputs[0].shape[1:]) != x_tr.shape[1:]:
            raise StampflowError(f"--from {opts.from_model}: input {tuple(model.inputs[0].shape[1:])} does not "
                                 f"match the data {x_tr.shape[1:]}")
        frozen = freeze_first(model, opts.freeze) if opts.freeze else []
        transfer = {"from": f"{src.name}@{src.version}", "frozen_layers": frozen}
    else:
        model = build_model(len(ds.filters), variant=variant, dense_activation=dense_activation, dropout=dropout,
                            seed=seed)
        transfer = None
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy",
                  metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")])
    epochs = opts.epochs or DEFAULT_EPOCHS
    batch = opts.batch_size or DEFAULT_BATCH
    patience = fam.patience
    name = fam.name or model_name(variant)
    result = fit(model, (x_tr, y_tr), (x_va, y_va), epochs=epochs, batch_size=batch,
                 augment=dihedral_augmentation(seed), seed=seed, desc=name, patience=patience or None)

    # -- scores through the serving tf.function
    p_te = predict_array(model, x_te)[:, 0]
    p_va = predict_array(model, x_va)[:, 0]
    test = binary_report(y_te, p_te)
    val = binary_report(y_va, p_va)
    rate = inference_rate(model, (INPUT_SIZE, INPUT_SIZE, len(ds.filters)))
    say(f"deepmerge test: accuracy {test['accuracy']:.4f} [{test['accuracy_ci95'][0]:.3f}, "
        f"{test['accuracy_ci95'][1]:.3f}], AUC {test['roc_auc']:.4f}, F1 {test['f1']:.4f}; "
        f"train {result.images_per_s:.0f} img/s, inference {rate:.0f} img/s at batch 256", quiet=fam.quiet)

    mock = mock_description(ds)
    label_check = None
    md = meta_dir or default_metadata_dir()
    if (md / "subsamples_y.npy").is_file():
        chk = check_labels_against_metadata(ds.labels, md)
        label_check = chk if chk.get("comparable") else None
    training_data = {
        "path": str(ds.path.resolve()), "format": ds.fmt, "label_file": str(ds.label_path) if ds.label_path else None,
        "sha256_head": _file_sha256(ds.path), "n_images": len(ds), "filters": list(ds.filters), "variant": variant,
        "class_counts": {c: int((ds.labels == i).sum()) for i, c in enumerate(CLASSES)},
        "mock": mock, "labels_vs_metadata": label_check,
    }
    split = {"method": method, "seed": seed, "fractions": dict(zip(("train", "validation", "test"), fractions)),
             "max_images": max_images,
             "counts": {k: {"n": int(len(idx)), "merger": int(ds.labels[idx].sum())}
                        for k, idx in zip(("train", "validation", "test"), parts)}}
    metrics = {"test": test, "validation": val, "inference_images_per_s_batch256": rate,
               "inference_device": device["device"]}
    training = result.record(
        epochs=epochs, batch_size=batch, optimizer="Adam", learning_rate=lr, loss="binary_crossentropy",
        early_stopping={"monitor": "val_loss", "patience": patience},
        augmentation="random flips + transpose (8 dihedral symmetries, no interpolation)", device=device,
        dense_activation=dense_activation, dropout=dropout, batchnorm_momentum=0.9, transfer=transfer)
    extra = {"variant": variant, "pixel_scale_note": PIXEL_SCALE_NOTE,
             "architecture": f"Ciprijanovic et al. 2020 DeepMerge: 3x(Conv-BN-MaxPool-Dropout {dropout}) 8/16/32, "
                             f"Dense 64-32 (L2 1e-4, {dense_activation}), sigmoid"}
    with tempfile.TemporaryDirectory() as tmp:
        plots = write_training_plots(result.history, Path(tmp), test, TASK, CLASSES, name=name)
        plots["roc"] = plot_roc(y_te, p_te, Path(tmp) / "roc.png", f"{name} ROC (test)").name
        extra["plots"] = plots
        path = save_artifact(model, name=name, family=FAMILY_NAME, version=opts.version, out_root=opts.out_root,
                             task=TASK, classes=CLASSES, input_spec=input_spec(len(ds.filters)),
                             preprocess=PREPROCESS, training_data=training_data, split=split, metrics=metrics,
                             trained_on="mock" if mock else "real", training=training, plots_from=Path(tmp),
                             extra=extra)
    say(f"saved {path}", quiet=fam.quiet)
    from models.preprocess import prepare_images
    from training.uncertainty import attach_after_training

    stamps = [prepare_images(ds.nhwc(idx), input_spec(len(ds.filters))) for idx in parts]  # before the recipe
    uncertainty = attach_after_training(path, x_fit=stamps[0], x_val=stamps[1], y_val=ds.labels[val_idx],
                                        x_test=stamps[2], y_test=ds.labels[test_idx],
                                        say=lambda m: say(m, quiet=fam.quiet))
    return {"artifact": str(path), "name": name, "variant": variant, "trained_on": "mock" if mock else "real",
            "uncertainty": uncertainty,
            "test": {k: test[k] for k in ("n", "accuracy", "accuracy_ci95", "precision", "recall", "f1", "roc_auc",
                                           "brier")},
            "confusion_matrix": test["confusion_matrix"]["matrix"], "train_images_per_s": result.images_per_s,
            "inference_images_per_s": rate, "epochs_run": result.epochs_run}
