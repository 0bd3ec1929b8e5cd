"""``stampflow train morphology --set study=transfer --from MODEL``: the CLASH transfer study of
docs/morphology.md. One galaxy-grouped split and one budget for every arm: the CANDELS model as it is, from scratch
and transferred with one filter pooled, one transferred model per filter, and all filters stacked as channels from
scratch and transferred; the transferred combined model is saved with the study in its metadata."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.base import InputSpec
from schemas.errors import StampflowError
from training.family import TrainOptions, say
from training.morphology.dataset import load_morphology, parse_filters
from training.morphology.metrics import PAPER_RMSE, fractions_report, per_filter, short
from training.morphology.network import CLASSES, FAMILY_NAME, PREPROCESS, TASK, build_model, input_spec_dict
from training.morphology.options import MorphologyOptions
from training.morphology.recipe import (AUGMENT, DEFAULTS, TRANSFER_LR, check_served, expansion_note, fit_model,
                                        served_throughput, source_model, split_meta, split_parts, training_data,
                                        training_record, transfer_model)


def transfer_study(opts: TrainOptions, fam: MorphologyOptions, dataset: str, seed: int, device: dict[str, Any],
                   t_start: float) -> dict[str, Any]:
    """Scratch vs transferred, one filter pooled vs per filter vs combined, on one CLASH split and budget."""
    from training.cnn import predict_array, save_artifact, weighted_layers
    from training.plots import write_training_plots

    if dataset != "clash":
        raise StampflowError("--set study=transfer runs on CLASH data (with --from the CANDELS model)")
    if not opts.from_model:
        raise StampflowError("--set study=transfer needs --from MODEL (the CANDELS model to transfer)")
    source, source_info = source_model(opts)
    if int(source.inputs[0].shape[-1]) != 1:
        raise StampflowError(f"the study transfers a single-band model; {source_info.name} takes "
                             f"{int(source.inputs[0].shape[-1])} channels")
    size = int(source.inputs[0].shape[1])
    filters = parse_filters(fam.filters)
    if len(filters) < 2:
        raise StampflowError("the study compares filters: give at least two (default all 16)")
    d = DEFAULTS["clash"]
    epochs = opts.epochs or d["epochs"]
    batch = opts.batch_size or d["batch"]
    lr_scratch = opts.learning_rate or d["lr"]
    lr_transfer = opts.learning_rate or TRANSFER_LR
    patience = d["patience"] if fam.patience is None else fam.patience
    loss = fam.loss
    freeze = int(opts.freeze or 0)

    raw = load_morphology(opts.data, dataset, filters=filters, stack="channels", size=size, recipe=None,
                          limit=fam.limit, progress=True)
    data = raw.with_recipe(PREPROCESS)
    parts = split_parts(data, seed)
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
        arms[arm] = {"note": note, "test": short(rep), "test_per_row_filter": per_filter(test, pred),
                     "test_rmse_by_galaxy_rows": by_rows,
                     "epochs_run": [r.epochs_run for r in runs], "seconds": float(sum(r.seconds for r in runs)),
                     "train_images_per_s": float(np.mean([r.images_per_s for r in runs])) if runs else None}
        say(f"  {arm:<22} test RMSE {rep['rmse']:.4f}  top-class accuracy {rep['top_class_accuracy']:.3f}")

    def train_arm(model, x_fit, y_fit, x_val, y_val, lr, desc):
        return fit_model(model, x_fit, y_fit, x_val, y_val, epochs=epochs, batch=batch, lr=lr, loss=loss,
                         seed=seed, patience=patience, desc=desc)

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
    served_ips = served_throughput(model, data.x[test_i])
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
    name = fam.name or "morphology-clash"
    transfer = {"from": f"{source_info.name}@{source_info.version}", "from_path": str(source_info.path),
                "source_input_spec": source_info.metadata.get("input_spec"),
                "source_trained_on": source_info.metadata.get("trained_on"),
                "channel_expansion": expansion_note(source, len(filters)), "freeze": freeze, "frozen_layers": frozen,
                "weighted_layers": [layer.name for layer in weighted_layers(model)]}
    metrics = {"test": report, "test_rmse": report["rmse"], "test_rmse_paper": report["rmse_paper"],
               "test_top_class_accuracy": report.get("top_class_accuracy"), "validation": short(val_report),
               "test_per_row_filter": per_filter(test, pred), "paper_clash_test_rmse": PAPER_RMSE,
               "train_images_per_s": result.images_per_s, "predict_images_per_s_batch256": served_ips,
               "note": "scores on mock stamps drawn from the real label rows (see training_data)"}
    training = training_record(result, epochs, batch, lr_transfer, loss, patience, seed, device, transfer,
                               "training.morphology.network.build_model via expand_input_channels")
    spec = InputSpec.from_dict(input_spec_dict(filters, size))
    with tempfile.TemporaryDirectory(prefix="stampflow-morphology-plots-") as tmp:
        plots = write_training_plots(result.history, Path(tmp), report, TASK, CLASSES, true=test.y, pred=pred,
                                     name=name)
        plots["study"] = plot_study(arms, filters, Path(tmp) / "transfer_study.png",
                                    study["galaxy_level_floor_rmse"]).name
        out = save_artifact(model, name=name, family=FAMILY_NAME, version=opts.version,
                            out_root=opts.out_root, task=TASK, classes=CLASSES, input_spec=spec,
                            preprocess=dict(PREPROCESS), training_data=training_data(opts.data, data, dataset),
                            split=split_meta(data, parts, seed), metrics=metrics, trained_on="mock",
                            training=training, plots_from=Path(tmp), extra={"plots": plots, "study": study})
    check_served(out, raw.subset(test_i), pred)
    say(f"morphology study: saved the transferred combined model {out}; serving {served_ips:.0f} images/s")
    return {"name": name, "version": out.name, "artifact": str(out), "dataset": dataset, "study": study,
            "trained_on": "mock", "seconds": time.perf_counter() - t_start}


def plot_study(arms: dict[str, dict[str, Any]], filters: Sequence[str], path: Path,
               galaxy_floor: float | None = None) -> Path:
    """Test RMSE per arm (bars), and per row filter for the arms that train on CLASH (lines)."""
    from training.plots import pyplot

    plt = pyplot()
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
