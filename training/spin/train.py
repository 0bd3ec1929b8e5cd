"""Train the SDSS spin CNN (``stampflow train spin``); `training.spin.evaluate` scores an artifact.

Training (`train`), following sdss_CNN (see `training.spin.network`):

1. read the catalogue and its RGB stamps (`training.spin.data.read_spin_dir`; ``--set catalogue=FILE``);
2. the serving geometry (``resize`` to 80x80) and recipe (scale 1/255 -> [0, 1]) on the 0..255 values;
3. seeded 70/15/15 split, stratified by lambda_R quintiles so every part spans the target range
   (``--set fractions=0.7,0.15,0.15``);
4. augmentation on the fly: zoom +-25 %, rotation +-45 deg, horizontal and vertical flips, shifts of 5 %;
5. Adam (1e-3) on the mean squared error with early stopping on the validation loss (best weights kept). The
   seed also reduced the learning rate on plateaus; the shared fit loop takes no extra callbacks, so that step
   is not reproduced;
6. test MSE, RMSE, MAE and Pearson r through the serving `tf.function`, a predicted-vs-true scatter PNG, curves,
   inference images/s at batch 256; artifact ``spin`` (``trained_on`` "mock" for our mock sets).

Architecture: ``--set arch=bundled`` (default: half width, stride-2 first convolution, global average pooling,
0.1 dropout after the convolutions, ~0.13 M parameters, trainable in minutes on a CPU) or ``arch=seed`` (the
exact 5,994,145-parameter sdss_CNN); ``width``, ``head``, ``first_stride`` and ``conv_dropout`` override single
settings. The ``--set`` options are `training.spin.options.SpinOptions`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import StampflowError
from training.family import TrainOptions, say
from training.spin.data import read_spin_dir, stack_resized
from training.spin.network import (BUNDLED_CONFIG, CLASSES, FAMILY_NAME, INPUT_SIZE, NAME, PREPROCESS, TASK,
                                   build_model, input_spec)
from training.spin.options import SpinOptions
from training.spin.prepare import prepared_inputs, split_parts

DEFAULT_EPOCHS = 60
DEFAULT_BATCH = 32
DEFAULT_LR = 1e-3
AUGMENT = {"rotate_deg": 45.0, "flip": "horizontal_and_vertical", "zoom": 0.25, "shift": 0.05}


def architecture(fam: SpinOptions) -> dict[str, Any]:
    """The `build_model` settings: the chosen architecture, then any single setting given with --set."""
    if fam.arch == "bundled":
        cfg = dict(BUNDLED_CONFIG)
    else:  # "seed": the exact sdss_CNN
        cfg = {"width": 1.0, "head": "flatten", "first_stride": 1, "conv_dropout": None}
    for key in ("width", "head", "first_stride", "conv_dropout"):
        if getattr(fam, key) is not None:
            cfg[key] = getattr(fam, key)
    return {"arch": fam.arch, **cfg}


def train(opts: TrainOptions, fam: SpinOptions) -> dict[str, Any]:
    """Train the spin CNN on a catalogue + stamps directory and save the artifact; returns a summary."""
    from training.augment import augmentation
    from training.cnn import configure_device, fit, inference_rate, predict_array, save_artifact
    from training.evaluation import regression_report
    from training.plots import write_training_plots

    seed = int(opts.seed)
    ds = read_spin_dir(opts.data, fam.catalogue)
    if len(ds) < 10:
        raise StampflowError(f"{ds.catalogue}: {len(ds)} usable rows; the spin CNN needs at least 10")
    device = configure_device(opts.mixed_precision, seed=seed)
    fractions = fam.fractions
    max_images = fam.max_images
    parts = split_parts(ds.targets, fractions, seed, max_images)
    say(f"spin: {ds.catalogue.name}: {len(ds)} stamps ({ds.skipped} rows skipped), split "
        f"{'/'.join(str(len(p)) for p in parts)}", quiet=fam.quiet)
    x_tr, x_va, x_te = (prepared_inputs(ds, p) for p in parts)
    y_tr, y_va, y_te = (ds.targets[p].astype(np.float32) for p in parts)

    import keras

    cfg = architecture(fam)
    if opts.from_model:
        from training.cnn import freeze_first, load_keras_model

        model, src = load_keras_model(opts.from_model, [opts.registry_root])
        frozen = freeze_first(model, opts.freeze) if opts.freeze else []
        transfer = {"from": f"{src.name}@{src.version}", "frozen_layers": frozen}
    else:
        model = build_model(width=cfg["width"], head=cfg["head"], first_stride=cfg["first_stride"],
                            conv_dropout=cfg["conv_dropout"], seed=seed)
        transfer = None
    lr = opts.learning_rate or DEFAULT_LR
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="mse",
                  metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    epochs = opts.epochs or DEFAULT_EPOCHS
    batch = opts.batch_size or DEFAULT_BATCH
    patience = fam.patience
    result = fit(model, (x_tr, y_tr), (x_va, y_va), epochs=epochs, batch_size=batch,
                 augment=augmentation(seed=seed, **AUGMENT), seed=seed, desc=NAME, patience=patience or None)

    p_te = predict_array(model, x_te)[:, 0]
    p_va = predict_array(model, x_va)[:, 0]
    test = regression_report(y_te, p_te, CLASSES)
    val = regression_report(y_va, p_va, CLASSES)
    baseline = float(np.mean((y_te - y_tr.mean()) ** 2))  # predicting the training mean
    rate = inference_rate(model, (INPUT_SIZE, INPUT_SIZE, 3), repeats=3)
    say(f"spin test: MSE {test['mse']:.4f} (mean predictor {baseline:.4f}), RMSE {test['rmse']:.4f}, "
        f"Pearson r {test['pearson_r']:.3f}; train {result.images_per_s:.0f} img/s, inference {rate:.0f} img/s "
        "at batch 256", quiet=fam.quiet)
    training_data = {"catalogue": str(ds.catalogue.resolve()), "columns": ds.columns, "n_images": len(ds),
                     "rows_skipped": ds.skipped, "lambda_R": {"mean": float(ds.targets.mean()),
                                                              "std": float(ds.targets.std())},
                     "mock": ds.mock}
    split = {"method": "stratified by lambda_R quintiles", "seed": seed, "max_images": max_images,
             "fractions": dict(zip(("train", "validation", "test"), fractions)),
             "counts": {k: int(len(p)) for k, p in zip(("train", "validation", "test"), parts)}}
    metrics = {"test": test, "validation": val, "test_mse_of_mean_predictor": baseline,
               "inference_images_per_s_batch256": rate, "inference_device": device["device"]}
    training = result.record(
        epochs=epochs, batch_size=batch, optimizer="Adam", learning_rate=lr, loss="mse",
        early_stopping={"monitor": "val_loss", "patience": patience}, augmentation=AUGMENT, architecture=cfg,
        device=device, transfer=transfer)
    extra = {"architecture_note": "sdss_CNN (Duckworth): conv 64/96/128/192/192 (6,5,2,2,2), dropout "
                                  "0.5/0.25x4, max-pool after conv2 and conv3, dense 128-64-1; bundled = half "
                                  "width, stride-2 conv1, global average pooling, conv dropout 0.1"}
    with tempfile.TemporaryDirectory() as tmp:
        extra["plots"] = write_training_plots(result.history, Path(tmp), test, TASK, CLASSES, true=y_te, pred=p_te,
                                              name=NAME)
        path = save_artifact(model, name=fam.name or NAME, family=FAMILY_NAME, version=opts.version,
                             out_root=opts.out_root, task=TASK, classes=CLASSES, input_spec=input_spec(),
                             preprocess=PREPROCESS, training_data=training_data, split=split, metrics=metrics,
                             trained_on="mock" if ds.mock else "real", training=training, plots_from=Path(tmp),
                             extra=extra)
    say(f"saved {path}", quiet=fam.quiet)
    from training.uncertainty import attach_after_training

    stamps = [stack_resized([ds.images[i] for i in p], input_spec()) for p in parts]  # before the recipe
    uncertainty = attach_after_training(path, x_fit=stamps[0], x_val=stamps[1], y_val=y_va, x_test=stamps[2],
                                        y_test=y_te, say=lambda m: say(m, quiet=fam.quiet))
    return {"artifact": str(path), "trained_on": "mock" if ds.mock else "real", "uncertainty": uncertainty,
            "test": {k: test[k] for k in ("n", "mse", "rmse", "mae", "pearson_r")}, "test_mse_of_mean": baseline,
            "train_images_per_s": result.images_per_s, "inference_images_per_s": rate,
            "epochs_run": result.epochs_run, "parameters": int(model.count_params())}
