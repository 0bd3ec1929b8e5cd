"""Train and evaluate the CANDELS -> CLASH morphology CNN (``stampflow train morphology`` / ``stampflow evaluate``).

Pérez-Carrasco et al. (2019) trained a CNN on ~7,500 CANDELS GOODS-S F160W stamps with expert vote fractions
(Kartaltepe et al. 2015) and fine-tuned it on 1,600 CLASH stamps (100 per filter), reaching an RMSE of 0.0991
on the CLASH test set. Here:

1. `training.morphology_data.load_morphology` joins a label CSV with ``<ID>.fits`` stamps (reporting rows
   without stamps and stamps without rows) and prepares every stamp on the serving path: resized whole to
   48x48 (`InputSpec.geometry = "resize"`: stamps are cut at four Petrosian radii), then the asinh recipe;
2. a seeded split, 70/15/15, stratified by the top class and grouped by galaxy (CLASH labels the same galaxy
   in several filters; all its rows go to one part);
3. the network (`models.morphology.build_model`) predicts the five fractions with a softmax and is trained
   with soft-target categorical cross-entropy (``--set loss=crossentropy``, default; the KL divergence to the
   vote fractions) or the squared error (``loss=mse``, what the paper's RMSE loss minimises); the 8 flips and
   rotations by 90 degrees on the fly; Adam with cosine decay; early stopping on the validation loss;
4. transfer: ``--from MODEL --freeze N`` starts from a trained model; a model with C input filters is made from
   a single-band one by `models.morphology.expand_input_channels` (first-layer kernel W/C per channel, so C
   identical channels reproduce the source exactly), then the first N weighted layers are frozen;
5. metrics: RMSE over all fractions (and the paper's form, the mean of per-stamp RMSEs), RMSE per class,
   top-class accuracy with a Wilson interval and its confusion matrix, the RMSE of always predicting the
   training mean (a baseline to beat), and the serving throughput; curves, scatter and confusion PNGs;
6. the artifact is reloaded through `models.cnn.KerasCNN` and the test set re-scored through ``predict_batch``.

CLASH options: ``--set filters=f814w`` trains a one-filter model, ``filters=all`` (default) or a list stacks
those filters as channels (a combined model). ``--set study=transfer`` (needs ``--from``) runs the comparison
of docs/morphology.md with one budget: from scratch and transferred, one filter pooled, per filter, and
combined; the transferred combined model is saved.

Other ``--set`` options: ``dataset`` (candels|clash), ``name``, ``loss``, ``patience`` (0 = fixed epochs),
``limit`` (first N label rows, smoke runs), ``size`` (input side).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.base import InputSpec, ModelInfo
from models.morphology import (CANDELS_BAND, CLASH_FILTERS, CLASSES, INPUT_SIZE, PREPROCESS, TASK, build_model,
                               expand_input_channels, input_spec_dict)
from schemas.errors import StampflowError
from training.cnn import (TrainOptions, classification_report, configure_device, fit, freeze_first, inference_rate,
                          load_family_model, load_keras_model, predict_array, save_artifact, weighted_layers,
                          write_training_plots)
from training.morphology_data import (MorphologyData, grouped_stratified_split, labels_file, load_morphology,
                                      parse_filters, read_labels)

FAMILY = "morphology"
SPLIT = (0.70, 0.15, 0.15)
# Budgets sized for two shared CPU cores (~400 single-band images per CPU-second in training): CANDELS ~3.5 CPU
# minutes; the CLASH study's six arms ~6.
DEFAULTS = {"candels": {"epochs": 16, "batch": 64, "lr": 1e-3, "patience": 5},
            "clash": {"epochs": 20, "batch": 32, "lr": 1e-3, "patience": 6}}
TRANSFER_LR = 3e-4
AUGMENT: dict[str, Any] = {"kind": "dihedral", "transforms": "random vertical flip, horizontal flip and transpose "
                                                             "per batch: the 8 symmetries of the square"}
LOSSES = ("crossentropy", "mse")
PAPER_RMSE = 0.0991
CITATIONS = {
    "candels": "Kartaltepe et al. 2015, ApJS 221, 11 (CANDELS GOODS-S visual classifications, via "
               "Pérez-Carrasco et al. 2019, CANDELS_labels.csv)",
    "clash": "Pérez-Carrasco et al. 2019, PASP 131, 108002 (CLASH visual classifications, CLASH_labels.csv)",
}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- metrics


def fractions_report(y_true: np.ndarray, y_pred: np.ndarray, baseline: np.ndarray | None = None) -> dict[str, Any]:
    """RMSE (all fractions; and the paper's mean per-stamp RMSE), per-class RMSE, top-class accuracy + matrix."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 2 or t.shape[1] != len(CLASSES):
        raise ValueError(f"expected (N, {len(CLASSES)}) arrays, got {t.shape} and {p.shape}")
    err = p - t
    n = len(t)
    out: dict[str, Any] = {
        "n": int(n),
        "rmse": float(np.sqrt(np.mean(err ** 2))) if n else float("nan"),
        # Keras computed the paper's loss per stamp (sqrt of the mean over the 5 fractions), then averaged.
        "rmse_paper": float(np.mean(np.sqrt(np.mean(err ** 2, axis=1)))) if n else float("nan"),
        "mae": float(np.mean(np.abs(err))) if n else float("nan"),
        "rmse_per_class": {c: float(np.sqrt(np.mean(err[:, i] ** 2))) if n else float("nan")
                           for i, c in enumerate(CLASSES)},
    }
    cls = classification_report(t.argmax(axis=1), p.argmax(axis=1), CLASSES) if n else None
    if cls is not None:
        out["top_class_accuracy"] = cls["accuracy"]
        out["top_class_accuracy_ci95"] = cls["accuracy_ci95"]
        out["confusion_matrix"] = cls["confusion_matrix"]
        out["per_class"] = cls["per_class"]
    if baseline is not None and n:
        b = np.broadcast_to(np.asarray(baseline, dtype=np.float64), t.shape)
        out["rmse_predict_training_mean"] = float(np.sqrt(np.mean((b - t) ** 2)))
    return out


def _short(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("n", "rmse", "rmse_paper", "top_class_accuracy", "top_class_accuracy_ci95", "rmse_predict_training_mean",
            "rmse_per_class")
    return {k: r[k] for k in keep if k in r}


# ------------------------------------------------------------------------------------------------- training


def _compile(model, lr: float, total_steps: int, loss: str) -> None:
    import keras

    if loss not in LOSSES:
        raise StampflowError(f"--set loss={loss}: choose {' or '.join(LOSSES)}")
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1), alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="categorical_crossentropy" if loss == "crossentropy" else "mean_squared_error",
                  metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])


