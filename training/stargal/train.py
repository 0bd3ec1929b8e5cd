"""``stampflow train stargal``: train, select, evaluate and save the star/galaxy MuyGPs model.

1. load ``star_N.fits`` / ``galaxy_N.fits``, drop byte-identical duplicates (sha256), fit to 20x20;
2. stratified, seeded hold-out split (default 80/20) -- the hold-out part is touched once, at the end;
3. model selection on the training part by stratified k-fold CV (default 5) over every normalisation x feature
   setting (`training.stargal.selection`; MuyGPyS optimisation of length scale and noise on the LOO objective);
4. final fit of the chosen variant on the whole training part, now also optimising the Matern smoothness nu;
5. the artifact is scored on the hold-out part through the same path the engine uses (`prepare_batch` ->
   `StarGalaxyGP.predict_batch`): accuracy with a 95% Wilson interval, confusion matrix, per-class metrics;
6. ``<out_root>/stargal/<version>/`` gets ``weights.npz``, ``metadata.json`` and PNG plots
   (`training.stargal.artifact`).
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ZTF_PIXEL_SCALE, InputSpec, ModelInfo
from models.stargal import CLASSES, StarGalaxyGP, calibrated_probabilities, pca_fit, probabilities_from_means
from models.stargal_recipe import StampRecipe, hand_features
from schemas.stamps import StampKind
from schemas.errors import StampflowError
from training.evaluation import classification_report, next_version, stratified_folds, stratified_split
from training.family import TrainOptions, say
from training.calibration import expected_calibration_error, reliability_bins
from training.stargal.alert_data import grouped_folds, load_alert_set
from training.stargal.alert_training import (Design, Rows, alert_cv, alert_report, fit_feature_map, thin_alert_stars,
                                             fit_score_temperature, ood_threshold, stamp_rows)
from training.stargal.augment import broaden_psf
from training.stargal.artifact import DEFAULT_VERSION, FAMILY, NAME, metadata, weight_arrays, write_artifact
from training.stargal.data import StarGalLoadInfo, load_stargal_dir
from training.stargal.evaluate import predict_images
from training.stargal.options import StargalOptions
from training.stargal.selection import Split, format_table, make_gp, select


def output_dir(opts: TrainOptions, o: StargalOptions) -> Path:
    """``<root>/stargal/<version>``: the next free version unless one is given; an existing one is refused
    unless ``overwrite``."""
    root = opts.registry_root
    out_dir = root / NAME / (opts.version or next_version(root, NAME, DEFAULT_VERSION))
    if out_dir.exists() and not o.overwrite:
        raise StampflowError(f"artifact {out_dir} already exists (choose another --version)")
    return out_dir


def load_data(data: Path, o: StargalOptions, seed: int, quiet: bool):
    """Images, labels, names and load info; with ``max_per_class`` a seeded random subset per class."""
    images, labels, names, info = load_stargal_dir(data, size=o.size, return_info=True)
    say(f"loaded {len(images)} cutouts from {data} ({info.n_files} files, {info.n_duplicates} duplicates "
        "dropped)", quiet=quiet)
    if o.max_per_class:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:o.max_per_class]
                                       for c in CLASSES]))
        images, labels = images[keep], labels[keep]
        names = [names[i] for i in keep]
        info.hashes = [info.hashes[i] for i in keep]
    return images, labels, names, info


def serving_spec(o: StargalOptions) -> InputSpec:
    """What the artifact will declare: the chosen stamp kind, centre-cropped to ``size`` at ZTF's plate scale,
    with the NaN rule of ``nan_fill``."""
    return InputSpec(survey="ZTF", stamp_kinds=(StampKind(o.stamp),), size=o.size, pixel_scale=ZTF_PIXEL_SCALE,
                     nan_fill=o.nan_fill)


def check_recipe_options(o: StargalOptions) -> None:
    """Option combinations training cannot honour, as one-line errors before any work."""
    if o.calibrate == "temperature" and not o.alerts:
        raise StampflowError("calibrate=temperature is fitted in the alert CV: give --set alerts=...")
    if o.calibrate == "temperature" and o.folds != o.alert_folds:
        raise StampflowError("calibrate=temperature shares the curated and alert CV folds: set folds equal to "
                             "alert_folds")
    if (o.symmetrise or o.hand_features_weight) and o.size % 2 == 0:
        raise StampflowError(f"symmetrise and hand features need an odd size (the object at the centre pixel), "
                             f"got size={o.size}")


def make_split(labels: np.ndarray, o: StargalOptions, seed: int, data: Path, fold_seed: int | None = None) -> Split:
    y = np.array([CLASSES.index(lbl) for lbl in labels])
    if np.bincount(y, minlength=len(CLASSES)).min() < o.folds + 1:
        raise StampflowError(f"too few cutouts per class in {data} for {o.folds}-fold selection")
    train_idx, hold_idx = stratified_split(y, o.holdout_fraction, seed)
    return Split(y=y, onehot=np.eye(len(CLASSES))[y], train_idx=train_idx, hold_idx=hold_idx,
                 fold_of=stratified_folds(y[train_idx], o.folds, seed if fold_seed is None else fold_seed))


def training_data_record(data: Path, info: StarGalLoadInfo, labels: np.ndarray, n_used: int,
                         o: StargalOptions) -> dict[str, Any]:
    return {"path": str(Path(data).resolve()), "n_files": info.n_files, "n_duplicates_dropped": info.n_duplicates,
            "duplicates": [list(d) for d in info.duplicates], "n_used": int(n_used),
            "subset_max_per_class": o.max_per_class, "class_counts": {c: int((labels == c).sum()) for c in CLASSES},
            "sha256_of_sorted_file_hashes": info.dataset_sha256()}


def temperature_block(cv: dict[str, np.ndarray], cut_y: np.ndarray, alert_y: np.ndarray) -> dict[str, Any]:
    """The temperature ``a`` fitted on the curated out-of-fold predictions, with ECE before and after on the
    sets it can be measured on here (the hold-out is added once the final model is scored)."""
    a = fit_score_temperature(cv["cut_means"], cut_y)
    cut_raw = probabilities_from_means(cv["cut_means"])
    return {"method": "temperature", "a": a, "b": 0.0,
            "fitted_on": "out-of-fold predictions of the curated training part (CV folds shared with the "
                         "object-grouped alert folds); negative log-likelihood",
            "rule": "p_star = sigmoid(a * (mu_star - mu_galaxy) / 2); labels unchanged",
            "ece_before": {"curated_cv": expected_calibration_error(cut_raw, cut_y),
                           "alerts_cv": expected_calibration_error(cv["probabilities"], alert_y)},
            "ece_after": {"curated_cv": expected_calibration_error(calibrated_probabilities(cv["cut_means"], a),
                                                                   cut_y),
                          "alerts_cv": expected_calibration_error(calibrated_probabilities(cv["means"], a),
                                                                  alert_y)}}


def train(opts: TrainOptions, options: StargalOptions | None = None) -> dict[str, Any]:
    """Train, select, evaluate and save a star/galaxy artifact; returns a JSON-able summary."""
    t_start = time.perf_counter()
    o = options or StargalOptions()
    check_recipe_options(o)
    seed, quiet, data = int(opts.seed), o.quiet, Path(opts.data)
    # cv_seed varies the folds and the GP optimisation batches while the hold-out part stays put.
    cv_seed = seed if o.cv_seed is None else o.cv_seed
    out_dir = output_dir(opts, o)
    version = out_dir.name

    images, labels, names, info = load_data(data, o, seed, quiet)
    split = make_split(labels, o, seed, data, cv_seed)
    # The pixel step of the served recipe (neighbour suppression) comes before selection, as it will in serving.
    recipe = StampRecipe(nan_fill=o.nan_fill, symmetrise=o.symmetrise, sym_radius=o.sym_radius,
                         sym_k_sigma=o.sym_k_sigma)
    row_recipe = replace(recipe, hand_size=o.hand_size)  # the same pixel step, then the hand features' method
    stamps = recipe.stamps(images)
    table, best, flat_by_norm = select(stamps, split, o, cv_seed, progress=not quiet)
    say(format_table(table), quiet=quiet)

    # -- alerts: labelled by their PS1 reference, scored by object-grouped CV, then part of the training set
    norm, dims = best["normalisation"], (best["dims"] if best["features"] != "pixels" else 0)
    with_hand = o.hand_features_weight > 0
    design = Design(norm, dims, o.hand_features_weight)
    spec = serving_spec(o)
    hand_all = hand_features(stamps, o.hand_size) if with_hand else np.zeros((len(stamps), 0))
    rows_train = Rows(flat_by_norm[norm], hand_all).take(split.train_idx)
    onehot_train = split.onehot[split.train_idx]
    n_curated, cut_fold_of = len(rows_train), split.fold_of
    if o.curated_psf_fwhm:
        # Template-seeing copies of the curated training cutouts (training.stargal.augment); a copy shares its
        # original's CV fold, so no fold scores a cutout whose copy it trained on.
        broad, _ = broaden_psf(images[split.train_idx], o.curated_psf_fwhm, o.curated_native_fwhm, seed)
        rows_train = Rows.concat([rows_train, stamp_rows(broad, row_recipe, norm, with_hand)])
        onehot_train = np.concatenate([onehot_train, onehot_train])
        cut_fold_of = np.concatenate([cut_fold_of, cut_fold_of])
        say(f"curated: {n_curated} training cutouts plus as many copies broadened to FWHM "
            f"{o.curated_psf_fwhm[0]}-{o.curated_psf_fwhm[1]} px", quiet=quiet)
    alerts_block, alert_candids, alert_cv_result, calibration = None, None, None, None
    if o.alerts:
        aset = load_alert_set([Path(a) for a in o.alerts], spec)
        alert_y = np.array([CLASSES.index(lbl) for lbl in aset.labels])
        alert_rows = stamp_rows(aset.images, row_recipe, norm, with_hand)
        folds = grouped_folds(aset.object_ids, aset.labels, o.alert_folds, cv_seed)
        say(f"alerts: {len(alert_y)} with a confident PS1 reference ({int((alert_y == 0).sum())} stars, "
            f"{int((alert_y == 1).sum())} galaxies, {len(set(aset.object_ids))} objects); "
            f"{o.alert_folds}-fold CV grouped by objectId", quiet=quiet)
        trainable = thin_alert_stars(alert_y, o.alert_star_keep, seed)
        alert_cv_result = alert_cv(rows_train, onehot_train, alert_rows, alert_y, folds, design,
                                   lambda: make_gp(o, cv_seed, final=False, smoothness=o.smoothness), o.ood_quantile,
                                   cut_fold_of=cut_fold_of if o.calibrate == "temperature" else None,
                                   trainable=trainable)
        served_probs = alert_cv_result["probabilities"]
        if o.calibrate == "temperature":
            # fitted on the curated cutouts as published (their out-of-fold predictions), not the copies
            curated_cv = {**alert_cv_result, "cut_means": alert_cv_result["cut_means"][:n_curated]}
            calibration = temperature_block(curated_cv, split.y[split.train_idx], alert_y)
            served_probs = calibrated_probabilities(alert_cv_result["means"], calibration["a"])
        alerts_block = alert_report(alert_y, served_probs, alert_cv_result["out_of_distribution"],
                                    aset.object_ids, o.alert_folds)
        alerts_block["ece_uncalibrated"] = expected_calibration_error(alert_cv_result["probabilities"], alert_y)
        alerts_block["paths"] = [str(Path(a).resolve()) for a in o.alerts]
        alerts_block["messages_read"] = aset.n_messages
        say(f"alerts CV: balanced accuracy {alerts_block['balanced_accuracy']:.3f}, recall star "
            f"{alerts_block['recall_star']:.3f} galaxy {alerts_block['recall_galaxy']:.3f}, ECE "
            f"{alerts_block['ece']:.3f}, flagged {alerts_block['abstention_rate']:.3f}", quiet=quiet)
        rows_train = Rows.concat([rows_train, alert_rows.take(trainable)])
        onehot_train = np.concatenate([onehot_train, np.eye(len(CLASSES))[alert_y[trainable]]])
        alert_candids = [c for c, keep in zip(aset.candids, trainable) if keep]
        alerts_block["n_star_trained"] = int((trainable & (alert_y == 0)).sum())
        alerts_block["star_keep"] = o.alert_star_keep

    # -- final model: chosen variant on the whole training set (smoothness optimised unless fixed)
    fmap = fit_feature_map(rows_train, design)
    features = fmap(rows_train)
    mean, comps = fmap.mean, fmap.comps
    t0 = time.perf_counter()
    gp = make_gp(o, cv_seed, final=True, smoothness=o.smoothness).fit(features, onehot_train)
    final_fit_seconds = time.perf_counter() - t0
    threshold = ood_threshold(gp, features, o.ood_quantile)
    pca_evr = float(pca_fit(rows_train.flat, dims)[2].sum()) if comps.size else None
    arrays = weight_arrays(gp, features, onehot_train, mean, comps, [info.hashes[i] for i in split.train_idx],
                           alert_candids)
    meta = metadata(version=version, o=o, seed=seed, gp=gp, norm=norm, comps=comps, best=best, pca_evr=pca_evr,
                    training_data=training_data_record(data, info, labels, len(images), o), split=split,
                    table=table, spec=spec, ood_threshold=threshold)
    meta["split"]["cv_seed"] = cv_seed
    served_recipe = replace(recipe, hand_size=o.hand_size if with_hand else None,
                            hand_mean=tuple(fmap.hand_mean.tolist()), hand_std=tuple(fmap.hand_std.tolist()),
                            hand_scale=fmap.hand_scale)
    if served_recipe != StampRecipe():
        meta["preprocessing"] = served_recipe.as_metadata()
    if with_hand:
        meta["feature_reduction"]["note"] += ("; then the two hand features of preprocessing.hand_features "
                                              "(standardised, scaled) are appended")
    if calibration is not None:
        meta["calibration"] = calibration
        meta["probabilities"] = ("p_star = sigmoid(a * (posterior_mean_star - posterior_mean_galaxy) / 2), "
                                 "p_galaxy = 1 - p_star (calibration: a); the label is the larger posterior mean")
    if o.trained_on_note:
        meta["note"] = o.trained_on_note
    if alerts_block is not None:
        meta["training_data"]["alerts"] = {k: alerts_block[k] for k in ("paths", "messages_read", "n", "n_objects",
                                                                        "n_star", "n_galaxy", "n_star_trained",
                                                                        "star_keep")}
        meta["training_data"]["alerts"]["labels"] = ("PS1 sgscore1 of the nearest source within 1\" (> 0.9 star, "
                                                    "< 0.1 galaxy); the reference is never a feature")

    # -- evaluate the artifact exactly as it will be served
    model = StarGalaxyGP.from_arrays(ModelInfo(NAME, version, FAMILY, out_dir, meta), meta, arrays)
    hold_idx = split.hold_idx
    t0 = time.perf_counter()
    pred_idx, hold_probs, unc = predict_images(model, images[hold_idx], [names[i] for i in hold_idx])
    holdout_seconds = time.perf_counter() - t0
    report = classification_report(split.y[hold_idx], pred_idx, CLASSES)
    report["mean_uncertainty"] = float(unc.mean()) if len(unc) else None
    report["ece"] = expected_calibration_error(hold_probs, split.y[hold_idx])
    report["abstention_rate"] = float((unc > threshold).mean()) if len(unc) else None
    meta["reliability"] = {"curated hold-out": reliability_bins(hold_probs, split.y[hold_idx])}
    if alert_cv_result is not None:
        meta["reliability"]["alerts (grouped CV)"] = reliability_bins(served_probs, alert_y)
    if calibration is not None:
        # The same model without the temperature, for the before/after record (labels are identical).
        model.calibration = None
        _, raw_hold, _ = predict_images(model, images[hold_idx], [names[i] for i in hold_idx])
        model.calibration = calibration
        calibration["ece_before"]["curated_holdout"] = expected_calibration_error(raw_hold, split.y[hold_idx])
        calibration["ece_after"]["curated_holdout"] = report["ece"]
        meta["reliability"]["curated hold-out, no temperature"] = reliability_bins(raw_hold, split.y[hold_idx])
        meta["reliability"]["alerts (grouped CV), no temperature"] = reliability_bins(
            alert_cv_result["probabilities"], alert_y)
    meta["metrics"] = {"holdout": report, "holdout_accuracy": report["accuracy"],
                       "holdout_accuracy_ci95": report["accuracy_ci95"],
                       "cv_accuracy": best["val_accuracy"], "cv_accuracy_std": best["val_accuracy_std"],
                       "holdout_ece": report["ece"]}
    if alerts_block is not None:
        meta["metrics"]["alerts_cv"] = {k: v for k, v in alerts_block.items() if k not in ("paths",)}
    meta["timing"] = {"final_fit_seconds": final_fit_seconds, "holdout_predict_seconds": holdout_seconds,
                      "total_train_seconds": None}

    def finish(m: dict[str, Any]) -> None:
        m["timing"]["total_train_seconds"] = time.perf_counter() - t_start

    write_artifact(out_dir, arrays, meta, report, table, plots=o.plots, finish=finish)
    lo, hi = report["accuracy_ci95"]
    say(f"chosen: {norm} / {best['features']} ({best['dims']} dims), CV accuracy {best['val_accuracy']:.4f}; "
        f"hold-out accuracy {report['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={report['n']}); "
        f"artifact {out_dir}", quiet=quiet)
    return {"name": NAME, "version": version, "artifact": str(out_dir),
            "size_bytes": sum(p.stat().st_size for p in out_dir.iterdir()),
            "normalisation": norm, "feature_reduction": meta["feature_reduction"], "hyperparameters": gp.hyperparameters,
            "metrics": meta["metrics"], "ood": meta["ood"], "input_spec": meta["input_spec"], "comparison": table, "training_data": meta["training_data"],
            "split": meta["split"], "seconds": meta["timing"]["total_train_seconds"],
            "preprocessing": meta.get("preprocessing"), "calibration": meta.get("calibration")}
