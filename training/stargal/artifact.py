"""The star/galaxy artifact: plain weight arrays, the metadata that documents them, and the atomic write.

``<out_root>/stargal/<version>/`` gets ``weights.npz`` (plain arrays, read with ``allow_pickle=False``),
``metadata.json`` and PNG plots; it is written to a temporary directory next to the target, then renamed.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from models.base import InputSpec
from models.stargal import CLASSES, METRIC_FOR_KERNEL, WEIGHTS_FILE
from models.versioning import code_version
from training.stargal.options import StargalOptions
from training.stargal.selection import INVARIANCE_PREFERENCE, Split, apply_transform

NAME = "stargal"
FAMILY = "stargal"
DEFAULT_VERSION = "1.0.0"


def weight_arrays(gp, features: np.ndarray, onehot: np.ndarray, mean: np.ndarray, comps: np.ndarray,
                  curated_hashes: list[str], alert_candids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """What `StarGalaxyGP.from_arrays` serves from: the training features and +/-1 targets, the feature
    transform, the hyperparameters, and what the model was trained on -- the sha256 of every curated training
    file and the candid of every training alert -- so an evaluation can tell seen inputs from unseen ones."""
    hp = gp.hyperparameters
    hp_names = np.array(sorted(hp), dtype="<U32")
    return {
        "feature_mean": mean.astype(np.float64),
        "pca_components": comps.astype(np.float64),
        "train_features": np.asarray(features, dtype=np.float32),
        "train_targets": (2.0 * onehot - 1.0).astype(np.float32),
        "train_labels": np.argmax(onehot, axis=1).astype(np.int8),
        "hyperparameter_names": hp_names,
        "hyperparameter_values": np.array([hp[k] for k in hp_names], dtype=np.float64),
        "train_file_sha256": np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in curated_hashes],
                                      dtype=np.uint8).reshape(len(curated_hashes), 32),
        "train_alert_candid": np.asarray(alert_candids if alert_candids is not None else [], dtype=np.int64),
    }


def metadata(*, version: str, o: StargalOptions, seed: int, gp, norm: str, comps: np.ndarray, best: dict[str, Any],
             pca_evr: float | None, training_data: dict[str, Any], split: Split,
             table: list[dict[str, Any]], spec: InputSpec, ood_threshold: float) -> dict[str, Any]:
    """metadata.json (metrics and timing are added once the served model has been scored)."""
    hp = gp.hyperparameters
    y, train_idx, hold_idx = split.y, split.train_idx, split.hold_idx
    return {
        "name": NAME, "version": version, "family": FAMILY, "classes": list(CLASSES),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(), "trained_on": "real",
        "input_spec": spec.as_dict(),
        "ood": {"rule": "posterior_variance_above", "threshold": ood_threshold, "quantile": o.ood_quantile,
                "meaning": f"flag out_of_distribution when the posterior variance exceeds the {o.ood_quantile} "
                           "quantile of the training set's leave-one-out posterior variances: the input is "
                           "further from every training stamp than almost all training stamps are from the rest"},
        "normalisation": norm,
        "feature_reduction": {"method": "pca" if comps.size else "none", "dims": int(best["dims"]),
                              "explained_variance_ratio": pca_evr,
                              "note": f"features = (normalised flattened {spec.size}x{spec.size} stamp - feature_mean) @ "
                                      "pca_components.T (all pixels when pca_components is empty)"},
        "gp": {"library": "MuyGPyS 0.9.1", "kernel": o.kernel, "metric": METRIC_FOR_KERNEL[o.kernel],
               "nn_count": o.nn_count, "nn_method": "exact (brute force)", "hyperparameters": hp,
               "targets": "+1 true class, -1 other (one column per class)",
               "optimiser": {"method": o.final_optimizer, "selection_method": o.selection_optimizer,
                             "loss": "cross_entropy (LOO over a class-balanced batch)",
                             "batch_count": o.batch_count, "init_points": o.init_points, "n_iter": o.n_iter,
                             "optimised": ["length_scale", "noise"] + (["smoothness"] if "smoothness" in hp
                                                                       and o.optimise_smoothness else []),
                             "scale": "analytic sigma^2 over the optimisation batch"},
               "distance_scale": gp.distance_scale},
        "probabilities": "p_c = clip((posterior_mean_c + 1) / 2, 0, 1), rows renormalised to sum to 1",
        "uncertainty": "MuyGPs posterior variance (sigma^2-scaled), shared by both classes",
        "nn_count": o.nn_count,
        "training_data": training_data,
        "split": {"seed": seed, "method": "stratified hold-out, then stratified k-fold CV on the training part",
                  "fractions": {"train": 1.0 - o.holdout_fraction, "holdout": o.holdout_fraction},
                  "folds": o.folds,
                  "counts": {"train": int(len(train_idx)), "holdout": int(len(hold_idx)),
                             "train_per_class": {c: int((y[train_idx] == i).sum()) for i, c in enumerate(CLASSES)},
                             "holdout_per_class": {c: int((y[hold_idx] == i).sum())
                                                   for i, c in enumerate(CLASSES)}}},
        "selection": {"criterion": f"pooled {o.folds}-fold CV accuracy on the training part (Matern nu=0.5 "
                                   "during selection); among variants within one standard error of the best: "
                                   f"normalisation order {list(INVARIANCE_PREFERENCE)} (sky/gain invariant "
                                   "first), then fewer dims",
                      "table": table},
    }


def write_artifact(out_dir: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any], report: dict[str, Any],
                   table: list[dict[str, Any]], *, plots: bool, finish) -> None:
    """Weights, plots and metadata into a temporary directory next to ``out_dir``, then renamed onto it.

    ``finish(meta)`` runs just before metadata.json is written (it stamps the total training time).
    """
    version = meta["version"]
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
            if meta.get("reliability"):
                from training.plots import plot_reliability

                plot_reliability(meta["reliability"], tmp / "reliability.png",
                                 title=f"stargal {version}: reliability (15 bins)")
        finish(meta)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