def dihedral_augmentation(seed: int = 0):
    """Random flips and transposes: all 8 rotations by multiples of 90 degrees and their mirror images.

    Galaxy morphology does not depend on orientation. These are exact pixel permutations (no interpolation, no
    invented corners) and cost next to nothing, unlike `training.cnn.augmentation`'s arbitrary-angle rotation
    with zoom and shift, which added a quarter to the CPU time of an epoch here and gave a worse test RMSE after
    the same 8 CANDELS epochs (0.179 vs 0.145, both with batch normalisation; see docs/morphology.md).
    """
    import keras
    import tensorflow as tf

    class Dihedral(keras.layers.Layer):
        def __init__(self, seed: int, **kw):
            super().__init__(**kw)
            self.gen = keras.random.SeedGenerator(seed)

        def call(self, x, training=True):
            if not training:
                return x
            r = keras.random.uniform((3,), seed=self.gen)
            x = tf.cond(r[0] < 0.5, lambda: tf.reverse(x, axis=[1]), lambda: x)
            x = tf.cond(r[1] < 0.5, lambda: tf.reverse(x, axis=[2]), lambda: x)
            return tf.cond(r[2] < 0.5, lambda: tf.transpose(x, [0, 2, 1, 3]), lambda: x)

    return Dihedral(seed, name="dihedral_augmentation")


def _fit(model, x_fit, y_fit, x_val, y_val, *, epochs: int, batch: int, lr: float, loss: str, seed: int,
         patience: int, desc: str):
    _compile(model, lr, epochs * int(np.ceil(len(x_fit) / batch)), loss)
    return fit(model, (x_fit, y_fit), (x_val, y_val), epochs=epochs, batch_size=batch,
               augment=dihedral_augmentation(seed), seed=seed, desc=desc, patience=patience or None)


