"""Train and evaluate DeepMerge (``stampflow train deepmerge`` / ``stampflow evaluate deepmerge[-noisy]``).

Training (`train`):

1. read an HLSP file (FITS with its ``MergerLabels`` table, or an ``-x.npy`` + labels ``.npy`` pair; a directory
   picks its one file, ``--set variant=... filters=2|3 format=fits|npy`` choose), shape (N, C, 75, 75) -> NHWC;
2. the serving geometry (`prepare_images`, crop 75) and recipe (`apply_recipe`, asinh) -- the same path the
   worker runs;
3. seeded stratified split, 70/10/20 as in the paper (``--set fractions=0.7,0.1,0.2``). ``--set split=subhalo``
   splits by Illustris subhalo instead (``subsamples_ID.npy`` from ``--set metadata=DIR``, default
   ``$STAMPFLOW_DATA/deepmerge_metadata``): the published set holds four cameras and four flipped/rotated copies
   of every merger, so a row split lets copies of one galaxy sit on both sides;
4. the paper's augmentation on the fly: random flips and 90-degree rotations (the 8 lossless symmetries of a
   square stamp; the authors made flipud/fliplr/rot90/rot180 copies of the mergers offline);
5. Adam + binary cross-entropy with early stopping on the validation loss (the paper's set-up), progress bar,
   training images/s;
6. test metrics through the serving `tf.function` (accuracy with Wilson CI, precision/recall/F1, ROC AUC,
   Brier score, confusion matrix), inference images/s at batch 256, curves / confusion / ROC PNGs;
7. artifact ``deepmerge`` (pristine) or ``deepmerge-noisy`` with ``trained_on`` "mock" when the file is one of
   our mocks (FITS header ``MOCK`` or a ``mock_description.json`` naming it) and the mock parameters recorded.

`evaluate` scores an artifact on any HLSP file (or directory) through `KerasCNN.predict_batch`;
``--set part=test`` scores only the rows the artifact held out (its recorded split, recomputed).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.deepmerge import (CLASSES, INPUT_SIZE, PIXEL_SCALE_NOTE, PREPROCESS, TASK, VARIANTS, build_model,
                              input_spec, model_name)
from schemas.errors import StampflowError
from training.deepmerge_data import (DeepMergeSet, check_labels_against_metadata, read_hlsp, subhalo_groups)

FAMILY = "deepmerge"
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)  # the paper's training / validation / test
DEFAULT_EPOCHS = 40
DEFAULT_BATCH = 128                  # the paper's batch size
DEFAULT_PATIENCE = 8
DEFAULT_LR = 1e-3                    # Keras' Adam default, as in the notebook
# The paper's 0.5 dropout sits before the next block's BatchNorm: training-mode activations then have another
# mean and variance than inference-mode ones (Li et al. 2019), and in runs of a few hundred steps the
# inference outputs collapsed to one class (validation stuck at the class fraction). 0.2 trains and validates
# consistently; --set dropout=0.5 restores the paper's rate.
DEFAULT_DROPOUT = 0.2


# ------------------------------------------------------------------------------------------------ metrics


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN with a single class."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="mergesort")
    s, t = np.asarray(score)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp, fp = np.cumsum(t)[last], np.cumsum(~t)[last]
    return np.r_[0.0, fp / max(fp[-1], 1)], np.r_[0.0, tp / max(tp[-1], 1)]


def binary_report(y: np.ndarray, p_merger: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Classification report at ``threshold`` plus ROC AUC, Brier score and the merger-class P/R/F1 on top."""
    from training.evaluation import classification_report

    y = np.asarray(y, dtype=int)
    pred = (np.asarray(p_merger) >= threshold).astype(int)
    rep = classification_report(y, pred, CLASSES)
    m = rep["per_class"]["merger"]
    rep.update({"threshold": threshold, "roc_auc": roc_auc(y, p_merger),
                "brier": float(np.mean((np.asarray(p_merger, dtype=float) - y) ** 2)) if len(y) else float("nan"),
                "precision": m["precision"], "recall": m["recall"], "f1": m["f1"]})
    return rep


