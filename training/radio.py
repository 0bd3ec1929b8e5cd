"""Train and evaluate radio-galaxy CNNs (``stampflow train radio`` / ``stampflow evaluate``).

Training (`train`):

1. load a labelled radio data set (`training.radio_data.load_radio`): the Griese FIRST set (4 classes) by
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

``--set`` options: ``dataset``, ``name`` (artifact name), ``val_fraction`` (0.15), ``patience`` (early
stopping on the validation accuracy, best epoch restored; 0 = fixed epochs; default 25), ``class_weight``
(``balanced`` | ``none``; default balanced: the Griese test part is balanced while its training part is not),
``labels`` (Griese label set: literature or CDL1), ``limit`` (Griese: read only the first N groups, for smoke
runs), ``throughput`` (time the served model at batch 256 into the metrics; default true).

`evaluate` scores any radio artifact on Griese HDF5 (zip or not; ``split=valid|train|all``), FR-DEEP or
MiraBest data. A model whose classes are a superset of the data's (the 4-class FIRST model on FRI/FRII data) is
restricted to the shared classes: the predicted label is the arg-max over the shared classes' probabilities,
and the unrestricted 4-way predictions are reported beside it. Images of classes the model does not know are
dropped and counted.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.base import InputSpec, ModelInfo, same_scale
from models.preprocess import apply_recipe, prepare_images
from models.radio import AUGMENT, PREPROCESS, SURVEY_INPUT_SPEC, TASK, build_model
from schemas.errors import StampflowError
from training.cnn import (TrainOptions, augmentation, classification_report, configure_device, fit, freeze_first,
                          inference_rate, load_family_model, load_keras_model, predict_array, save_artifact,
                          stratified_split, weighted_layers, write_training_plots)
from training.radio_data import RadioSet, detect_dataset, load_radio

FAMILY = "radio"
DEFAULT_EPOCHS = 80
DEFAULT_BATCH = 32
DEFAULT_LR = 1e-3
DEFAULT_PATIENCE = 25
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


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(rs: RadioSet, spec: InputSpec, recipe: dict[str, Any] | None) -> np.ndarray:
    """Images -> model input (N, size, size, 1): the serving geometry, then the recipe (None: geometry only)."""
    x = prepare_images(rs.images, spec, rs.pixel_scale)
    return x if recipe is None else apply_recipe(x, recipe)


def _dataset_name(opts_or_options: Any, data: Path) -> str:
    ds = opts_or_options.get("dataset") if opts_or_options is not None else None
    ds = (ds or detect_dataset(data)).lower()
    if ds == "frdeep":
        ds = "frdeep-first"
    return ds


def _class_weights(labels: np.ndarray, k: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=k).astype(float)
    return {i: float(len(labels) / (k * c)) if c else 0.0 for i, c in enumerate(counts)}


def _transfer_model(source, n_classes: int, seed: int):
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


def _compile(model, lr: float, total_steps: int) -> None:
    import keras

    # Cosine decay to 5% over the whole run: no callback needed, and the same schedule for every arm of a
    # comparison with the same epochs.
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1), alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


def train(opts: TrainOptions) -> dict[str, Any]:
    t_start = time.perf_counter()
    data = Path(opts.data)
    dataset = _dataset_name(opts, data)
    if dataset not in TEST_SPLIT:
        raise StampflowError(f"cannot train on '{dataset}' data: choose dataset=griese, frdeep-first, frdeep-nvss "
                             "or mirabest")
    seed = int(opts.seed)
    device = configure_device(opts.mixed_precision, seed=seed)
    rs = load_radio(data, dataset=dataset, labels=opts.get("labels", "literature"), limit=opts.get("limit"))
    test_split = TEST_SPLIT[dataset]
    have = set(rs.splits.tolist())
    if "train" not in have or test_split not in have:
        raise StampflowError(f"{data} lacks the published '{'train' if 'train' not in have else test_split}' part "
                             f"(it has: {', '.join(sorted(have))})")
    train_part, test_part = rs.select("train"), rs.select(test_split)
    classes = rs.classes
    k = len(classes)
    spec_dict = SURVEY_INPUT_SPEC.get(rs.survey)
    if spec_dict is None:
        raise StampflowError(f"no input spec for survey {rs.survey}")
    spec = InputSpec.from_dict(spec_dict)
    if not same_scale(rs.pixel_scale, spec.pixel_scale):
        raise StampflowError(f"{rs.survey} data at {rs.pixel_scale}\"/px does not match the model's {spec.pixel_scale}")

    val_fraction = opts.get("val_fraction", 0.15, float)
    fit_idx, val_idx = stratified_split(train_part.labels, [1.0 - val_fraction, val_fraction], seed)
    x_train = prepare(train_part, spec, PREPROCESS)
    x_test = prepare(test_part, spec, PREPROCESS)
    y_train, y_test = train_part.labels, test_part.labels
    x_fit, y_fit, x_val, y_val = x_train[fit_idx], y_train[fit_idx], x_train[val_idx], y_train[val_idx]
    say(f"radio: {dataset} ({rs.survey}, {rs.pixel_scale}\"/px) fit {len(fit_idx)} / validation {len(val_idx)} / "
        f"test ({test_split}) {len(y_test)}; device {device['device']}")

    epochs = opts.epochs or DEFAULT_EPOCHS
    batch = opts.batch_size or DEFAULT_BATCH
    lr = opts.learning_rate or DEFAULT_LR
    patience = opts.get("patience", DEFAULT_PATIENCE, int)
    weighting = opts.get("class_weight", "balanced")
    if weighting not in ("balanced", "none"):
        raise StampflowError(f"--set class_weight={weighting}: expected balanced or none")
    class_weight = _class_weights(y_fit, k) if weighting == "balanced" else None

    transfer: dict[str, Any] | None = None
    if opts.from_model:
        roots = [Path(opts.out_root)] if opts.out_root else []
        source, source_info = load_keras_model(opts.from_model, roots)
        model, new_head = _transfer_model(source, k, seed)
        frozen = freeze_first(model, opts.freeze or 0)
        transfer = {"from": f"{source_info.name}@{source_info.version}", "from_path": str(source_info.path),
                    "source_classes": source_info.metadata.get("classes"),
                    "source_input_spec": source_info.metadata.get("input_spec"),
                    "source_trained_on": source_info.metadata.get("trained_on"),
                    "freeze": int(opts.freeze or 0), "frozen_layers": frozen, "new_head": new_head,
                    "weighted_layers": [layer.name for layer in weighted_layers(model)]}
        say(f"radio: transfer from {transfer['from']}, frozen {frozen or 'nothing'}"
            + (", new softmax head" if new_head else ""))
    else:
        if opts.freeze:
            raise StampflowError("--freeze needs --from MODEL")
        model = build_model(n_classes=k, seed=seed)
    steps = int(np.ceil(len(y_fit) / batch))
    _compile(model, lr, epochs * steps)
    augment = augmentation(rotate_deg=AUGMENT["rotate_deg"], flip=AUGMENT["flip"], seed=seed)
    result = fit(model, (x_fit, y_fit), (x_val, y_val), epochs=epochs, batch_size=batch, augment=augment, seed=seed,
                 desc=f"radio {dataset}", class_weight=class_weight, patience=patience or None,
                 monitor="val_accuracy")

    # -- test set, through the serving tf.function
    probs = predict_array(model, x_test)
    report = classification_report(y_test, probs.argmax(axis=1), classes)
    val_report = classification_report(y_val, predict_array(model, x_val).argmax(axis=1), classes)
    measure = opts.get("throughput", True, bool)
    served_ips = inference_rate(model, x_test.shape[1:]) if measure and len(x_test) else None

    name = opts.get("name") or DEFAULT_NAMES[dataset]
    metrics = {"test": report, "test_accuracy": report["accuracy"], "test_accuracy_ci95": report["accuracy_ci95"],
               "test_split": f"published '{test_split}' part", "validation": {
                   k_: val_report[k_] for k_ in ("n", "accuracy", "accuracy_ci95")},
               "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips}
    training = result.record(
        epochs=epochs, batch_size=batch, optimizer="Adam", learning_rate=lr,
        schedule="cosine decay to 5% over epochs_max", loss="sparse categorical cross-entropy",
        class_weight=class_weight,
        early_stopping={"monitor": "val_accuracy", "patience": patience, "restore_best_weights": True}
        if patience else None, augmentation=AUGMENT, seed=seed, device=device, transfer=transfer,
        architecture="models.radio.build_model" if transfer is None
        else "source model" + (" + new head" if transfer["new_head"] else ""))
    training_data = {"dataset": dataset, "path": str(data.resolve()), "citation": CITATIONS[dataset],
                     "survey": rs.survey, "pixel_scale": rs.pixel_scale, "counts": rs.counts(),
                     "label_set": opts.get("labels", "literature") if dataset == "griese" else None}
    split = {"method": f"published split; seeded stratified validation part ({val_fraction:.0%}) from 'train'",
             "seed": seed, "counts": {"fit": int(len(fit_idx)), "validation": int(len(val_idx)),
                                      "test": int(len(y_test))},
             "per_class": {part: {c: int((ys == i).sum()) for i, c in enumerate(classes)}
                           for part, ys in (("fit", y_fit), ("validation", y_val), ("test", y_test))}}
    with tempfile.TemporaryDirectory(prefix="stampflow-radio-plots-") as tmp:
        plots = write_training_plots(result.history, Path(tmp), report, TASK, classes, name=name)
        out = save_artifact(model, name=name, family=FAMILY, version=opts.version,
                            out_root=opts.out_root,
                            task=TASK, classes=classes, input_spec=spec, preprocess=dict(PREPROCESS),
                            training_data=training_data, split=split, metrics=metrics, trained_on="real",
                            training=training, plots_from=Path(tmp), extra={"plots": plots})

    # -- the artifact as the worker serves it: KerasCNN.predict_batch on geometry-only stamps
    served = _served_predictions(out, prepare(test_part, spec, None))
    agree = float((served.argmax(axis=1) == probs.argmax(axis=1)).mean()) if len(y_test) else 1.0
    if agree < 1.0:
        raise StampflowError(f"served predictions differ from training-time ones on {1 - agree:.1%} of the test set")
    lo, hi = report["accuracy_ci95"]
    say(f"radio: test accuracy {report['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}, n={report['n']}); "
        f"trained {result.epochs_run} epochs at {result.images_per_s:.0f} images/s; artifact {out}")
    return {"name": name, "version": out.name, "artifact": str(out), "dataset": dataset, "metrics": metrics,
            "split": split, "transfer": transfer, "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
            "train_images_per_s": result.images_per_s, "seconds": time.perf_counter() - t_start}


def _served_predictions(artifact: Path, x_geom: np.ndarray) -> np.ndarray:
    import json

    from models.cnn import KerasCNN

    meta = json.loads((artifact / "metadata.json").read_text())
    clf = KerasCNN.load(ModelInfo(meta["name"], meta["version"], meta["family"], artifact, meta))
    out = [clf.predict_batch(x_geom[i:i + 256]).probabilities for i in range(0, len(x_geom), 256)]
    return np.concatenate(out) if out else np.zeros((0, len(meta["classes"])))


# ------------------------------------------------------------------------------------------------- evaluate


def evaluate(model: str, data: Path, options: dict[str, str]) -> dict[str, Any]:
    """Score a radio artifact on labelled radio data through the serving path (see the module docstring).

    Options: ``split`` (default: the data set's published held-out part when present, else all),
    ``dataset`` (override detection), ``survey`` (FR-DEEP: FIRST|NVSS), ``labels`` (Griese label set),
    ``limit`` (Griese: first N groups), ``force`` (evaluate even when the data's survey/pixel scale is not the
    model's), ``batch_size``.
    """
    known = {"split", "dataset", "survey", "labels", "limit", "force", "batch_size"}
    clf, options = load_family_model(model, FAMILY, options, known)
    info = clf.info
    data = Path(data)
    dataset = _dataset_name(options, data)
    rs = load_radio(data, dataset=dataset, labels=options.get("labels", "literature"), limit=options.get("limit"),
                    survey=options.get("survey"))
    split = options.get("split")
    if split is None:
        held_out = TEST_SPLIT.get(rs.dataset)
        split = held_out if held_out in set(rs.splits.tolist()) else "all"
    rs = rs.select(split)
    spec = clf.input_spec
    force = options.get("force", "false").lower() in ("1", "true", "yes")
    mismatch = []
    if rs.survey not in spec.surveys:
        mismatch.append(f"survey {rs.survey} not in the model's {list(spec.surveys)}")
    if spec.pixel_scale is not None and not same_scale(rs.pixel_scale, spec.pixel_scale):
        mismatch.append(f"pixel scale {rs.pixel_scale}\"/px is not the model's {spec.pixel_scale}\"/px")
    if mismatch and not force:
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

    batch = int(options.get("batch_size", 256))
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


# ---------------------------------------------------------------------------------------- transfer experiment


def transfer_experiment(frdeep: Path, out_root: Path, *, seeds: tuple[int, ...] = (0, 1, 2), epochs: int = 20,
                        freeze: int = 2, learning_rate: float = DEFAULT_LR, batch_size: int = 32,
                        extra_sources: tuple[str, ...] = (), sources_from: Path | None = None) -> dict[str, Any]:
    """FIRST -> NVSS on FR-DEEP (Tang et al. 2019) against NVSS alone, with the same budget.

    Per seed: (1) a source FRI/FRII model trained on FR-DEEP FIRST (its 'test' part scored too); (2) NVSS from
    scratch; (3) NVSS fine-tuned from the source with its first ``freeze`` weighted layers frozen; plus one
    fine-tuned arm per model in ``extra_sources`` (e.g. the bundled 4-class ``radio-first``). Every NVSS arm
    sees the same fit/validation/test images (same seed), the same epochs (fixed: no early stopping),
    optimiser, schedule, batch size and augmentation; all are scored on the 50-image FR-DEEP NVSS test part.
    ``sources_from``: reuse the FR-DEEP FIRST source models of an earlier run (``<root>/radio-frdeep-first/
    1.0.<seed>``) instead of training them, so a smaller NVSS budget starts from the same sources.
    """
    import json
    import statistics

    from training.cnn import TrainOptions

    frdeep, out_root = Path(frdeep), Path(out_root)
    common = {"patience": "0"}
    runs: list[dict[str, Any]] = []
    commands: list[str] = []

    def run(arm: str, seed: int, dataset: str, name: str, from_model: str | None = None, fz: int | None = None):
        extra = {**common, "dataset": dataset, "name": name}
        opts = TrainOptions(data=frdeep, epochs=epochs, batch_size=batch_size, seed=seed, from_model=from_model,
                            freeze=fz, out_root=out_root, version=f"1.0.{seed}", learning_rate=learning_rate,
                            extra=extra)
        cmd = (f"stampflow train radio --data {frdeep} --epochs {epochs} --batch-size {batch_size} --seed {seed} "
               f"--learning-rate {learning_rate} --out {out_root} --version 1.0.{seed}"
               + (f" --from {from_model} --freeze {fz}" if from_model else "")
               + "".join(f" --set {k}={v}" for k, v in extra.items()))
        commands.append(cmd)
        say(f"transfer experiment: {arm}, seed {seed}")
        res = train(opts)
        m = res["metrics"]
        runs.append({"arm": arm, "seed": seed, "name": name, "artifact": res["artifact"],
                     "test_accuracy": m["test_accuracy"], "test_accuracy_ci95": m["test_accuracy_ci95"],
                     "test_n": m["test"]["n"], "per_class": m["test"]["per_class"],
                     "confusion_matrix": m["test"]["confusion_matrix"]["matrix"],
                     "validation_accuracy": m["validation"]["accuracy"], "epochs_run": res["epochs_run"],
                     "train_images_per_s": res["train_images_per_s"], "seconds": res["seconds"]})
        return res

    for seed in seeds:
        if sources_from is not None:
            src_dir = Path(sources_from) / "radio-frdeep-first" / f"1.0.{seed}"
            if not (src_dir / "metadata.json").is_file():
                raise StampflowError(f"no source model {src_dir} to reuse")
            src = {"artifact": str(src_dir)}
            meta = json.loads((src_dir / "metadata.json").read_text())
            runs.append({"arm": "source: FR-DEEP FIRST (reused)", "seed": seed, "name": meta["name"],
                         "artifact": str(src_dir), "test_accuracy": meta["metrics"]["test_accuracy"],
                         "test_accuracy_ci95": meta["metrics"]["test_accuracy_ci95"],
                         "test_n": meta["metrics"]["test"]["n"], "epochs_run": meta["training"]["epochs_run"]})
        else:
            src = run("source: FR-DEEP FIRST", seed, "frdeep-first", "radio-frdeep-first")
        run("NVSS from scratch", seed, "frdeep-nvss", "radio-nvss-scratch")
        run(f"NVSS fine-tuned from FR-DEEP FIRST (freeze {freeze})", seed, "frdeep-nvss", "radio-nvss-transfer",
            src["artifact"], freeze)
        for k_, spec in enumerate(extra_sources):
            run(f"NVSS fine-tuned from {spec} (freeze {freeze})", seed, "frdeep-nvss", f"radio-nvss-transfer{k_ + 2}",
                spec, freeze)

    summary: dict[str, Any] = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        accs = [r["test_accuracy"] for r in mine]
        summary[arm] = {"seeds": [r["seed"] for r in mine], "test_accuracy": accs,
                        "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0}
        vals = [r["validation_accuracy"] for r in mine if "validation_accuracy" in r]
        if vals:
            summary[arm]["validation_accuracy"] = vals
            summary[arm]["validation_mean"] = statistics.fmean(vals)
    result = {"experiment": "FR-DEEP FIRST -> NVSS transfer vs NVSS alone (same budget)",
              "sources_from": None if sources_from is None else str(sources_from),
              "data": str(frdeep.resolve()),
              "test_set": "FR-DEEP NVSS published test batch (50 images: 22 FRI, 28 FRII)",
              "budget": {"epochs": epochs, "early_stopping": False, "batch_size": batch_size, "optimizer": "Adam",
                         "learning_rate": learning_rate, "schedule": "cosine decay to 5%", "freeze": freeze,
                         "augmentation": AUGMENT, "class_weight": "balanced", "val_fraction": 0.15},
              "seeds": list(seeds), "summary": summary, "runs": runs, "commands": commands}
    (out_root / "radio_transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _main(argv: list[str]) -> None:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m training.radio transfer",
                                description="FR-DEEP FIRST -> NVSS transfer experiment (see transfer_experiment)")
    p.add_argument("frdeep", type=Path, help="directory holding FIRST_/NVSS_PNG_dataset.tar.gz")
    p.add_argument("out", type=Path, help="registry root for the experiment's artifacts and radio_transfer.json")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--freeze", type=int, default=2)
    p.add_argument("--extra-source", action="append", default=[], help="another source model, e.g. radio-first@1.0.0")
    p.add_argument("--sources-from", type=Path, help="reuse the FR-DEEP FIRST sources of an earlier run's root")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    res = transfer_experiment(a.frdeep, a.out, epochs=a.epochs, seeds=tuple(int(s) for s in a.seeds.split(",")),
                              freeze=a.freeze, extra_sources=tuple(a.extra_source), sources_from=a.sources_from)
    print(json.dumps(res["summary"], indent=2))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "transfer":
        raise SystemExit("usage: python -m training.radio transfer FRDEEP_DIR OUT_ROOT [--epochs N] [--seeds 0,1,2] "
                         "[--freeze N] [--extra-source MODEL] [--sources-from ROOT]")
    _main(sys.argv[2:])
