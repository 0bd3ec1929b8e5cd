"""Train the CANDELS -> CLASH morphology CNN (``stampflow train morphology``); `training.morphology.evaluate`
scores an artifact, `training.morphology.study` runs the transfer study.

Pérez-Carrasco et al. (2019) trained a CNN on ~7,500 CANDELS GOODS-S F160W stamps with expert vote fractions
(Kartaltepe et al. 2015) and fine-tuned it on 1,600 CLASH stamps (100 per filter), reaching an RMSE of 0.0991
on the CLASH test set. Here:

1. `training.morphology.dataset.load_morphology` joins a label CSV with ``<ID>.fits`` stamps (reporting rows
   without stamps and stamps without rows) and prepares every stamp on the serving path: resized whole to
   48x48 (`InputSpec.geometry = "resize"`: stamps are cut at four Petrosian radii), then the asinh recipe;
2. a seeded split, 70/15/15, stratified by the top class and grouped by galaxy (CLASH labels the same galaxy
   in several filters; all its rows go to one part);
3. the network (`training.morphology.network.build_model`) predicts the five fractions with a softmax and is trained
   with soft-target categorical cross-entropy (``--set loss=crossentropy``, default; the KL divergence to the
   vote fractions) or the squared error (``loss=mse``, what the paper's RMSE loss minimises); the 8 flips and
   rotations by 90 degrees on the fly; Adam with cosine decay; early stopping on the validation loss;
4. transfer: ``--from MODEL --freeze N`` starts from a trained model; a model with C input filters is made from
   a single-band one by `training.morphology.network.expand_input_channels` (first-layer kernel W/C per channel, so C
   identical channels reproduce the source exactly), then the first N weighted layers are frozen;
5. metrics: RMSE over all fractions (and the paper's form, the mean of per-stamp RMSEs), RMSE per class,
   top-class accuracy with a Wilson interval and its confusion matrix, the RMSE of always predicting the
   training mean (a baseline to beat), and the serving throughput; curves, scatter and confusion PNGs;
6. the artifact is reloaded through `models.cnn.KerasCNN` and the test set re-scored through ``predict_batch``.

CLASH options: ``--set filters=f814w`` trains a one-filter model, ``filters=all`` (default) or a list stacks
those filters as channels (a combined model). ``--set study=transfer`` (needs ``--from``) runs the comparison
of docs/morphology.md with one budget: from scratch and transferred, one filter pooled, per filter, and
combined; the transferred combined model is saved.

Other ``--set`` options (`training.morphology.options.MorphologyOptions`): ``dataset`` (candels|clash), ``name``,
``loss``, ``patience`` (0 = fixed epochs), ``limit`` (first N label rows, smoke runs), ``size`` (input side).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from models.base import InputSpec
from schemas.errors import StampflowError
from training.family import TrainOptions, say
from training.morphology.dataset import load_morphology, parse_filters
from training.morphology.labels import labels_file, read_labels
from training.morphology.metrics import PAPER_RMSE, fractions_report, per_filter, short
from training.morphology.network import (CANDELS_BAND, CLASSES, FAMILY_NAME, PREPROCESS, TASK, build_model,
                                         input_spec_dict)
from training.morphology.options import MorphologyOptions
from training.morphology.recipe import (DEFAULTS, TRANSFER_LR, check_served, expansion_note, fit_model,
                                        served_throughput, source_model, split_meta, split_parts, training_data,
                                        training_record, transfer_model)


def data_name(opts: TrainOptions, fam: MorphologyOptions) -> str:
    """``--set dataset``, or the data set the label file's IDs name."""
    return fam.dataset or read_labels(labels_file(opts.data)).dataset


