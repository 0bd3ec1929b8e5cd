"""``stampflow train radio``: train a radio-galaxy CNN and save it as a served artifact.

1. load a labelled radio data set (`training.radio.data.load_radio`): the Griese FIRST set (4 classes) by
   default, or FR-DEEP FIRST/NVSS and MiraBest (FRI/FRII) with ``--set dataset=frdeep-first|frdeep-nvss|mirabest``;
2. use the published split: the training part for training (a seeded, stratified validation part is carved out
   of it for early stopping and the curves), and the published held-out part (Griese ``valid``, FR-DEEP and
   MiraBest ``test``) as the test set, touched once at the end;
3. images go through the serving path: `models.preprocess.prepare_images` (geometry: centre crop to 150) and
   `apply_recipe` (3-sigma clip, min-max); rotations (any angle) and flips are applied on the fly;
4. transfer learning: ``--from MODEL --freeze N`` starts from a trained model (its head is replaced when the
   class count differs), freezes its first N weighted layers and fine-tunes the rest;
5. the artifact (model.keras + metadata.json + curves and confusion-matrix PNGs) is reloaded through
   `models.cnn.KerasCNN` and the test set scored through ``predict_batch``, exactly as the worker would.

``--set`` options: `training.radio.options.RadioOptions`.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import InputSpec, same_scale
from models.preprocess import apply_recipe, prepare_images
from schemas.errors import StampflowError
from training.augment import augmentation
from training.cnn import (configure_device, fit, freeze_first, inference_rate, load_keras_model, predict_array,
                          save_artifact, served_predictions, weighted_layers)
from training.evaluation import classification_report, stratified_split_fractions
from training.family import TrainOptions, say
from training.plots import write_training_plots
from training.radio.data import detect_dataset, load_radio
from training.radio.ensemble import class_weights, compile_model
from training.radio.network import AUGMENT, PREPROCESS, SURVEY_INPUT_SPEC, TASK, build_model
from training.radio.options import RadioOptions
from training.radio.sets import RadioSet

FAMILY = "radio"
DEFAULT_EPOCHS = 80
DEFAULT_BATCH = 32
DEFAULT_LR = 1e-3
# The published held-out part of each data set: the test set we report.
TEST_SPLIT = {"griese": "valid", "frdeep-first": "test", "frdeep-nvss": "test", "mirabest": "test"}
DEFAULT_NAMES = {"griese": "radio-first", "frdeep-first": "radio-frdeep-first", "frdeep-nvss": "radio-frdeep-nvss",
                 "mirabest": "radio-mirabest"}
CITATIONS = {
    "griese": "Griese et al. 2023, Data in Brief 47, 108974 (FIRST; Label_literature / Split_literature)",
    "frdeep-first": "Tang, Scaife & Leahy 2019, MNRAS 488, 3358 (FR-DEEP, FIRST part)",
    "frdeep-nvss": "Tang, Scaife & Leahy 2019, MNRAS 488, 3358 (FR-DEEP, NVSS part)",
    "mirabest": "Porter & Scaife, MiraBest batches (Miraghaei & Best 2017 catalogue)",
}


def prepare(rs: RadioSet, spec: InputSpec, recipe: dict[str, Any] | None) -> np.ndarray:
    """Images -> model input (N, size, size, 1): the serving geometry, then the recipe (None: geometry only)."""
    x = prepare_images(rs.images, spec, rs.pixel_scale)
    return x if recipe is None else apply_recipe(x, recipe)


def dataset_name(dataset: str | None, data: Path) -> str:
    """The ``dataset`` option (``frdeep`` meaning FR-DEEP FIRST), or the data set detected at ``data``."""
    ds = (dataset or detect_dataset(data)).lower()
    return "frdeep-first" if ds == "frdeep" else ds


def transfer_model(source, n_classes: int, seed: int):
    """The source network, with a fresh softmax head when the class count differs (feature layers kept)."""
    import keras

    if tuple(source.inputs[0].shape[1:]) != (SURVEY_INPUT_SPEC["FIRST"]["size"],) * 2 + (1,):
        raise StampflowError(f"source model input {tuple(source.inputs[0].shape)} is not (None, 150, 150, 1)")
    if int(source.outputs[0].shape[-1]) == n_classes:
        return source, False
    features = source.layers[-2].output
    head = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes_target",
                              kernel_initializer=keras.initializers.GlorotUniform(seed=seed))(features)
    return keras.Model(source.inputs, head, name=f"{source.name}_transfer"), True


def load_parts(data: Path, dataset: str, o: RadioOptions) -> tuple[RadioSet, RadioSet, RadioSet, InputSpec]:
    """(whole set, published training part, published test part, the survey's input spec)."""
    rs = load_radio(data, dataset=dataset, labels=o.labels, limit=o.limit)
    test_split = TEST_SPLIT[dataset]
    have = set(rs.splits.tolist())
    if "train" not in have or test_split not in have:
        raise StampflowError(f"{data} lacks the published '{'train' if 'train' not in have else test_split}' part "
                             f"(it has: {', '.join(sorted(have))})")
    spec_dict = SURVEY_INPUT_SPEC.get(rs.survey)
    if spec_dict is None:
        raise StampflowError(f"no input spec for survey {rs.survey}")
    spec = InputSpec.from_dict(spec_dict)
    if not same_scale(rs.pixel_scale, spec.pixel_scale):
        raise StampflowError(f"{rs.survey} data at {rs.pixel_scale}\"/px does not match the model's {spec.pixel_scale}")
    return rs, rs.select("train"), rs.select(test_split), spec


def network(opts: TrainOptions, k: int, seed: int) -> tuple[Any, dict[str, Any] | None]:
    """A fresh network, or with ``--from`` the source network (new head if needed, first layers frozen); the
    second item describes the transfer for the metadata (None from scratch)."""
    if not opts.from_model:
        if opts.freeze:
            raise StampflowError("--freeze needs --from MODEL")
        return build_model(n_classes=k, seed=seed), None
    roots = [Path(opts.out_root)] if opts.out_root else []
    source, source_info = load_keras_model(opts.from_model, roots)
    model, new_head = transfer_model(source, k, seed)
    frozen = freeze_first(model, opts.freeze or 0)
    transfer = {"from": f"{source_info.name}@{source_info.version}", "from_path": str(source_info.path),
                "source_classes": source_info.metadata.get("classes"),
                "source_input_spec": source_info.metadata.get("input_spec"),
                "source_trained_on": source_info.metadata.get("trained_on"),
                "freeze": int(opts.freeze or 0), "frozen_layers": frozen, "new_head": new_head,
                "weighted_layers": [layer.name for layer in weighted_layers(model)]}
    say(f"radio: transfer from {transfer['from']}, frozen {frozen or 'nothing'}"
        + (", new softmax head" if new_head else ""))
    return model, transfer


def train(opts: TrainOptions, options: RadioOptions | None = None) -> dict[str, Any]:
    t_start = time.perf_counter()
    o = options or RadioOptions()
    data = Path(opts.data)
    dataset = dataset_name(o.dataset, data)
    if dataset not in TEST_SPLIT:
        raise StampflowError(f"cannot train on '{dataset}' data: choose dataset=griese, frdeep-first, frdeep-nvss "
                             "or mirabest")
    if o.pool:
        if dataset != "griese":
            raise StampflowError("pool=true trains radio-first on the Griese set plus MiraBest and FR-DEEP FIRST: "
                                 "give the Griese file as --data")
        from training.radio.train_pool import train_pool

        return train_pool(opts, o)
    seed = int(opts.seed)
    device = configure_device(opts.mixed_precision, seed=seed)
    rs, train_part, test_part, spec = load_parts(data, dataset, o)
    test_split, classes = TEST_SPLIT[dataset], rs.classes
    k = len(classes)

    fit_idx, val_idx = stratified_split_fractions(train_part.labels, [1.0 - o.val_fraction, o.val_fraction], seed)
    x_train = prepare(train_part, spec, PREPROCESS)
    x_test = prepare(test_part, spec, PREPROCESS)
    y_train, y_test = train_part.labels, test_part.labels
    x_fit, y_fit, x_val, y_val = x_train[fit_idx], y_train[fit_idx], x_train[val_idx], y_train[val_idx]
    say(f"radio: {dataset} ({rs.survey}, {rs.pixel_scale}\"/px) fit {len(fit_idx)} / validation {len(val_idx)} / "
        f"test ({test_split}) {len(y_test)}; device {device['device']}")

    epochs = opts.epochs or DEFAULT_EPOCHS
    batch = opts.batch_size or DEFAULT_BATCH
    lr = opts.learning_rate or DEFAULT_LR
    class_weight = class_weights(y_fit, k) if o.class_weight == "balanced" else None
    model, transfer = network(opts, k, seed)
    compile_model(model, lr, epochs * int(np.ceil(len(y_fit) / batch)))
    augment = augmentation(rotate_deg=AUGMENT["rotate_deg"], flip=AUGMENT["flip"], seed=seed)
    result = fit(model, (x_fit, y_fit), (x_val, y_val), epochs=epochs, batch_size=batch, augment=augment, seed=seed,
                 desc=f"radio {dataset}", class_weight=class_weight, patience=o.patience or None,
                 monitor="val_accuracy")

    # -- test set, through the serving tf.function
    probs = predict_array(model, x_test)
    report = classification_report(y_test, probs.argmax(axis=1), classes)
    val_report = classification_report(y_val, predict_array(model, x_val).argmax(axis=1), classes)
    served_ips = inference_rate(model, x_test.shape[1:]) if o.throughput and len(x_test) else None

    name = o.name or DEFAULT_NAMES[dataset]
    metrics = {"test": report, "test_accuracy": report["accuracy"], "test_accuracy_ci95": report["accuracy_ci95"],
               "test_split": f"published '{test_split}' part", "validation": {
                   k_: val_report[k_] for k_ in ("n", "accuracy", "accuracy_ci95")},
               "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips}
    training = result.record(
        epochs=epochs, batch_size=batch, optimizer="Adam", learning_rate=lr,
        schedule="cosine decay to 5% over epochs_max", loss="sparse categorical cross-entropy",
        class_weight=class_weight,
        early_stopping={"monitor": "val_accuracy", "patience": o.patience, "restore_best_weights": True}
        if o.patience else None, augmentation=AUGMENT, seed=seed, device=device, transfer=transfer,
        architecture="training.radio.network.build_model" if transfer is None
        else "source model" + (" + new head" if transfer["new_head"] else ""))
    training_data = {"dataset": dataset, "path": str(data.resolve()), "citation": CITATIONS[dataset],
                     "survey": rs.survey, "pixel_scale": rs.pixel_scale, "counts": rs.counts(),
                     "label_set": o.labels if dataset == "griese" else None}
    split = {"method": f"published split; seeded stratified validation part ({o.val_fraction:.0%}) from 'train'",
             "seed": seed, "counts": {"fit": int(len(fit_idx)), "validation": int(len(val_idx)),
                                      "test": int(len(y_test))},
             "per_class": {part: {c: int((ys == i).sum()) for i, c in enumerate(classes)}
                           for part, ys in (("fit", y_fit), ("validation", y_val), ("test", y_test))}}
    with tempfile.TemporaryDirectory(prefix="stampflow-radio-plots-") as tmp:
        plots = write_training_plots(result.history, Path(tmp), report, TASK, classes, name=name)
        out = save_artifact(model, name=name, family=FAMILY, version=opts.version, out_root=opts.out_root,
                            task=TASK, classes=classes, input_spec=spec, preprocess=dict(PREPROCESS),
                            training_data=training_data, split=split, metrics=metrics, trained_on="real",
                            training=training, plots_from=Path(tmp), extra={"plots": plots})

    # -- the artifact as the worker serves it: KerasCNN.predict_batch on geometry-only stamps
    served = served_predictions(out, prepare(test_part, spec, None))
    agree = float((served.argmax(axis=1) == probs.argmax(axis=1)).mean()) if len(y_test) else 1.0
    if agree < 1.0:
        raise StampflowError(f"served predictions differ from training-time ones on {1 - agree:.1%} of the test set")
    lo, hi = report["accuracy_ci95"]
    say(f"radio: test accuracy {report['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={report['n']}); "
        f"trained {result.epochs_run} epochs at {result.images_per_s:.0f} images/s; artifact {out}")
    return {"name": name, "version": out.name, "artifact": str(out), "dataset": dataset, "metrics": metrics,
            "split": split, "transfer": transfer, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "train_images_per_s": result.images_per_s, "seconds": time.perf_counter() - t_start}