def _source(opts: TrainOptions):
    roots = [Path(opts.out_root)] if opts.out_root else []
    source, info = load_keras_model(opts.from_model, roots)
    if info.family != FAMILY:
        raise StampflowError(f"--from {opts.from_model} is a '{info.family}' model, not a morphology one")
    return source, info


def transfer_model(source, channels: int, freeze: int, seed: int):
    """``source`` widened to ``channels`` input filters (see `expand_input_channels`), first ``freeze`` weighted
    layers frozen. Returns (model, frozen layer names)."""
    model = expand_input_channels(source, channels, seed=seed)
    return model, freeze_first(model, freeze)


def _served_throughput(model, x: np.ndarray) -> float:
    """Images/s of the serving tf.function at batch 256 (`training.cnn.inference_rate`)."""
    return inference_rate(model, x.shape[1:]) if len(x) else float("nan")


def _split(data: MorphologyData, seed: int) -> dict[str, np.ndarray]:
    parts = grouped_stratified_split(data.top, data.groups, SPLIT, seed)
    return dict(zip(("fit", "validation", "test"), parts))


def _data_name(opts: TrainOptions) -> str:
    ds = (opts.get("dataset") or "").lower() or None
    if ds is None:
        ds = read_labels(labels_file(opts.data)).dataset
    if ds not in DEFAULTS:
        raise StampflowError(f"--set dataset={ds}: choose candels or clash")
    return ds


