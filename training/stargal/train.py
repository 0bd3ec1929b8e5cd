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
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ModelInfo
from models.stargal import CLASSES, StarGalaxyGP, pca_fit
from schemas.errors import StampflowError
from training.evaluation import classification_report, next_version, stratified_folds, stratified_split
from training.family import TrainOptions, say
from training.stargal.artifact import DEFAULT_VERSION, FAMILY, NAME, metadata, weight_arrays, write_artifact
from training.stargal.data import StarGalLoadInfo, load_stargal_dir
from training.stargal.evaluate import predict_images
from training.stargal.options import StargalOptions
from training.stargal.selection import Split, apply_transform, feature_transform, format_table, make_gp, select


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
    images, labels, names, info = load_stargal_dir(data, return_info=True)
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


def make_split(labels: np.ndarray, o: StargalOptions, seed: int, data: Path) -> Split:
    y = np.array([CLASSES.index(lbl) for lbl in labels])
    if np.bincount(y, minlength=len(CLASSES)).min() < o.folds + 1:
        raise StampflowError(f"too few cutouts per class in {data} for {o.folds}-fold selection")
    train_idx, hold_idx = stratified_split(y, o.holdout_fraction, seed)
    return Split(y=y, onehot=np.eye(len(CLASSES))[y], train_idx=train_idx, hold_idx=hold_idx,
                 fold_of=stratified_folds(y[train_idx], o.folds, seed))


def training_data_record(data: Path, info: StarGalLoadInfo, labels: np.ndarray, n_used: int,
                         o: StargalOptions) -> dict[str, Any]:
    return {"path": str(Path(data).resolve()), "n_files": info.n_files, "n_duplicates_dropped": info.n_duplicates,
            "duplicates": [list(d) for d in info.duplicates], "n_used": int(n_used),
            "subset_max_per_class": o.max_per_class, "class_counts": {c: int((labels == c).sum()) for c in CLASSES},
            "sha256_of_sorted_file_hashes": info.dataset_sha256()}


def train(opts: TrainOptions, options: StargalOptions | None = None) -> dict[str, Any]:
    """Train, select, evaluate and save a star/galaxy artifact; returns a JSON-able summary."""
    t_start = time.perf_counter()
    o = options or StargalOptions()
    seed, quiet, data = int(opts.seed), o.quiet, Path(opts.data)
    out_dir = output_dir(opts, o)
    version = out_dir.name

    images, labels, names, info = load_data(data, o, seed, quiet)
    split = make_split(labels, o, seed, data)
    table, best, flat_by_norm = select(images, split, o, seed, progress=not quiet)
    say(format_table(table), quiet=quiet)

    # -- final model: chosen variant on the whole training part, smoothness optimised too
    norm, dims = best["normalisation"], (best["dims"] if best["features"] != "pixels" else 0)
    flat_train = flat_by_norm[norm][split.train_idx]
    mean, comps = feature_transform(flat_train, dims)
    t0 = time.perf_counter()
    gp = make_gp(o, seed, final=True).fit(apply_transform(flat_train, mean, comps), split.onehot[split.train_idx])
    final_fit_seconds = time.perf_counter() - t0
    pca_evr = float(pca_fit(flat_train, dims)[2].sum()) if comps.size else None
    arrays = weight_arrays(gp, flat_train, mean, comps, split, info.hashes)
    meta = metadata(version=version, o=o, seed=seed, gp=gp, norm=norm, comps=comps, best=best, pca_evr=pca_evr,
                    training_data=training_data_record(data, info, labels, len(images), o), split=split,
                    table=table)

    # -- evaluate the artifact exactly as it will be served
    model = StarGalaxyGP.from_arrays(ModelInfo(NAME, version, FAMILY, out_dir, meta), meta, arrays)
    hold_idx = split.hold_idx
    t0 = time.perf_counter()
    pred_idx, _, unc = predict_images(model, images[hold_idx], [names[i] for i in hold_idx])
    holdout_seconds = time.perf_counter() - t0
    report = classification_report(split.y[hold_idx], pred_idx, CLASSES)
    report["mean_uncertainty"] = float(unc.mean()) if len(unc) else None
    meta["metrics"] = {"holdout": report, "holdout_accuracy": report["accuracy"],
                       "holdout_accuracy_ci95": report["accuracy_ci95"],
                       "cv_accuracy": best["val_accuracy"], "cv_accuracy_std": best["val_accuracy_std"]}
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
            "metrics": meta["metrics"], "comparison": table, "training_data": meta["training_data"],
            "split": meta["split"], "seconds": meta["timing"]["total_train_seconds"]}
