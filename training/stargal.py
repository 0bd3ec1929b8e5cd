"""Train and evaluate the star/galaxy MuyGPs model (``stampflow train stargal`` / ``stampflow evaluate``).

Training (`train`):

1. load ``star_N.fits`` / ``galaxy_N.fits``, drop byte-identical duplicates (sha256), fit to 20x20;
2. stratified, seeded hold-out split (default 80/20) -- the hold-out part is touched once, at the end;
3. model selection on the training part by stratified k-fold CV (default 5): for every normalisation
   (raw, minmax, l2, zscore, asinh) x feature setting (all 400 pixels, PCA to a few dims) fit a MuyGPs
   classifier per fold (MuyGPyS Bayesian optimisation of length scale and noise on the LOO objective) and
   score the held-out fold; among variants within one standard error of the best pooled CV accuracy, the
   most sky/gain-invariant normalisation wins, then fewer dims. Each variant is also refitted on
   the whole training part and scored on the hold-out part, for the table only (not for choosing);
4. final fit of the chosen variant on the whole training part, now also optimising the Matern smoothness nu;
5. the saved artifact is reloaded through the serving class and scored on the hold-out part through the same
   path the engine uses (`prepare_batch` -> `StarGalaxyGP.predict_batch`): accuracy with a 95% Wilson interval,
   confusion matrix, per-class precision/recall;
6. ``<out_root>/stargal/<version>/`` gets ``weights.npz`` (plain arrays), ``metadata.json`` and PNG plots.

`evaluate` scores any artifact on any directory of labelled cutouts through the serving path, and reports how
many evaluated files were in the model's training set (a GP remembers its training points, so those are
trivially right); the ``unseen`` block scores only the others.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.base import ModelInfo
from models.preprocess import NORMALISATIONS, load_stargal_dir, normalise, prepare_batch
from models.registry import BUNDLED_ROOT, Registry, _version_key
from models.stargal import CLASSES, INPUT_SPEC, METRIC_FOR_KERNEL, WEIGHTS_FILE, StarGalaxyGP, pca_fit
from models.versioning import code_version
from schemas.errors import StampflowError
from schemas.packet import Origin, Packet, Stamp, StampEncoding, StampImage, StampKind
from training.evaluation import (classification_report, confusion_matrix, next_version, stratified_folds,
                                 stratified_split, wilson_interval)
from training.gp import GPClassifier

NAME = "stargal"
# Normalisations ordered by invariance to an additive sky level and a gain: z-score and asinh (median/MAD)
# remove both, min-max too but is outlier-driven, l2 only removes gain, raw neither.
INVARIANCE_PREFERENCE = ("zscore", "asinh", "minmax", "l2", "raw")
FAMILY = "stargal"
DEFAULT_VERSION = "1.0.0"


# ------------------------------------------------------------------------------------------------ stats


# ---------------------------------------------------------------------------------------------- features


def _feature_transform(flat_fit: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Centring mean and projection (``(dims, D)``, or ``(0, D)`` meaning identity) fitted on ``flat_fit``."""
    if dims and dims < flat_fit.shape[1]:
        mean, comps, _ = pca_fit(flat_fit, dims)
        return mean, comps
    return flat_fit.mean(axis=0), np.zeros((0, flat_fit.shape[1]))


def _apply(flat: np.ndarray, mean: np.ndarray, comps: np.ndarray) -> np.ndarray:
    x = flat - mean
    return x @ comps.T if comps.size else x


def _features_label(dims: int) -> str:
    return f"pca{dims}" if dims else "pixels"


# ------------------------------------------------------------------------------------- serving-path scoring


def packets_from_images(images: np.ndarray, names: Sequence[str]) -> list[Packet]:
    """Wrap cutouts as science-stamp ZTF packets, so scoring runs through `prepare_batch` like the engine."""
    now = time.time()
    packets = []
    for i, (img, name) in enumerate(zip(images, names)):
        data = np.asarray(img, dtype=np.float32)
        image = StampImage(data=data, padded=False, original_shape=tuple(data.shape),
                           nan_fraction=float(np.isnan(data).mean()))
        stamp = Stamp(kind=StampKind.SCIENCE, raw=b"", encoding=StampEncoding.FITS, nominal_size=data.shape[0],
                      _image=image)
        packets.append(Packet(candid=i, object_id=str(name), survey="ZTF", alert_time=None, ra=None, dec=None,
                              band=None, schema_version="fits-cutout", stamps={StampKind.SCIENCE: stamp},
                              origin=Origin(file=str(name)), ingest_time=now))
    return packets