def train(opts: TrainOptions, fam: MorphologyOptions) -> dict[str, Any]:
    """Train on a CANDELS or CLASH set (or run ``--set study=transfer``); returns a JSON-able summary."""
    from training.cnn import configure_device, predict_array, save_artifact, weighted_layers
    from training.plots import write_training_plots

    t_start = time.perf_counter()
    dataset = data_name(opts, fam)
    seed = int(opts.seed)
    device = configure_device(opts.mixed_precision, seed=seed)
    if fam.study == "transfer":
        from training.morphology.study import transfer_study

        return transfer_study(opts, fam, dataset, seed, device, t_start)
    d = DEFAULTS[dataset]
    epochs = opts.epochs or d["epochs"]
    batch = opts.batch_size or d["batch"]
    lr = opts.learning_rate or (TRANSFER_LR if opts.from_model else d["lr"])
    patience = d["patience"] if fam.patience is None else fam.patience
    loss = fam.loss

    source = source_info = None
    size = fam.size
    if opts.from_model:
        source, source_info = source_model(opts)
        size = int(source.inputs[0].shape[1])
    elif opts.freeze:
        raise StampflowError("--freeze needs --from MODEL")
    filters = parse_filters(fam.filters) if dataset == "clash" else (CANDELS_BAND,)
    stack = "channels" if dataset == "clash" and len(filters) > 1 else "row"
    raw = load_morphology(opts.data, dataset, filters=filters, stack=stack, size=size, recipe=None,
                          limit=fam.limit, progress=True)
    data = raw.with_recipe(PREPROCESS)
    if len(data.ids) < 20:
        raise StampflowError(f"only {len(data.ids)} labelled stamps in {opts.data}: too few to split and train")
    parts = split_parts(data, seed)
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
                    "channel_expansion": expansion_note(source, len(channels)),
                    "freeze": int(opts.freeze or 0), "frozen_layers": frozen,
                    "weighted_layers": [layer.name for layer in weighted_layers(model)]}
        say(f"morphology: transfer from {transfer['from']}; {transfer['channel_expansion']}; "
            f"frozen {frozen or 'nothing'}")
    else:
        model = build_model(channels=len(channels), size=size, seed=seed)
    result = fit_model(model, fit_d.x, fit_d.y, val_d.x, val_d.y, epochs=epochs, batch=batch, lr=lr, loss=loss,
                       seed=seed, patience=patience, desc=f"morphology {dataset}")

    pred = predict_array(model, test_d.x)
    mean_fit = fit_d.y.mean(axis=0)
    report = fractions_report(test_d.y, pred, mean_fit)
    val_report = fractions_report(val_d.y, predict_array(model, val_d.x), mean_fit)
    by_filter = per_filter(test_d, pred) if dataset == "clash" else None
    served_ips = served_throughput(model, test_d.x)

    name = fam.name or default_name(dataset, channels)
    metrics = {"test": report, "test_rmse": report["rmse"], "test_rmse_paper": report["rmse_paper"],
               "test_top_class_accuracy": report.get("top_class_accuracy"),
               "validation": short(val_report), "test_per_row_filter": by_filter,
               "paper_clash_test_rmse": PAPER_RMSE,
               "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips,
               "note": "scores on mock stamps drawn from the real label rows: they show the pipeline learns the "
                       "label-driven morphologies, not how it would score on the real CANDELS/CLASH images"}
    training = training_record(result, epochs, batch, lr, loss, patience, seed, device, transfer,
                               "training.morphology.network.build_model"
                               + (" via expand_input_channels" if transfer else ""))
    data_record = training_data(opts.data, data, dataset)
    split = split_meta(data, parts, seed)
    spec = InputSpec.from_dict(input_spec_dict(channels, size))
    with tempfile.TemporaryDirectory(prefix="stampflow-morphology-plots-") as tmp:
        plots = write_training_plots(result.history, Path(tmp), report, TASK, CLASSES, true=test_d.y, pred=pred,
                                     name=name)
        out = save_artifact(model, name=name, family=FAMILY_NAME, version=opts.version,
                            out_root=opts.out_root, task=TASK, classes=CLASSES, input_spec=spec,
                            preprocess=dict(PREPROCESS),
                            training_data=data_record, split=split, metrics=metrics, trained_on="mock",
                            training=training, plots_from=Path(tmp), extra={"plots": plots})
    check_served(out, raw.subset(parts["test"]), pred)
    from training.uncertainty import attach_after_training

    fit_r, val_r, test_r = (raw.subset(parts[k]) for k in ("fit", "validation", "test"))  # before the recipe
    uncertainty = attach_after_training(out, x_fit=fit_r.x, x_val=val_r.x, y_val=val_r.y, x_test=test_r.x,
                                        y_test=test_r.y, say=say)
    say(f"morphology: test RMSE {report['rmse']:.4f} (paper form {report['rmse_paper']:.4f}; predicting the "
        f"training mean: {report['rmse_predict_training_mean']:.4f}), top-class accuracy "
        f"{report['top_class_accuracy']:.3f}, n={report['n']}; {result.epochs_run} epochs at "
        f"{result.images_per_s:.0f} images/s; serving {served_ips:.0f} images/s at batch 256; artifact {out}")
    return {"name": name, "version": out.name, "artifact": str(out), "dataset": dataset, "channels": list(channels),
            "metrics": {"test": short(report), "validation": short(val_report), "test_per_row_filter": by_filter,
                        "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips},
            "split": {k: v for k, v in split.items() if not k.endswith("_ids")}, "transfer": transfer,
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "trained_on": "mock",
            "uncertainty": uncertainty, "seconds": time.perf_counter() - t_start}


def default_name(dataset: str, channels: Sequence[str]) -> str:
    """morphology-candels, morphology-clash (several filters) or morphology-clash-<filter>."""
    if dataset == "candels":
        return "morphology-candels"
    return "morphology-clash" if len(channels) > 1 else f"morphology-clash-{channels[0].lower()}"
