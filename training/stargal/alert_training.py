"""Training on the alert domain: real alert stamps join the curated cutouts, scored by object-grouped CV.

Why: the curated cutouts (20x20 i-band, Legacy Survey labels) differ from alert stamps in band, depth, seeing
and brightness range, and a model trained on them alone called most bright, often variable, stars in g and r
"galaxy" (docs/stargal.md). Alerts with a confident PS1 reference (`reference.py`) are labelled training rows
from the very domain the worker sees.

Honesty rules kept here:
- alerts are split into folds by ``objectId`` (`alert_data.grouped_folds`), so the out-of-fold score of an alert
  comes from a model that never saw that object;
- each fold's model has its own out-of-distribution threshold (from its own training set), so the abstention
  rate reported is what the rule does on unseen objects;
- the curated hold-out part is never trained on, in any fold or in the final model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from models.preprocess import normalise
from models.stargal import CLASSES, probabilities_from_means
from training.calibration import expected_calibration_error
from training.stargal.alerts import recall_scores
from training.stargal.gp import GPClassifier
from training.stargal.selection import apply_transform, feature_transform


@dataclass
class Design:
    """The fixed feature recipe of the final model: normalisation and PCA dimensions."""

    normalisation: str
    dims: int


def flatten(images: np.ndarray, normalisation: str) -> np.ndarray:
    return normalise(images, normalisation).reshape(len(images), -1).astype(np.float64)


def ood_threshold(gp: GPClassifier, features: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of leave-one-out posterior variances over the training set: inputs whose variance is
    above it lie further from the training data than (1 - quantile) of the training points themselves do."""
    _, var = gp.predictor.posterior(np.asarray(features, dtype=np.float64), exclude=np.arange(len(features)))
    return float(np.quantile(var, quantile))


def fit_design(flat: np.ndarray, onehot: np.ndarray, design: Design, make_gp: Callable[[], GPClassifier]):
    mean, comps = feature_transform(flat, design.dims)
    features = apply_transform(flat, mean, comps)
    return make_gp().fit(features, onehot), mean, comps, features


def alert_cv(cut_flat: np.ndarray, cut_onehot: np.ndarray, alert_flat: np.ndarray, alert_y: np.ndarray,
             fold_of: np.ndarray, design: Design, make_gp: Callable[[], GPClassifier], quantile: float,
             tick: Callable[[], None] = lambda: None) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities, posterior variances and OOD flags for every alert.

    Fold k's model trains on all curated training cutouts plus the alerts of the other folds.
    """
    k = int(fold_of.max()) + 1
    n = len(alert_y)
    probs, var, flagged = np.zeros((n, len(CLASSES))), np.zeros(n), np.zeros(n, dtype=bool)
    alert_onehot = np.eye(len(CLASSES))[alert_y]
    for f in range(k):
        fit, held = fold_of != f, fold_of == f
        flat = np.concatenate([cut_flat, alert_flat[fit]])
        onehot = np.concatenate([cut_onehot, alert_onehot[fit]])
        gp, mean, comps, features = fit_design(flat, onehot, design, make_gp)
        means, v = gp.posterior(apply_transform(alert_flat[held], mean, comps))
        probs[held] = probabilities_from_means(means)
        var[held] = v
        flagged[held] = v > ood_threshold(gp, features, quantile)
        tick()
    return {"probabilities": probs, "variance": var, "out_of_distribution": flagged}


def alert_report(y: np.ndarray, probs: np.ndarray, flagged: np.ndarray, object_ids: list[str],
                 folds: int) -> dict[str, Any]:
    """Recall per class (95% Wilson), balanced accuracy, ECE and abstentions of out-of-fold alert predictions."""
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {**recall_scores(y, pred), "n_objects": len(set(object_ids)), "folds": folds,
                           "grouping": "objectId"}
    out["ece"] = expected_calibration_error(probs, y)
    out["abstention_rate"] = float(flagged.mean())
    if (~flagged).any():
        out["balanced_accuracy_answered"] = recall_scores(y[~flagged], pred[~flagged])["balanced_accuracy"]
    return out
