"""The fits behind an artifact's uncertainty block (numpy/scipy only; serving math lives in `models.cnn`).

* `fit_temperature`: one temperature T for a classifier's logits, minimising the negative log-likelihood on the
  validation part (Guo et al. 2017). T > 1 means the network was over-confident.
* `fit_std_calibration`: per output, sigma^2 = scale^2 * mc_std^2 + floor^2 by Gaussian likelihood, so the
  Monte-Carlo dropout spread (which only sees the network's own doubt) gains the noise floor it misses.
* `knn_reference`: the normalised feature rows the k-nearest-neighbour out-of-distribution rule compares with
  (Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors").
* `cross_fitted`: every held-out number is measured on the half of the validation part the fit did not see.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import optimize

from models.cnn import temperature_scale, unit_rows

#: A temperature outside this range means the validation part cannot support a fit (or outputs are degenerate).
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: The central interval of a Gaussian at +/- 1 sigma.
ONE_SIGMA = 0.6826894921370859


def nll(probabilities: np.ndarray, true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes; (N, K) probabilities."""
    p = np.asarray(probabilities, dtype=np.float64)[np.arange(len(true)), np.asarray(true, dtype=int)]
    return float(-np.mean(np.log(np.maximum(p, 1e-15))))


def class_probabilities(raw: np.ndarray, task: str) -> np.ndarray:
    """Network outputs -> (N, K) probabilities (binary: [1 - p, p])."""
    raw = np.asarray(raw, dtype=np.float64)
    if task == "binary":
        p = np.clip(raw.reshape(len(raw), -1)[:, 0], 0.0, 1.0)
        return np.stack([1.0 - p, p], axis=1)
    return raw / np.maximum(raw.sum(axis=1, keepdims=True), 1e-300)


def minimise_log_scale(loss: Callable[[float], float], bounds: tuple[float, float]) -> float:
    """The positive value in ``bounds`` minimising ``loss``: a bounded 1-D search over its logarithm (a scale
    factor such as a temperature is as likely to be 0.5 as 2). One search for every calibration fit."""
    lo, hi = np.log(bounds)
    res = optimize.minimize_scalar(lambda log_v: loss(float(np.exp(log_v))), bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-4})
    return float(np.exp(res.x))


def fit_temperature(raw: np.ndarray, true: np.ndarray, task: str) -> float:
    """The temperature minimising the validation NLL (bounded 1-D search over log T)."""
    if len(true) < 2:
        raise ValueError("temperature scaling needs at least two validation examples")
    return minimise_log_scale(lambda t: nll(class_probabilities(temperature_scale(raw, task, t), task), true),
                              TEMPERATURE_BOUNDS)


def fit_std_calibration(mean: np.ndarray, mc_std: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output (scale, floor) with sigma^2 = scale^2 * mc_std^2 + floor^2. Returns two (K,) arrays.

    The Gaussian likelihood of ``true`` under N(mean, sigma^2) sets the shape (how much of sigma follows the
    Monte-Carlo spread, how much is a floor); then both are multiplied by one factor so that +/- sigma holds
    68.3% of the residuals. Without that step heavy-tailed errors (vote fractions, which pile up at 0 and 1)
    inflate the likelihood's sigma and the "68%" interval covers ~80%."""
    mean, mc_std, true = (np.asarray(a, dtype=np.float64).reshape(len(mean), -1) for a in (mean, mc_std, true))
    scales, floors = [], []
    for k in range(mean.shape[1]):
        r2, s2 = (true[:, k] - mean[:, k]) ** 2, mc_std[:, k] ** 2
        rms = float(np.sqrt(r2.mean())) or 1e-6

        def loss(theta: np.ndarray) -> float:
            var = np.exp(2 * theta[0]) * s2 + np.exp(2 * theta[1])
            return float(np.mean(np.log(var) + r2 / var))

        start = np.log([max(rms / max(float(np.sqrt(s2.mean())), 1e-9), 1e-3), rms / 2])
        res = optimize.minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-5, "fatol": 1e-9,
                                                                           "maxiter": 2000})
        scale, floor = float(np.exp(res.x[0])), float(np.exp(res.x[1]))
        z = np.sqrt(r2 / (scale ** 2 * s2 + floor ** 2))
        c = float(np.quantile(z, ONE_SIGMA)) or 1.0
        scales.append(scale * c)
        floors.append(floor * c)
    return np.array(scales), np.array(floors)


def calibrated_std(mc_std: np.ndarray, scale: np.ndarray, floor: np.ndarray) -> np.ndarray:
    return np.sqrt((scale * np.asarray(mc_std, dtype=np.float64)) ** 2 + floor ** 2)


def coverage(mean: np.ndarray, std: np.ndarray, true: np.ndarray, z: float = 1.0) -> float:
    """Share of true values (all outputs pooled) inside mean +/- z * std (z = 1: the 68% interval)."""
    mean, std, true = (np.asarray(a, dtype=np.float64).reshape(len(mean), -1) for a in (mean, std, true))
    return float(np.mean(np.abs(true - mean) <= z * std))


def knn_reference(features: np.ndarray, max_n: int, seed: int) -> np.ndarray:
    """The stored reference set of the k-NN rule: L2-normalised rows, at most ``max_n`` (a seeded sample), so the
    artifact stays small and a served batch costs one (N, max_n) product."""
    f = unit_rows(features)
    if len(f) > max_n:
        f = f[np.sort(np.random.default_rng(seed).permutation(len(f))[:max_n])]
    return f.astype(np.float32)


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of range(n) into two halves."""
    idx = np.random.default_rng(seed).permutation(n)
    return np.sort(idx[: n // 2]), np.sort(idx[n // 2:])


def cross_fitted(n: int, seed: int, fit: Callable[[np.ndarray], object],
                 apply: Callable[[object, np.ndarray], np.ndarray]) -> np.ndarray:
    """Out-of-fold outputs: fit on one half of range(n), apply to the other, and the other way round."""
    a, b = halves(n, seed)
    out: list[np.ndarray | None] = [None] * n
    for fit_idx, eval_idx in ((a, b), (b, a)):
        params = fit(fit_idx)
        for i, row in zip(eval_idx, apply(params, eval_idx)):
            out[i] = row
    return np.asarray(out)