def plot_roc(y: np.ndarray, p: np.ndarray, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fpr, tpr = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(3.8, 3.6), dpi=120)
    ax.plot(fpr, tpr, label=f"AUC {roc_auc(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.7)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (merger recall)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------------- data prep


def prepared_inputs(ds: DeepMergeSet, rows=None) -> np.ndarray:
    """Images of ``rows`` through the serving geometry and recipe: float32 (n, 75, 75, C)."""
    from models.preprocess import apply_recipe, prepare_images

    spec = input_spec(len(ds.filters))
    return apply_recipe(prepare_images(ds.nhwc(rows), spec), PREPROCESS)


def dihedral_augmentation(seed: int = 0):
    """Random flips and 90-degree rotations per image: the 8 symmetries of a square stamp, no interpolation."""
    from models.cnn import tensorflow

    tf = tensorflow()
    import keras

    flip = keras.layers.RandomFlip("horizontal_and_vertical", seed=seed)

    def augment(x, training: bool = True):
        if not training:
            return x
        x = flip(x, training=True)
        # a transpose composed with the two flips reaches all 8 elements of the dihedral group
        swap = tf.random.uniform((tf.shape(x)[0], 1, 1, 1), seed=seed + 1) < 0.5
        return tf.where(swap, tf.transpose(x, (0, 2, 1, 3)), x)

    return augment


def group_split(labels: np.ndarray, groups: np.ndarray, fractions, seed: int) -> list[np.ndarray]:
    """Stratified split of *groups* (all rows of a group land in one part), returned as row indices."""
    from training.evaluation import stratified_split_fractions

    uniq, first = np.unique(groups, return_index=True)
    g_labels = labels[first]
    inconsistent = [g for g in uniq if len(np.unique(labels[groups == g])) > 1]
    if inconsistent:
        raise StampflowError(f"{len(inconsistent)} subhaloes have both labels; cannot split by subhalo")
    parts = stratified_split_fractions(g_labels, fractions, seed)
    return [np.sort(np.flatnonzero(np.isin(groups, uniq[p]))) for p in parts]


def _default_metadata_dir() -> Path:
    root = Path(os.environ.get("STAMPFLOW_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    return root / "deepmerge_metadata"


def split_rows(ds: DeepMergeSet, method: str, fractions, seed: int, metadata: Path | None) -> list[np.ndarray]:
    """Train / validation / test row indices by ``method`` ("stratified" rows or "subhalo" groups)."""
    from training.evaluation import stratified_split_fractions

    if method == "stratified":
        return stratified_split_fractions(ds.labels, fractions, seed)
    if method == "subhalo":
        groups = subhalo_groups(metadata or _default_metadata_dir())
        if len(groups) != len(ds):
            raise StampflowError(f"--set split=subhalo needs one subhalo ID per row: the metadata has "
                                 f"{len(groups)}, {ds.path.name} has {len(ds)} rows")
        return group_split(ds.labels, groups, fractions, seed)
    raise StampflowError(f"--set split={method}: stratified or subhalo")


def mock_description(ds: DeepMergeSet) -> dict[str, Any] | None:
    """The mock generator's description when ``ds`` is one of our mock files, else None."""
    desc_file = ds.path.parent / "mock_description.json"
    if desc_file.is_file():
        desc = json.loads(desc_file.read_text())
        if ds.path.name in {Path(p).name for p in desc.get("files", {}).values()}:
            return desc
    if ds.mock:
        return {"generator": str(ds.header.get("MOCKGEN", "mock")), "note": "no mock_description.json beside it"}
    return None


def _file_sha256(path: Path, limit: int = 1 << 26) -> str:
    """sha256 of the first 64 MiB and the size: identifies a file cheaply, even a 2 GB HLSP file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(limit))
    h.update(str(path.stat().st_size).encode())
    return h.hexdigest()


def train(opts) -> dict[str, Any]:
    """Train DeepMerge on an HLSP file (real or mock) and save the artifact; returns a JSON-able summary."""
    from training.cnn import (configure_device, fit, inference_rate, predict_array, save_artifact,
                              write_training_plots)

    variant_opt = opts.get("variant")
    if variant_opt and variant_opt not in VARIANTS:
        raise StampflowError(f"--set variant={variant_opt}: pristine or noisy")
    n_filters = opts.get("filters", None, int)
    ds = read_hlsp(opts.data, variant=variant_opt, n_filters=n_filters, fmt=opts.get("format"))
    variant = variant_opt or ds.variant or "pristine"
    max_images = opts.get("max_images", None, int)
    seed = int(opts.seed)
    device = configure_device(opts.mixed_precision, seed=seed)
    quiet = opts.get("quiet", False, bool)

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    fractions = opts.fractions(DEFAULT_FRACTIONS)
    method = opts.get("split", "stratified")
    meta_dir = Path(opts.get("metadata")) if opts.get("metadata") else None
    parts = split_rows(ds, method, fractions, seed, meta_dir)
    if max_images and max_images < len(ds):
        # a seeded class-balanced subset of each part, for quick runs and tests
        rng = np.random.default_rng(seed)
        parts = [np.sort(rng.permutation(p)[:max(2, int(round(max_images * f)))]) for p, f in zip(parts, fractions)]
    train_idx, val_idx, test_idx = parts
    for name, idx in zip(("train", "validation", "test"), parts):
        if len(np.unique(ds.labels[idx])) < 2:
            raise StampflowError(f"the {name} part has a single class; use more images")
    say(f"deepmerge: {ds.path.name}: {len(ds)} images, filters {', '.join(ds.filters)}, variant {variant}; "
        f"split {method} {len(train_idx)}/{len(val_idx)}/{len(test_idx)}")
    x_tr, x_va, x_te = (prepared_inputs(ds, idx) for idx in parts)
    y_tr, y_va, y_te = (ds.labels[idx].astype(np.float32) for idx in parts)

    import keras

    lr = opts.learning_rate or DEFAULT_LR
    dense_activation = opts.get("dense_activation", "relu")
    dropout = opts.get("dropout", DEFAULT_DROPOUT, float)
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
    patience = opts.get("patience", DEFAULT_PATIENCE, int)
    name = opts.get("name") or model_name(variant)
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
        f"train {result.images_per_s:.0f} img/s, inference {rate:.0f} img/s at batch 256")

    mock = mock_description(ds)
    label_check = None
    md = meta_dir or _default_metadata_dir()
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
        path = save_artifact(model, name=name, family=FAMILY, version=opts.version, out_root=opts.out_root,
                             task=TASK, classes=CLASSES, input_spec=input_spec(len(ds.filters)),
                             preprocess=PREPROCESS, training_data=training_data, split=split, metrics=metrics,
                             trained_on="mock" if mock else "real", training=training, plots_from=Path(tmp),
                             extra=extra)
    say(f"saved {path}")
    return {"artifact": str(path), "name": name, "variant": variant, "trained_on": "mock" if mock else "real",
            "test": {k: test[k] for k in ("n", "accuracy", "accuracy_ci95", "precision", "recall", "f1", "roc_auc",
                                           "brier")},
            "confusion_matrix": test["confusion_matrix"]["matrix"], "train_images_per_s": result.images_per_s,
            "inference_images_per_s": rate, "epochs_run": result.epochs_run}


# ---------------------------------------------------------------------------------------------- evaluate


def evaluate(model: str, data: Path, options: dict[str, str] | None = None) -> dict[str, Any]:
    """Score an artifact (path or registry name) on an HLSP file or directory through the serving class.

    Options: ``variant``, ``filters``, ``format`` (pick a file in a directory), ``part`` (``all`` or ``test``:
    the artifact's held-out rows), ``limit`` (first N rows), ``threshold`` (default 0.5).
    """
    from models.preprocess import prepare_images
    from training.cnn import load_family_model

    clf, options = load_family_model(model, FAMILY, options, {"variant", "filters", "format", "part", "limit",
                                                               "threshold", "metadata"})
    info = clf.info
    spec = clf.input_spec
    meta = info.metadata
    ds = read_hlsp(data, variant=options.get("variant"),
                   n_filters=int(options["filters"]) if options.get("filters") else len(spec.channels),
                   fmt=options.get("format"))
    if tuple(ds.filters) != tuple(spec.channels):
        raise StampflowError(f"{ds.path.name} has filters {ds.filters}, the model takes {spec.channels}")
    part = options.get("part", "all")
    if part == "all":
        rows = np.arange(len(ds))
    elif part == "test":
        sp = meta.get("split", {})
        if meta.get("training_data", {}).get("n_images") != len(ds):
            raise StampflowError("--set part=test needs the file the model was trained on (row counts differ)")
        fr = tuple(sp["fractions"][k] for k in ("train", "validation", "test"))
        parts = split_rows(ds, sp.get("method", "stratified"), fr, int(sp.get("seed", 0)),
                           Path(options["metadata"]) if options.get("metadata") else None)
        rows = parts[2]
        if sp.get("max_images"):
            rng = np.random.default_rng(int(sp.get("seed", 0)))
            parts = [np.sort(rng.permutation(p)[:max(2, int(round(sp["max_images"] * f)))])
                     for p, f in zip(parts, fr)]
            rows = parts[2]
    else:
        raise StampflowError(f"--set part={part}: all or test")
    if options.get("limit"):
        rows = rows[:int(options["limit"])]
    threshold = float(options.get("threshold", 0.5))
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
