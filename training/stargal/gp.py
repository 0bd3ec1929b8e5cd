"""A thin MuyGPs classifier for training: fit (with hyperparameter optimisation) and predict.

Built on MuyGPyS 0.9.1's low-level API -- `MuyGPS`, `Matern`/`RBF` kernels with `ScalarParam` bounds,
`HomoscedasticNoise`, the leave-one-out objective optimised by `MuyGPyS.optimize.Bayes_optimize` (or
`L_BFGS_B_optimize`) with `cross_entropy_fn` or `lool_fn` -- and on the serving core in `models.stargal`
(`GPPredictor`, `build_muygps`), so a fitted model predicts with exactly the code the served model runs.

Optimisation follows MuyGPs: sample a class-balanced batch of training points, take each point's ``nn_count``
nearest *other* training points, and maximise the leave-one-out objective of predicting the batch from those
neighbourhoods. The neighbourhood distance tensors are built from a Gram matrix (memory ``batch * k^2``
floats) instead of MuyGPyS's ``make_train_tensors`` difference tensor (``batch * k^2 * features`` floats); for
the isotropic kernels used here the two are identical (checked in tests).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.stargal import METRIC_FOR_KERNEL, GPPredictor, build_muygps, muygps_hyperparameters


def to_pm1(onehot: np.ndarray) -> np.ndarray:
    """0/1 (or already +/-1) one-hot labels (N, K) -> +/-1 regression targets (float64)."""
    y = np.asarray(onehot, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"one-hot labels must be (N, K), got shape {y.shape}")
    return 2.0 * y - 1.0 if y.min() >= 0.0 else y


def balanced_batch(labels: np.ndarray, batch_count: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``batch_count`` points with (as far as possible) equal numbers per class, sorted."""
    classes = np.unique(labels)
    per = max(batch_count // len(classes), 1)
    picks = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        picks.append(rng.choice(idx, size=min(per, len(idx)), replace=False))
    return np.sort(np.concatenate(picks))


@dataclass
class GPClassifier:
    """MuyGPs classifier over fixed training features.

    ``kernel`` is ``"matern"`` (l2 metric; ``smoothness`` nu optimised when ``optimise_smoothness``) or
    ``"rbf"`` (F2 metric). Length-scale bounds are relative to the median neighbour distance of the training
    set, so the same settings work for every normalisation. ``optimizer`` is ``"bayes"`` or ``"lbfgsb"``.
    """

    kernel: str = "matern"
    nn_count: int = 30
    smoothness: float = 0.5
    optimise_smoothness: bool = True
    smoothness_bounds: tuple[float, float] = (0.1, 2.5)
    noise: float = 1e-3
    noise_bounds: tuple[float, float] = (1e-6, 0.5)
    length_scale_bounds_rel: tuple[float, float] = (0.05, 30.0)
    batch_count: int = 500
    loss: str = "cross_entropy"
    optimizer: str = "bayes"
    init_points: int = 5
    n_iter: int = 20
    seed: int = 0
    # Set by fit().
    muygps: Any = field(default=None, repr=False)
    predictor: GPPredictor | None = field(default=None, repr=False)
    fit_seconds: float = 0.0
    distance_scale: float = 0.0

    def fit(self, train_features: np.ndarray, onehot_labels: np.ndarray, optimise: bool = True) -> "GPClassifier":
        from MuyGPyS.optimize import Bayes_optimize, L_BFGS_B_optimize
        from MuyGPyS.optimize.loss import cross_entropy_fn, lool_fn

        t0 = time.perf_counter()
        x = np.asarray(train_features, dtype=np.float64)
        targets = to_pm1(onehot_labels)
        if len(x) != len(targets):
            raise ValueError(f"{len(x)} feature rows but {len(targets)} labels")
        metric = METRIC_FOR_KERNEL[self.kernel]
        # Placeholder model to build the neighbour structure; its hyperparameters are replaced below.
        self.predictor = GPPredictor(x, targets, self.nn_count, build_muygps(self.kernel, 1.0, self.noise,
                                                                             self.smoothness), metric)
        rng = np.random.default_rng(self.seed)
        batch = balanced_batch(np.argmax(targets, axis=1), self.batch_count, rng)
        nn, cross, pair = self.predictor.neighbourhoods(x[batch], exclude=batch)
        # Typical neighbour distance (Euclidean) sets the length-scale range.
        euclid = cross if metric == "l2" else np.sqrt(cross)
        self.distance_scale = float(np.median(euclid)) or 1.0
        lo, hi = (self.distance_scale * b for b in self.length_scale_bounds_rel)
        muygps = build_muygps(
            self.kernel, self.distance_scale, self.noise, self.smoothness,
            length_scale_bounds=(lo, hi) if optimise else "fixed",
            noise_bounds=self.noise_bounds if optimise else "fixed",
            smoothness_bounds=self.smoothness_bounds if (optimise and self.optimise_smoothness
                                                         and self.kernel == "matern") else "fixed")
        if not muygps.fixed():
            loss_fn = {"cross_entropy": cross_entropy_fn, "lool": lool_fn}[self.loss]
            if self.optimizer not in ("bayes", "lbfgsb", "bayes+lbfgsb"):
                raise ValueError(f"unknown optimizer '{self.optimizer}'")
            if self.optimizer.startswith("bayes"):
                muygps = Bayes_optimize(muygps, targets[batch], targets[nn], cross, pair, loss_fn=loss_fn,
                                        init_points=self.init_points, n_iter=self.n_iter, random_state=self.seed,
                                        verbose=False)
            if self.optimizer.endswith("lbfgsb"):
                # Local gradient refinement from the current values (the Bayes optimum, or the initial guess).
                muygps = L_BFGS_B_optimize(muygps, targets[batch], targets[nn], cross, pair, loss_fn=loss_fn)
        # sigma^2 (variance scale), analytic: mean of y^T (K + eps)^-1 y / k over the batch neighbourhoods,
        # on one response column (both columns of a two-class +/-1 target give the same value).
        kin = muygps.kernel(pair)
        kin_noisy = muygps.noise.perturb(kin)
        y = targets[nn][..., :1]
        sigma2 = float(np.einsum("bki,bki->", y, np.linalg.solve(kin_noisy, y)) / y.size)
        hp = muygps_hyperparameters(muygps)
        self.muygps = build_muygps(self.kernel, hp["length_scale"], hp["noise"], hp.get("smoothness"),
                                   max(sigma2, 1e-12))
        self.predictor.muygps = self.muygps
        self.fit_seconds = time.perf_counter() - t0
        return self

    @property
    def hyperparameters(self) -> dict[str, float]:
        if self.muygps is None:
            raise RuntimeError("GPClassifier is not fitted")
        return muygps_hyperparameters(self.muygps)

    def posterior(self, test_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean per class (N, K) of the +/-1 targets and posterior variance (N,)."""
        if self.predictor is None:
            raise RuntimeError("GPClassifier is not fitted")
        return self.predictor.posterior(np.asarray(test_features, dtype=np.float64))
