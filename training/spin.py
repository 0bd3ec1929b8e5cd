"""Train and evaluate the SDSS spin CNN (``stampflow train spin`` / ``stampflow evaluate spin``).

Training (`train`), following sdss_CNN (see models/spin.py):

1. read the catalogue and its RGB stamps (`training.spin_data.read_spin_dir`; ``--set catalogue=FILE``);
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
settings.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.spin import (BUNDLED_CONFIG, CLASSES, INPUT_SIZE, NAME, PREPROCESS, TASK, build_model, input_spec)
from schemas.errors import StampflowError
from training.spin_data import SpinSet, read_spin_dir, stack_resized

FAMILY = "spin"
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)
DEFAULT_EPOCHS = 60
DEFAULT_BATCH = 32
DEFAULT_PATIENCE = 10
DEFAULT_LR = 1e-3
AUGMENT = {"rotate_deg": 45.0, "flip": "horizontal_and_vertical", "zoom": 0.25, "shift": 0.05}


def split_parts(targets: np.ndarray, fractions, seed: int, max_images: int | None = None) -> list[np.ndarray]:
    """Train / validation / test indices, stratified by lambda_R quintiles (optionally a seeded subset)."""
    from training.evaluation import quantile_bins, stratified_split_fractions

    bins = quantile_bins(targets, 5) if len(targets) >= 10 else np.zeros(len(targets), dtype=int)
    parts = stratified_split_fractions(bins, fractions, seed)
    if max_images and max_images < len(targets):
        rng = np.random.default_rng(seed)
        parts = [np.sort(rng.permutation(p)[:max(2, int(round(max_images * f)))]) for p, f in zip(parts, fractions)]
    return parts


def prepared_inputs(ds: SpinSet, rows) -> np.ndarray:
    """Stamps of ``rows`` through the serving geometry (resize to 80) and recipe (1/255): (n, 80, 80, 3)."""
    from models.preprocess import apply_recipe

    return apply_recipe(stack_resized([ds.images[i] for i in rows], input_spec()), PREPROCESS)


def architecture(opts) -> dict[str, Any]:
    arch = opts.get("arch", "bundled")
    if arch == "bundled":
        cfg = dict(BUNDLED_CONFIG)
    elif arch == "seed":
        cfg = {"width": 1.0, "head": "flatten", "first_stride": 1, "conv_dropout": None}
    else:
        raise StampflowError(f"--set arch={arch}: bundled or seed")
    if opts.get("width") is not None:
        cfg["width"] = opts.get("width", cast=float)
    if opts.get("head") is not None:
        cfg["head"] = opts.get("head")
    if opts.get("first_stride") is not None:
        cfg["first_stride"] = opts.get("first_stride", cast=int)
    if opts.get("conv_dropout") is not None:
        cfg["conv_dropout"] = opts.get("conv_dropout", cast=float)
    return {"arch": arch, **cfg}


def train(opts) -> dict[str, Any]:
    """Train the spin CNN on a catalogue + stamps directory and save the artifact; returns a summary."""
    from training.cnn import (augmentation, configure_device, fit, inference_rate, predict_array, save_artifact,
                              write_training_plots)
    from training.evaluation import regression_report

    seed = int(opts.seed)
    quiet = opts.get("quiet", False, bool)

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    ds = read_spin_dir(opts.data, opts.get("catalogue"))
    if len(ds) < 10:
        raise StampflowError(f"{ds.catalogue}: {len(ds)} usable rows; the spin CNN needs at least 10")
    device = configure_device(opts.mixed_precision, seed=seed)
    fractions = opts.fractions(DEFAULT_FRACTIONS)
    max_images = opts.get("max_images", None, int)
    parts = split_parts(ds.targets, fractions, seed, max_images)
    say(f"spin: {ds.catalogue.name}: {len(ds)} stamps ({ds.skipped} rows skipped), split "
        f"{'/'.join(str(len(p)) for p in parts)}")
    x_tr, x_va, x_te = (prepared_inputs(ds, p) for p in parts)
    y_tr, y_va, y_te = (ds.targets[p].astype(np.float32) for p in parts)

    import keras

    cfg = architecture(opts)
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
    patience = opts.get("patience", DEFAULT_PATIENCE, int)
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
        "at batch 256")
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
        path = save_artifact(model, name=opts.get("name") or NAME, family=FAMILY, version=opts.version,
                             out_root=opts.out_root, task=TASK, classes=CLASSES, input_spec=input_spec(),
                             preprocess=PREPROCESS, training_data=training_data, split=split, metrics=metrics,
                             trained_on="mock" if ds.mock else "real", training=training, plots_from=Path(tmp),
                             extra=extra)
    say(f"saved {path}")
    return {"artifact": str(path), "trained_on": "mock" if ds.mock else "real",
            "test": {k: test[k] for k in ("n", "mse", "rmse", "mae", "pearson_r")}, "test_mse_of_mean": baseline,
            "train_images_per_s": result.images_per_s, "inference_images_per_s": rate,
            "epochs_run": result.epochs_run, "parameters": int(model.count_params())}


def evaluate(model: str, data: Path, options: dict[str, str] | None = None) -> dict[str, Any]:
    """Score a spin artifact on a catalogue + stamps directory through `KerasCNN.predict_batch`.

    Options: ``catalogue``, ``limit``, ``part`` (``all`` or ``test``: the artifact's held-out rows).
    """
    from training.cnn import load_family_model
    from training.evaluation import regression_report

    clf, options = load_family_model(model, FAMILY, options, {"catalogue", "limit", "part"})
    info = clf.info
    ds = read_spin_dir(data, options.get("catalogue"), int(options["limit"]) if options.get("limit") else None)
    part = options.get("part", "all")
    if part == "all":
        rows = np.arange(len(ds))
    elif part == "test":
        meta = info.metadata
        if meta.get("training_data", {}).get("n_images") != len(ds):
            raise StampflowError("--set part=test needs the catalogue the model was trained on (row counts differ)")
        sp = meta["split"]
        fr = tuple(sp["fractions"][k] for k in ("train", "validation", "test"))
        rows = split_parts(ds.targets, fr, int(sp["seed"]), sp.get("max_images"))[2]
    else:
        raise StampflowError(f"--set part={part}: all or test")
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