def train(opts: TrainOptions) -> dict[str, Any]:
    t_start = time.perf_counter()
    dataset = _data_name(opts)
    seed = int(opts.seed)
    device = configure_device(opts.mixed_precision, seed=seed)
    if (opts.get("study") or "") == "transfer":
        return _transfer_study(opts, dataset, seed, device, t_start)
    if opts.get("study"):
        raise StampflowError(f"--set study={opts.get('study')}: the only study is 'transfer'")
    d = DEFAULTS[dataset]
    epochs = opts.epochs or d["epochs"]
    batch = opts.batch_size or d["batch"]
    lr = opts.learning_rate or (TRANSFER_LR if opts.from_model else d["lr"])
    patience = opts.get("patience", d["patience"], int)
    loss = opts.get("loss", "crossentropy")

    source = source_info = None
    size = opts.get("size", INPUT_SIZE, int)
    if opts.from_model:
        source, source_info = _source(opts)
        size = int(source.inputs[0].shape[1])
    elif opts.freeze:
        raise StampflowError("--freeze needs --from MODEL")
    filters = parse_filters(opts.get("filters", "all")) if dataset == "clash" else (CANDELS_BAND,)
    stack = "channels" if dataset == "clash" and len(filters) > 1 else "row"
    raw = load_morphology(opts.data, dataset, filters=filters, stack=stack, size=size, recipe=None,
                          limit=opts.get("limit", None, int), progress=True)
    data = raw.with_recipe(PREPROCESS)
    if len(data.ids) < 20:
        raise StampflowError(f"only {len(data.ids)} labelled stamps in {opts.data}: too few to split and train")
    parts = _split(data, seed)
    fit_d, val_d, test_d = (data.subset(parts[k]) for k in ("fit", "validation", "test"))
    channels = data.channels
    say(f"morphology: {dataset} {'+'.join(channels)} ({len(channels)} channel(s)), fit {len(fit_d.ids)} / "
        f"validation {len(val_d.ids)} / test {len(test_d.ids)}; joined {data.report.n_joined} of "
        f"{data.report.n_labels} label rows, {len(data.report.stamps_without_labels)} stamps without labels; "
        f"device {device['device']}")

    transfer = None
    if source is not None:
        model, frozen = transfer_model(source, len(channels), opts.freeze or 0, seed)
        transfer = {"from": f"{source_info.name}@{source_info.version}", "from_path": str(source_info.path),
                    "source_input_spec": source_info.metadata.get("input_spec"),
                    "source_trained_on": source_info.metadata.get("trained_on"),
                    "channel_expansion": _expansion_note(source, len(channels)),
                    "freeze": int(opts.freeze or 0), "frozen_layers": frozen,
                    "weighted_layers": [layer.name for layer in weighted_layers(model)]}
        say(f"morphology: transfer from {transfer['from']}; {transfer['channel_expansion']}; "
            f"frozen {frozen or 'nothing'}")
    else:
        model = build_model(channels=len(channels), size=size, seed=seed)
    result = _fit(model, fit_d.x, fit_d.y, val_d.x, val_d.y, epochs=epochs, batch=batch, lr=lr, loss=loss, seed=seed,
                  patience=patience, desc=f"morphology {dataset}")

    pred = predict_array(model, test_d.x)
    mean_fit = fit_d.y.mean(axis=0)
    report = fractions_report(test_d.y, pred, mean_fit)
    val_report = fractions_report(val_d.y, predict_array(model, val_d.x), mean_fit)
    per_filter = _per_filter(test_d, pred) if dataset == "clash" else None
    served_ips = _served_throughput(model, test_d.x)

    name = opts.get("name") or _default_name(dataset, channels)
    metrics = {"test": report, "test_rmse": report["rmse"], "test_rmse_paper": report["rmse_paper"],
               "test_top_class_accuracy": report.get("top_class_accuracy"),
               "validation": _short(val_report), "test_per_row_filter": per_filter,
               "paper_clash_test_rmse": PAPER_RMSE,
               "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips,
               "note": "scores on mock stamps drawn from the real label rows: they show the pipeline learns the "
                       "label-driven morphologies, not how it would score on the real CANDELS/CLASH images"}
    training = _training_record(result, epochs, batch, lr, loss, patience, seed, device, transfer,
                                "models.morphology.build_model" + (" via expand_input_channels" if transfer else ""))
    training_data = _training_data(opts.data, data, dataset)
    split = _split_meta(data, parts, seed)
    spec = InputSpec.from_dict(input_spec_dict(channels, size))
    with tempfile.TemporaryDirectory(prefix="stampflow-morphology-plots-") as tmp:
        plots = write_training_plots(result.history, Path(tmp), report, TASK, CLASSES, true=test_d.y, pred=pred,
                                     name=name)
        out = save_artifact(model, name=name, family=FAMILY, version=opts.version,
                            out_root=opts.out_root, task=TASK, classes=CLASSES, input_spec=spec,
                            preprocess=dict(PREPROCESS),
                            training_data=training_data, split=split, metrics=metrics, trained_on="mock",
                            training=training, plots_from=Path(tmp), extra={"plots": plots})
    _check_served(out, raw.subset(parts["test"]), pred)
    say(f"morphology: test RMSE {report['rmse']:.4f} (paper form {report['rmse_paper']:.4f}; predicting the "
        f"training mean: {report['rmse_predict_training_mean']:.4f}), top-class accuracy "
        f"{report['top_class_accuracy']:.3f}, n={report['n']}; {result.epochs_run} epochs at "
        f"{result.images_per_s:.0f} images/s; serving {served_ips:.0f} images/s at batch 256; artifact {out}")
    return {"name": name, "version": out.name, "artifact": str(out), "dataset": dataset, "channels": list(channels),
            "metrics": {"test": _short(report), "validation": _short(val_report), "test_per_row_filter": per_filter,
                        "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips},
            "split": {k: v for k, v in split.items() if not k.endswith("_ids")}, "transfer": transfer,
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "trained_on": "mock",
            "seconds": time.perf_counter() - t_start}


def _default_name(dataset: str, channels: Sequence[str]) -> str:
    if dataset == "candels":
        return "morphology-candels"
    return "morphology-clash" if len(channels) > 1 else f"morphology-clash-{channels[0].lower()}"


def _training_record(result, epochs, batch, lr, loss, patience, seed, device, transfer, architecture) -> dict:
    return result.record(
        epochs=epochs, batch_size=batch, optimizer="Adam", learning_rate=lr,
        schedule="cosine decay to 5% over epochs_max", loss=_loss_note(loss),
        early_stopping={"monitor": "val_loss", "patience": patience, "restore_best_weights": True}
        if patience else None, augmentation=AUGMENT, seed=seed, device=device, transfer=transfer,
        architecture=architecture)


def _loss_note(loss: str) -> str:
    return ("categorical cross-entropy against the vote fractions (soft targets: KL divergence + constant)"
            if loss == "crossentropy" else "mean squared error of the fractions (the square of the paper's RMSE)")


def _expansion_note(source, channels: int) -> str:
    src = int(source.inputs[0].shape[-1])
    if src == channels:
        return f"input channels kept ({channels})"
    return (f"first convolution widened from {src} to {channels} channels: each channel's kernel is the source "
            f"kernel summed over its channels / {channels}, so {channels} identical channels give the source output")


def _per_filter(test: MorphologyData, pred: np.ndarray) -> dict[str, dict[str, Any]]:
    out = {}
    bands = np.array(test.row_bands)
    for b in CLASH_FILTERS:
        m = bands == b
        if m.any():
            r = fractions_report(test.y[m], pred[m])
            out[b] = {"n": r["n"], "rmse": r["rmse"], "top_class_accuracy": r["top_class_accuracy"]}
    return out


def _training_data(path: Path, data: MorphologyData, dataset: str) -> dict[str, Any]:
    return {"dataset": dataset, "path": str(Path(path).resolve()), "labels": CITATIONS[dataset],
            "labels_real": True, "images": "mock stamps drawn from each real label row (training.morphology_data)",
            "filters": list(data.bands), "stack": data.stack, "rows": len(data.ids),
            "galaxies": len(set(data.groups)), "join": data.report.as_dict(),
            "skipped": {k: len(v) for k, v in data.skipped.items()},
            "top_class_counts": {c: int((data.top == i).sum()) for i, c in enumerate(CLASSES)},
            "mean_fractions": {c: float(v) for c, v in zip(CLASSES, data.y.mean(axis=0))}}


def _split_meta(data: MorphologyData, parts: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    return {"method": "seeded 70/15/15, stratified by top class, grouped by galaxy (all rows of a galaxy in one "
                      "part)", "seed": seed,
            "counts": {k: int(len(v)) for k, v in parts.items()},
            "galaxies": {k: len({data.groups[i] for i in v}) for k, v in parts.items()},
            "validation_ids": [data.ids[i] for i in parts["validation"]],
            "test_ids": [data.ids[i] for i in parts["test"]]}


def _check_served(artifact: Path, test_raw: MorphologyData, pred: np.ndarray) -> None:
    """Re-score the test set through KerasCNN.predict_batch on geometry-only inputs, as the worker would."""
    served = _served_predictions(artifact, test_raw.x)
    if len(served) and float(np.abs(served - pred).max()) > 1e-3:
        raise StampflowError(f"served predictions differ from training-time ones by up to "
                             f"{float(np.abs(served - pred).max()):.3g}")


def _served_predictions(artifact: Path, x_geom: np.ndarray) -> np.ndarray:
    from models.cnn import KerasCNN

    meta = json.loads((artifact / "metadata.json").read_text())
    clf = KerasCNN.load(ModelInfo(meta["name"], meta["version"], meta["family"], artifact, meta))
    out = [clf.predict_batch(x_geom[i:i + 256]).probabilities for i in range(0, len(x_geom), 256)]
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


# --------------------------------------------------------------------------------------------- transfer study


def _transfer_study(opts: TrainOptions, dataset: str, seed: int, device: dict[str, Any],
                    t_start: float) -> dict[str, Any]:
    """Scratch vs transferred, one filter pooled vs per filter vs combined, on one CLASH split and budget."""
    if dataset != "clash":
        raise StampflowError("--set study=transfer runs on CLASH data (with --from the CANDELS model)")
    if not opts.from_model:
        raise StampflowError("--set study=transfer needs --from MODEL (the CANDELS model to transfer)")
    source, source_info = _source(opts)
    if int(source.inputs[0].shape[-1]) != 1:
        raise StampflowError(f"the study transfers a single-band model; {source_info.name} takes "
                             f"{int(source.inputs[0].shape[-1])} channels")
    size = int(source.inputs[0].shape[1])
    filters = parse_filters(opts.get("filters", "all"))
    if len(filters) < 2:
        raise StampflowError("the study compares filters: give at least two (default all 16)")
    d = DEFAULTS["clash"]
    epochs = opts.epochs or d["epochs"]
    batch = opts.batch_size or d["batch"]
    lr_scratch = opts.learning_rate or d["lr"]
    lr_transfer = opts.learning_rate or TRANSFER_LR
    patience = opts.get("patience", d["patience"], int)
    loss = opts.get("loss", "crossentropy")
    freeze = int(opts.freeze or 0)

    raw = load_morphology(opts.data, dataset, filters=filters, stack="channels", size=size, recipe=None,
                          limit=opts.get("limit", None, int), progress=True)
    data = raw.with_recipe(PREPROCESS)
    parts = _split(data, seed)
    fit_i, val_i, test_i = parts["fit"], parts["validation"], parts["test"]
    own = np.array([filters.index(b) for b in data.row_bands])

    def single(idx: np.ndarray) -> np.ndarray:
        """Each row's own filter as one channel (per-channel normalisation: the same as a one-filter load)."""
        return np.ascontiguousarray(data.x[idx, :, :, own[idx]][..., None])

    mean_fit = data.y[fit_i].mean(axis=0)
    test = data.subset(test_i)
    say(f"morphology study: CLASH {len(filters)} filters, fit {len(fit_i)} / validation {len(val_i)} / test "
        f"{len(test_i)} rows; budget {epochs} epochs (patience {patience}), batch {batch}, loss {loss}; "
        f"transfer from {source_info.name}@{source_info.version}, freeze {freeze}")
    arms: dict[str, dict[str, Any]] = {}

    # CLASH labels one galaxy in up to 16 filters and the votes differ between filters: a model that sees the
    # galaxy (all filters stacked) cannot know which filter's votes a row holds. Its floor is the RMSE of
    # predicting every row with the mean of its galaxy's rows (an oracle using the labels, for scale only).
    rows_of: dict[str, list[int]] = {}
    for k, g in enumerate(data.groups):
        rows_of.setdefault(g, []).append(k)
    galaxy_mean = np.stack([data.y[rows_of[g]].mean(axis=0) for g in test.groups])
    multi = np.array([len(rows_of[g]) > 1 for g in test.groups])

    def record(arm: str, pred: np.ndarray, runs: list, note: str) -> None:
        rep = fractions_report(test.y, pred, mean_fit)
        by_rows = {name: float(np.sqrt(np.mean((pred[m] - test.y[m]) ** 2))) if m.any() else None
                   for name, m in (("single_row_galaxies", ~multi), ("multi_row_galaxies", multi))}
        arms[arm] = {"note": note, "test": _short(rep), "test_per_row_filter": _per_filter(test, pred),
                     "test_rmse_by_galaxy_rows": by_rows,
                     "epochs_run": [r.epochs_run for r in runs], "seconds": float(sum(r.seconds for r in runs)),
                     "train_images_per_s": float(np.mean([r.images_per_s for r in runs])) if runs else None}
        say(f"  {arm:<22} test RMSE {rep['rmse']:.4f}  top-class accuracy {rep['top_class_accuracy']:.3f}")

    def train_arm(model, x_fit, y_fit, x_val, y_val, lr, desc):
        return _fit(model, x_fit, y_fit, x_val, y_val, epochs=epochs, batch=batch, lr=lr, loss=loss, seed=seed,
                    patience=patience, desc=desc)

    # 0. the CANDELS model as it is, on each row's own filter: what transfer has to improve on
    record("candels-as-is", predict_array(source, single(test_i)), [],
           "source model applied to each row's own filter, no CLASH training")
    # 1-2. one filter per row, all filters pooled in one single-band model (the paper's set-up)
    m = build_model(1, size, seed=seed)
    r = train_arm(m, single(fit_i), data.y[fit_i], single(val_i), data.y[val_i], lr_scratch, "scratch pooled")
    record("scratch-pooled", predict_array(m, single(test_i)), [r], "random init, each row's own filter, one model")
    m, _ = transfer_model(source, 1, freeze, seed)
    r = train_arm(m, single(fit_i), data.y[fit_i], single(val_i), data.y[val_i], lr_transfer, "transfer pooled")
    record("transfer-pooled", predict_array(m, single(test_i)), [r],
           "CANDELS init, each row's own filter, one model for all filters (Pérez-Carrasco et al.)")
    # 3. one transferred model per filter, each on that filter's rows only
    pred = np.zeros_like(test.y)
    runs = []
    bands = np.array(data.row_bands)
    for b in filters:
        f_i, v_i, t_i = (idx[bands[idx] == b] for idx in (fit_i, val_i, test_i))
        if len(t_i) == 0:
            continue
        if len(f_i) < 5 or len(v_i) == 0:
            raise StampflowError(f"filter {b} has {len(f_i)} training and {len(v_i)} validation rows: too few for a "
                                 "per-filter model")
        m, _ = transfer_model(source, 1, freeze, seed)
        runs.append(train_arm(m, single(f_i), data.y[f_i], single(v_i), data.y[v_i], lr_transfer,
                              f"transfer {b.lower()}"))
        pred[np.searchsorted(test_i, t_i)] = predict_array(m, single(t_i))
    record("transfer-per-filter", pred, runs, "CANDELS init, one model per filter trained on that filter's rows")
    # 4-5. all filters stacked as channels
    m = build_model(len(filters), size, seed=seed)
    r = train_arm(m, data.x[fit_i], data.y[fit_i], data.x[val_i], data.y[val_i], lr_scratch, "scratch combined")
    record("scratch-combined", predict_array(m, data.x[test_i]), [r], "random init, the galaxy's filters as channels")
    model, frozen = transfer_model(source, len(filters), freeze, seed)
    result = train_arm(model, data.x[fit_i], data.y[fit_i], data.x[val_i], data.y[val_i], lr_transfer,
                       "transfer combined")
    pred = predict_array(model, data.x[test_i])
    record("transfer-combined", pred, [result], "CANDELS init widened to the galaxy's filters as channels")

    report = fractions_report(test.y, pred, mean_fit)
    val_report = fractions_report(data.y[val_i], predict_array(model, data.x[val_i]), mean_fit)
    served_ips = _served_throughput(model, data.x[test_i])
    study = {"budget": {"epochs_max": epochs, "patience": patience, "batch_size": batch, "loss": loss,
                        "learning_rate_scratch": lr_scratch, "learning_rate_transfer": lr_transfer, "freeze": freeze,
                        "augmentation": AUGMENT, "seed": seed},
             "split": "one galaxy-grouped split for every arm; each arm scored on the same test rows",
             "filters": list(filters), "arms": arms, "paper_clash_test_rmse": PAPER_RMSE,
             "test_rows_in_multi_row_galaxies": int(multi.sum()),
             "galaxy_level_floor_rmse": float(np.sqrt(np.mean((galaxy_mean - test.y) ** 2))),
             "galaxy_level_floor_note": "RMSE of predicting each test row with the mean votes of its galaxy's rows "
                                        "(all filters): the best any galaxy-level (combined) model can do",
             "caveat": "mock stamps drawn from the real label rows; compare arms with each other, not with the paper"}
    name = opts.get("name") or "morphology-clash"
    transfer = {"from": f"{source_info.name}@{source_info.version}", "from_path": str(source_info.path),
                "source_input_spec": source_info.metadata.get("input_spec"),
                "source_trained_on": source_info.metadata.get("trained_on"),
                "channel_expansion": _expansion_note(source, len(filters)), "freeze": freeze, "frozen_layers": frozen,
                "weighted_layers": [layer.name for layer in weighted_layers(model)]}
    metrics = {"test": report, "test_rmse": report["rmse"], "test_rmse_paper": report["rmse_paper"],
               "test_top_class_accuracy": report.get("top_class_accuracy"), "validation": _short(val_report),
               "test_per_row_filter": _per_filter(test, pred), "paper_clash_test_rmse": PAPER_RMSE,
               "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips,
               "note": "scores on mock stamps drawn from the real label rows (see training_data)"}
    training = _training_record(result, epochs, batch, lr_transfer, loss, patience, seed, device, transfer,
                                "models.morphology.build_model via expand_input_channels")
    spec = InputSpec.from_dict(input_spec_dict(filters, size))
    with tempfile.TemporaryDirectory(prefix="stampflow-morphology-plots-") as tmp:
        plots = write_training_plots(result.history, Path(tmp), report, TASK, CLASSES, true=test.y, pred=pred,
                                     name=name)
        plots["study"] = plot_study(arms, filters, Path(tmp) / "transfer_study.png",
                                    study["galaxy_level_floor_rmse"]).name
        out = save_artifact(model, name=name, family=FAMILY, version=opts.version,
                            out_root=opts.out_root, task=TASK, classes=CLASSES, input_spec=spec,
                            preprocess=dict(PREPROCESS), training_data=_training_data(opts.data, data, dataset),
                            split=_split_meta(data, parts, seed), metrics=metrics, trained_on="mock",
                            training=training, plots_from=Path(tmp), extra={"plots": plots, "study": study})
    _check_served(out, raw.subset(test_i), pred)
    say(f"morphology study: saved the transferred combined model {out}; serving {served_ips:.0f} images/s")
    return {"name": name, "version": out.name, "artifact": str(out), "dataset": dataset, "study": study,
            "trained_on": "mock", "seconds": time.perf_counter() - t_start}


def plot_study(arms: dict[str, dict[str, Any]], filters: Sequence[str], path: Path,
               galaxy_floor: float | None = None) -> Path:
    """Test RMSE per arm (bars), and per row filter for the arms that train on CLASH (lines)."""
    from training.cnn import _pyplot

    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110, gridspec_kw={"width_ratios": [1, 2]})
    names = list(arms)
    vals = [arms[n]["test"]["rmse"] for n in names]
    a1.barh(names, vals, color=["0.6" if n == "candels-as-is" else "C0" for n in names])
    for y, v in enumerate(vals):
        a1.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    base = next(iter(arms.values()))["test"].get("rmse_predict_training_mean")
    if base is not None:
        a1.axvline(base, color="k", ls=":", lw=0.8, label="predict training mean")
    if galaxy_floor is not None:
        a1.axvline(galaxy_floor, color="C2", ls="-.", lw=0.8, label="floor of galaxy-level models")
    a1.axvline(PAPER_RMSE, color="C3", ls="--", lw=0.8, label="paper (real CLASH)")
    a1.set_xlabel("test RMSE (all fractions)")
    a1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.45, -0.2), ncol=2)
    x = np.arange(len(filters))
    for n in names:
        if n == "candels-as-is":
            continue
        per = arms[n]["test_per_row_filter"]
        a2.plot(x, [per.get(b, {}).get("rmse", np.nan) for b in filters], marker="o", ms=3, label=n)
    a2.set_xticks(x, list(filters), rotation=60, fontsize=7)
    a2.set_ylabel("test RMSE of the rows labelled in the filter")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    fig.suptitle("CLASH (mock stamps, real labels): transfer from CANDELS, one budget", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------- evaluate


def evaluate(model: str, data: Path, options: dict[str, str]) -> dict[str, Any]:
    """Score a morphology artifact on a CANDELS or CLASH stamp set through ``KerasCNN.predict_batch``.

    The model's channels decide the rows: F160W on CANDELS (or CLASH rows labelled in F160W); one CLASH filter:
    the rows labelled in it; several: every row of those filters with the galaxy's stack. Options: ``split``
    (``test``/``validation``: the artifact's own held-out IDs; ``all``; default ``test`` when the data holds
    them, else ``all``), ``dataset``, ``limit``, ``batch_size``.
    """
    clf, options = load_family_model(model, FAMILY, options, {"split", "dataset", "limit", "batch_size"})
    info = clf.info
    spec = clf.input_spec
    channels = tuple(spec.channels or ())
    dataset = (options.get("dataset") or read_labels(labels_file(data)).dataset).lower()
    if dataset == "candels" and channels != (CANDELS_BAND,):
        raise StampflowError(f"{info.name} takes {'+'.join(channels)}; CANDELS stamps are F160W only")
    stack = "channels" if len(channels) > 1 else "row"
    raw = load_morphology(data, dataset, filters=channels if dataset == "clash" else None, stack=stack,
                          size=spec.size, recipe=None, limit=int(options["limit"]) if "limit" in options else None)
    meta_split = info.metadata.get("split") or {}
    held = {"test": set(meta_split.get("test_ids") or []), "validation": set(meta_split.get("validation_ids") or [])}
    trained_on_this = (info.metadata.get("training_data") or {}).get("dataset") == dataset
    split = options.get("split") or ("test" if held["test"] & set(raw.ids) else "all")
    if split in held:
        rows = np.array([k for k, i in enumerate(raw.ids) if i in held[split]], dtype=int)
    elif split == "all":
        rows = np.arange(len(raw.ids))
    else:
        raise StampflowError(f"--set split={split}: choose test, validation or all")
    sub = raw.subset(rows)
    if not len(sub.ids):
        raise StampflowError(f"no labelled stamps of {'+'.join(channels)} in {data} (split {split})")
    batch = int(options.get("batch_size", 256))
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
        result["per_row_filter"] = _per_filter(sub, probs)
    return result