def predict_images(model: StarGalaxyGP, images: np.ndarray, names: Sequence[str], batch_size: int = 256,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class indices (N,), probabilities (N, K) and uncertainty (N,) via prepare_batch + model.predict_batch."""
    from tqdm.auto import tqdm

    k = len(model.classes)
    idx, probs, unc = np.zeros(0, int), np.zeros((0, k)), np.zeros(0)
    out_idx, out_p, out_u = [], [], []
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
        packets = packets_from_images(images[s:s + batch_size], names[s:s + batch_size])
        batch, errors = prepare_batch(packets, model.input_spec)
        bad = [e for e in errors if e is not None]
        if bad:
            raise StampflowError(f"cannot prepare cutout {packets[errors.index(bad[0])].object_id}: {bad[0]}")
        pred = model.predict_batch(batch)
        out_idx.append(np.array([model.classes.index(lbl) for lbl in pred.labels], dtype=int))
        out_p.append(pred.probabilities)
        out_u.append(pred.uncertainty)
    if out_idx:
        idx, probs, unc = np.concatenate(out_idx), np.concatenate(out_p), np.concatenate(out_u)
    return idx, probs, unc


# ------------------------------------------------------------------------------------------------- train


def _next_version(root: Path) -> str:
    return next_version(root, NAME, DEFAULT_VERSION)


def format_table(rows: Sequence[dict]) -> str:
    head = f"{'normalisation':<13} {'features':<8} {'dims':>4} {'CV acc':>7} {'+-':>6} {'hold-out':>8} " \
           f"{'fit s':>6} {'peak MB':>8} {'MuyGPyS diff MB':>15}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['normalisation']:<13} {r['features']:<8} {r['dims']:>4} {r['val_accuracy']:>7.4f} "
                     f"{r['val_accuracy_std']:>6.4f} {r['holdout_accuracy']:>8.4f} {r['fit_seconds']:>6.2f} "
                     f"{r['peak_memory_mb']:>8.1f} {r['muygpys_diff_tensor_mb']:>15.1f}"
                     + ("  <- chosen" if r.get("chosen") else ""))
    return "\n".join(lines)


def train(data_dir: str | Path, out_root: str | Path | None = None, seed: int = 0, version: str | None = None,
          normalisations: Sequence[str] = NORMALISATIONS, progress: bool = True, *,
          pca_dims: Sequence[int] = (0, 16, 40), folds: int = 5, holdout_fraction: float = 0.2,
          nn_count: int = 30, kernel: str = "matern", batch_count: int = 400,
          selection_optimizer: str = "lbfgsb", final_optimizer: str = "bayes+lbfgsb", init_points: int = 5,
          n_iter: int = 20, optimise_smoothness: bool = True,
          max_per_class: int | None = None, plots: bool = True, overwrite: bool = False,
          verbose: bool = True) -> dict[str, Any]:
    """Train, select, evaluate and save a star/galaxy artifact; returns a JSON-able summary.

    ``pca_dims``: feature settings to compare (0 = all pixels). ``folds``: CV folds for selection.
    ``selection_optimizer``/``final_optimizer``: ``lbfgsb``, ``bayes`` or ``bayes+lbfgsb`` (MuyGPyS
    L_BFGS_B_optimize / Bayes_optimize; selection fits keep Matern nu = 0.5, the final fit also optimises nu
    when ``optimise_smoothness``). ``init_points``/``n_iter``: Bayesian-optimisation budget of the final fit.
    ``max_per_class``: use a seeded random subset (for quick runs/tests). ``version`` None: next free
    version (``1.0.0`` for the first). An existing version is only replaced with ``overwrite=True``.
    """
    t_start = time.perf_counter()
    from tqdm.auto import tqdm

    for norm in normalisations:
        if norm not in NORMALISATIONS:
            raise StampflowError(f"unknown normalisation '{norm}' (choose from {', '.join(NORMALISATIONS)})")
    if kernel not in METRIC_FOR_KERNEL:
        raise StampflowError(f"unknown kernel '{kernel}' (matern or rbf)")
    if folds < 2:
        raise StampflowError("model selection needs at least 2 folds")
    out_root = Path(out_root) if out_root is not None else BUNDLED_ROOT
    version = version or _next_version(out_root)
    out_dir = out_root / NAME / version
    if out_dir.exists() and not overwrite:
        raise StampflowError(f"artifact {out_dir} already exists (choose another --version)")

    def say(msg: str) -> None:
        if verbose:
            print(msg, file=sys.stderr, flush=True)

    # -- data
    images, labels, names, info = load_stargal_dir(data_dir, return_info=True)
    say(f"loaded {len(images)} cutouts from {data_dir} ({info.n_files} files, {info.n_duplicates} duplicates "
        "dropped)")
    if max_per_class:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:max_per_class]
                                       for c in CLASSES]))
        images, labels = images[keep], labels[keep]
        names = [names[i] for i in keep]
        info.hashes = [info.hashes[i] for i in keep]
    y = np.array([CLASSES.index(lbl) for lbl in labels])
    if np.bincount(y, minlength=len(CLASSES)).min() < folds + 1:
        raise StampflowError(f"too few cutouts per class in {data_dir} for {folds}-fold selection")
    onehot = np.eye(len(CLASSES))[y]
    train_idx, hold_idx = stratified_split(y, holdout_fraction, seed)
    fold_of = stratified_folds(y[train_idx], folds, seed)

    # -- model selection
    flat_by_norm = {n: normalise(images, n).reshape(len(images), -1).astype(np.float64) for n in normalisations}
    variants = [(n, d) for n in normalisations for d in pca_dims]
    table: list[dict[str, Any]] = []

    def make_gp(final: bool) -> GPClassifier:
        return GPClassifier(kernel=kernel, nn_count=nn_count, batch_count=batch_count, init_points=init_points,
                            n_iter=n_iter, optimizer=final_optimizer if final else selection_optimizer,
                            optimise_smoothness=final and optimise_smoothness and kernel == "matern",
                            smoothness=0.5, seed=seed)

    bar = tqdm(total=len(variants) * (folds + 1), desc="stargal selection", unit="fit", disable=not progress)
    for norm, dims in variants:
        flat = flat_by_norm[norm]
        correct_per_fold, fold_times = [], []
        for f in range(folds):
            fit_rows, val_rows = train_idx[fold_of != f], train_idx[fold_of == f]
            mean, comps = _feature_transform(flat[fit_rows], dims)
            gp = make_gp(False).fit(_apply(flat[fit_rows], mean, comps), onehot[fit_rows])
            means, _ = gp.posterior(_apply(flat[val_rows], mean, comps))
            correct_per_fold.append((int((np.argmax(means, 1) == y[val_rows]).sum()), len(val_rows)))
            fold_times.append(gp.fit_seconds)
            bar.update(1)
        # Whole training part -> hold-out, with time and peak traced memory of fit + predict.
        tracemalloc.start()
        t0 = time.perf_counter()
        mean, comps = _feature_transform(flat[train_idx], dims)
        gp = make_gp(False).fit(_apply(flat[train_idx], mean, comps), onehot[train_idx])
        means, _ = gp.posterior(_apply(flat[hold_idx], mean, comps))
        full_seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        bar.update(1)
        d_eff = comps.shape[0] if comps.size else flat.shape[1]
        accs = [c / n for c, n in correct_per_fold]
        table.append({
            "normalisation": norm, "features": _features_label(dims), "dims": int(d_eff),
            "val_accuracy": sum(c for c, _ in correct_per_fold) / len(train_idx),
            "val_accuracy_std": float(np.std(accs)),
            "holdout_accuracy": float((np.argmax(means, 1) == y[hold_idx]).mean()),
            "fit_seconds": float(np.mean(fold_times)), "train_and_predict_seconds": full_seconds,
            "peak_memory_mb": peak / 1e6,
            # What MuyGPyS's make_train_tensors would hold: a (batch, k, k, features) float64 difference tensor.
            "muygpys_diff_tensor_mb": min(batch_count, len(train_idx)) * nn_count ** 2 * d_eff * 8 / 1e6,
            "hyperparameters": gp.hyperparameters,
        })
    bar.close()
    # One-standard-error rule: among variants whose CV accuracy is within one standard error of the best,
    # prefer normalisations invariant to sky level and gain, then fewer dims. Alert science stamps have a
    # different sky (median ~150 counts vs ~270 in the training cutouts) and band, and an offset-sensitive
    # normalisation puts them far outside the training distribution (posterior variance 10.6 vs 0.16 median).
    top = max(table, key=lambda r: r["val_accuracy"])
    se = top["val_accuracy_std"] / np.sqrt(folds)
    near = [r for r in table if r["val_accuracy"] >= top["val_accuracy"] - se - 1e-12]
    best = min(near, key=lambda r: (INVARIANCE_PREFERENCE.index(r["normalisation"]), r["dims"],
                                    -r["val_accuracy"]))
    best["chosen"] = True
    say(format_table(table))

    # -- final model: chosen variant on the whole training part, smoothness optimised too
    norm, dims = best["normalisation"], (best["dims"] if best["features"] != "pixels" else 0)
    flat = flat_by_norm[norm]
    mean, comps = _feature_transform(flat[train_idx], dims)
    t0 = time.perf_counter()
    gp = make_gp(True).fit(
        _apply(flat[train_idx], mean, comps), onehot[train_idx])
    final_fit_seconds = time.perf_counter() - t0
    hp = gp.hyperparameters
    hp_names = np.array(sorted(hp), dtype="<U32")
    pca_evr = None
    if comps.size:
        _, _, evr = pca_fit(flat[train_idx], dims)
        pca_evr = float(evr.sum())
    arrays = {
        "feature_mean": mean.astype(np.float64),
        "pca_components": comps.astype(np.float64),
        "train_features": _apply(flat[train_idx], mean, comps).astype(np.float32),
        "train_targets": (2.0 * onehot[train_idx] - 1.0).astype(np.float32),
        "train_labels": y[train_idx].astype(np.int8),
        "hyperparameter_names": hp_names,
        "hyperparameter_values": np.array([hp[k] for k in hp_names], dtype=np.float64),
        "train_file_sha256": np.array([np.frombuffer(bytes.fromhex(info.hashes[i]), dtype=np.uint8)
                                       for i in train_idx], dtype=np.uint8),
    }
    counts = {c: int((labels == c).sum()) for c in CLASSES}
    meta: dict[str, Any] = {
        "name": NAME, "version": version, "family": FAMILY, "classes": list(CLASSES),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(), "trained_on": "real",
        "input_spec": INPUT_SPEC.as_dict(),
        "normalisation": norm,
        "feature_reduction": {"method": "pca" if comps.size else "none", "dims": int(best["dims"]),
                              "explained_variance_ratio": pca_evr,
                              "note": "features = (normalised flattened 20x20 stamp - feature_mean) @ "
                                      "pca_components.T (all pixels when pca_components is empty)"},
        "gp": {"library": "MuyGPyS 0.9.1", "kernel": kernel, "metric": METRIC_FOR_KERNEL[kernel],
               "nn_count": nn_count, "nn_method": "exact (brute force)", "hyperparameters": hp,
               "targets": "+1 true class, -1 other (one column per class)",
               "optimiser": {"method": final_optimizer, "selection_method": selection_optimizer,
                             "loss": "cross_entropy (LOO over a class-balanced batch)",
                             "batch_count": batch_count, "init_points": init_points, "n_iter": n_iter,
                             "optimised": ["length_scale", "noise"] + (["smoothness"] if "smoothness" in hp
                                                                       and optimise_smoothness else []),
                             "scale": "analytic sigma^2 over the optimisation batch"},
               "distance_scale": gp.distance_scale},
        "probabilities": "p_c = clip((posterior_mean_c + 1) / 2, 0, 1), rows renormalised to sum to 1",
        "uncertainty": "MuyGPs posterior variance (sigma^2-scaled), shared by both classes",
        "nn_count": nn_count,
        "training_data": {"path": str(Path(data_dir).resolve()), "n_files": info.n_files,
                          "n_duplicates_dropped": info.n_duplicates,
                          "duplicates": [list(d) for d in info.duplicates],
                          "n_used": int(len(images)), "subset_max_per_class": max_per_class,
                          "class_counts": counts, "sha256_of_sorted_file_hashes": info.dataset_sha256()},
        "split": {"seed": seed, "method": "stratified hold-out, then stratified k-fold CV on the training part",
                  "fractions": {"train": 1.0 - holdout_fraction, "holdout": holdout_fraction},
                  "folds": folds,
                  "counts": {"train": int(len(train_idx)), "holdout": int(len(hold_idx)),
                             "train_per_class": {c: int((y[train_idx] == i).sum()) for i, c in enumerate(CLASSES)},
                             "holdout_per_class": {c: int((y[hold_idx] == i).sum())
                                                   for i, c in enumerate(CLASSES)}}},
        "selection": {"criterion": f"pooled {folds}-fold CV accuracy on the training part (Matern nu=0.5 "
                                   "during selection); among variants within one standard error of the best: "
                                   f"normalisation order {list(INVARIANCE_PREFERENCE)} (sky/gain invariant "
                                   "first), then fewer dims",
                      "table": table},
    }

    # -- evaluate the artifact exactly as it will be served
    model = StarGalaxyGP.from_arrays(ModelInfo(NAME, version, FAMILY, out_dir, meta), meta, arrays)
    t0 = time.perf_counter()
    pred_idx, _, unc = predict_images(model, images[hold_idx], [names[i] for i in hold_idx])
    holdout_seconds = time.perf_counter() - t0
    report = classification_report(y[hold_idx], pred_idx, CLASSES)
    report["mean_uncertainty"] = float(unc.mean()) if len(unc) else None
    meta["metrics"] = {"holdout": report, "holdout_accuracy": report["accuracy"],
                       "holdout_accuracy_ci95": report["accuracy_ci95"],
                       "cv_accuracy": best["val_accuracy"], "cv_accuracy_std": best["val_accuracy_std"]}
    meta["timing"] = {"final_fit_seconds": final_fit_seconds, "holdout_predict_seconds": holdout_seconds,
                      "total_train_seconds": None}

    # -- write atomically: temp dir next to the target, then rename
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        np.savez_compressed(tmp / WEIGHTS_FILE, **arrays)
        if plots:
            from training.plots import plot_confusion_matrix, plot_normalisation_comparison

            plot_confusion_matrix(report["confusion_matrix"]["matrix"], CLASSES, tmp / "confusion_matrix.png",
                                  title=f"stargal {version} hold-out (n={report['n']}, "
                                        f"acc {report['accuracy']:.3f})")
            plot_normalisation_comparison(table, tmp / "normalisation_comparison.png")
        meta["timing"]["total_train_seconds"] = time.perf_counter() - t_start
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    lo, hi = report["accuracy_ci95"]
    say(f"chosen: {norm} / {best['features']} ({best['dims']} dims), CV accuracy {best['val_accuracy']:.4f}; "
        f"hold-out accuracy {report['accuracy']:.4f} (95% CI {lo:.4f}-{hi:.4f}, n={report['n']}); "
        f"artifact {out_dir}")
    return {"name": NAME, "version": version, "artifact": str(out_dir),
            "size_bytes": sum(p.stat().st_size for p in out_dir.iterdir()),
            "normalisation": norm, "feature_reduction": meta["feature_reduction"], "hyperparameters": hp,
            "metrics": meta["metrics"], "comparison": table, "training_data": meta["training_data"],
            "split": meta["split"], "seconds": meta["timing"]["total_train_seconds"]}


# ---------------------------------------------------------------------------------------------- evaluate


def evaluate(model_spec_or_path: str | Path, data_dir: str | Path, batch_size: int = 256,
             progress: bool = False, roots: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """Score an artifact (``stargal``, ``stargal@1.0.0`` or a directory) on labelled cutouts in ``data_dir``."""
    info = Registry(roots).resolve(str(model_spec_or_path))
    if info.family != FAMILY:
        raise StampflowError(f"model {info.name}@{info.version} is a '{info.family}' model, not {FAMILY}")
    model = StarGalaxyGP.load(info)
    images, labels, names, data_info = load_stargal_dir(data_dir, size=INPUT_SPEC.size, return_info=True)
    y = np.array([model.classes.index(lbl) for lbl in labels])
    t0 = time.perf_counter()
    pred, probs, unc = predict_images(model, images, names, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    report = classification_report(y, pred, model.classes)
    result: dict[str, Any] = {"model": f"{info.name}@{info.version}", "artifact": str(info.path),
                              "data": {"path": str(Path(data_dir).resolve()), "n_files": data_info.n_files,
                                       "n_duplicates_dropped": data_info.n_duplicates,
                                       "sha256_of_sorted_file_hashes": data_info.dataset_sha256()},
                              **report,
                              "mean_uncertainty": float(unc.mean()) if len(unc) else None,
                              "seconds": seconds, "images_per_second": len(images) / seconds if seconds else None}
    with np.load(Path(info.path) / WEIGHTS_FILE, allow_pickle=False) as z:
        trained = {bytes(h).hex() for h in z["train_file_sha256"]} if "train_file_sha256" in z.files else set()
    seen = np.array([h in trained for h in data_info.hashes], dtype=bool)
    result["n_in_training_set"] = int(seen.sum())
    if seen.any():
        unseen = ~seen
        sub = classification_report(y[unseen], pred[unseen], model.classes)
        result["unseen"] = {k: sub[k] for k in ("n", "correct", "accuracy", "accuracy_ci95", "confusion_matrix",
                                                "per_class")}
    return result
