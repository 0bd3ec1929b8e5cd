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
from models.stargal import CLASSES, calibrated_probabilities, probabilities_from_means
from models.stargal_recipe import StampRecipe, hand_features
from training.calibration import expected_calibration_error
from training.stargal.alerts import recall_scores
from training.stargal.gp import GPClassifier
from training.stargal.selection import apply_transform, feature_transform


@dataclass
class Design:
    """The fixed feature recipe of the final model: normalisation, PCA dimensions, and the weight of the hand
    features (0: none) appended to the principal components."""

    normalisation: str
    dims: int
    hand_weight: float = 0.0


@dataclass
class Rows:
    """Training or query rows before the fitted transform: normalised flat pixels (N, P) and raw hand
    features (N, 2), or (N, 0) when the recipe has none."""

    flat: np.ndarray
    hand: np.ndarray

    def __len__(self) -> int:
        return len(self.flat)

    def take(self, sel) -> "Rows":
        return Rows(self.flat[sel], self.hand[sel])

    @staticmethod
    def concat(parts: list["Rows"]) -> "Rows":
        return Rows(np.concatenate([p.flat for p in parts]), np.concatenate([p.hand for p in parts]))


@dataclass
class FeatureMap:
    """The transform fitted on training rows: PCA (mean, components) and the hand features' standardisation."""

    mean: np.ndarray
    comps: np.ndarray
    hand_mean: np.ndarray
    hand_std: np.ndarray
    hand_scale: float

    def __call__(self, rows: Rows) -> np.ndarray:
        x = apply_transform(rows.flat, self.mean, self.comps)
        if rows.hand.shape[1]:
            x = np.hstack([x, (rows.hand - self.hand_mean) / self.hand_std * self.hand_scale])
        return x


def flatten(images: np.ndarray, normalisation: str) -> np.ndarray:
    return normalise(images, normalisation).reshape(len(images), -1).astype(np.float64)


def stamp_rows(images: np.ndarray, recipe: StampRecipe, normalisation: str, with_hand: bool) -> Rows:
    """NaN-filled crops (N, S, S) -> rows, through the served recipe (`models.stargal_recipe`): neighbour
    suppression, then the normalisation and the raw hand features of the suppressed stamp."""
    x = recipe.stamps(np.asarray(images, dtype=np.float32))
    hand = hand_features(x, recipe.hand_size or "fixed") if with_hand else np.zeros((len(x), 0))
    return Rows(flatten(x, normalisation), hand)


def fit_feature_map(rows: Rows, design: Design) -> FeatureMap:
    """PCA on the pixels; hand features standardised on these rows and scaled to ``hand_weight`` times the
    standard deviation of the first principal component, so the weight reads the same for any PCA size."""
    mean, comps = feature_transform(rows.flat, design.dims)
    pcs = apply_transform(rows.flat, mean, comps)
    k = rows.hand.shape[1]
    scale = design.hand_weight * float(pcs[:, 0].std()) if k else 0.0
    return FeatureMap(mean, comps, rows.hand.mean(axis=0) if k else np.zeros(0),
                      rows.hand.std(axis=0) + 1e-9 if k else np.zeros(0), scale)


def ood_threshold(gp: GPClassifier, features: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of leave-one-out posterior variances over the training set: inputs whose variance is
    above it lie further from the training data than (1 - quantile) of the training points themselves do."""
    _, var = gp.predictor.posterior(np.asarray(features, dtype=np.float64), exclude=np.arange(len(features)))
    return float(np.quantile(var, quantile))


def fit_design(rows: Rows, onehot: np.ndarray, design: Design, make_gp: Callable[[], GPClassifier]):
    fmap = fit_feature_map(rows, design)
    features = fmap(rows)
    return make_gp().fit(features, onehot), fmap, features


def alert_cv(cut: Rows, cut_onehot: np.ndarray, alerts: Rows, alert_y: np.ndarray, fold_of: np.ndarray,
             design: Design, make_gp: Callable[[], GPClassifier], quantile: float,
             tick: Callable[[], None] = lambda: None, cut_fold_of: np.ndarray | None = None,
             trainable: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold posterior means, probabilities, variances and OOD flags for every alert.

    Fold k's model trains on the curated training cutouts plus the alerts of the other folds. With
    ``cut_fold_of`` (curated fold numbers, same count of folds) it leaves out curated fold k too and scores it,
    so every curated training cutout also gets an out-of-fold prediction (``cut_means``): what a score
    calibration is fitted on. ``trainable`` (bool per alert, `thin_alert_stars`): alerts that may join a fold's
    training part; every alert is scored either way.
    """
    k = int(fold_of.max()) + 1
    n = len(alert_y)
    means_all, var, flagged = np.zeros((n, len(CLASSES))), np.zeros(n), np.zeros(n, dtype=bool)
    cut_means = np.zeros((len(cut), len(CLASSES))) if cut_fold_of is not None else None
    alert_onehot = np.eye(len(CLASSES))[alert_y]
    for f in range(k):
        fit, held = fold_of != f, fold_of == f
        if trainable is not None:
            fit = fit & trainable
        cut_fit = cut_fold_of != f if cut_fold_of is not None else np.ones(len(cut), dtype=bool)
        rows = Rows.concat([cut.take(cut_fit), alerts.take(fit)])
        onehot = np.concatenate([cut_onehot[cut_fit], alert_onehot[fit]])
        gp, fmap, features = fit_design(rows, onehot, design, make_gp)
        means, v = gp.posterior(fmap(alerts.take(held)))
        means_all[held] = means
        var[held] = v
        flagged[held] = v > ood_threshold(gp, features, quantile)
        if cut_means is not None:
            cut_means[~cut_fit] = gp.posterior(fmap(cut.take(~cut_fit)))[0]
        tick()
    return {"means": means_all, "probabilities": probabilities_from_means(means_all), "variance": var,
            "out_of_distribution": flagged, "cut_means": cut_means}


def thin_alert_stars(alert_y: np.ndarray, keep: float, seed: int) -> np.ndarray:
    """Bool per alert: every galaxy, and a seeded ``keep`` share of the stars (at least one).

    Why: alerts are ~95% stars, so near an alert-domain stamp the GP's neighbours are mostly alert stars and a
    compact galaxy is outvoted. Balanced accuracy, and a user who asks "is this a galaxy?", weigh both classes
    equally; thinning the stars in training moves the alert domain's prior towards that (measured in
    docs/stargal.md). The curated cutouts are already balanced and are not thinned."""
    y = np.asarray(alert_y)
    out = y != CLASSES.index("star")
    stars = np.flatnonzero(~out)
    if keep >= 1.0 or not len(stars):
        out[stars] = True
        return out
    n_keep = max(1, int(round(keep * len(stars))))
    out[np.random.default_rng(seed).choice(stars, n_keep, replace=False)] = True
    return out


def fit_score_temperature(means: np.ndarray, y: np.ndarray) -> float:
    """``a`` of ``p_star = sigmoid(a * (mu_star - mu_galaxy) / 2)`` minimising the negative log-likelihood of the
    true classes (bounded 1-D search over log a; b stays 0 so no label changes)."""
    from training.uncertainty_fit import minimise_log_scale, nll

    return minimise_log_scale(lambda a: nll(calibrated_probabilities(means, a), y), (0.05, 100.0))


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
