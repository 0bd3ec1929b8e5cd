"""Star/galaxy classifier for 20x20 ZTF science cutouts: a MuyGPs local Gaussian process over pixel features.

After "ZTF image classification using MuyGPS" (MuyGPyS, LLNL). The model is the training set itself: for a
query stamp we normalise it (method chosen in training), project it onto stored PCA components (or keep all
400 pixels), find its ``nn_count`` nearest training stamps (exact, brute force), and compute the MuyGPs posterior
mean of the +/-1 one-hot class responses and the posterior variance from those neighbours only.

Class order is fixed: ``CLASSES = ("star", "galaxy")`` -- column 0 of every probability matrix is "star".

Probabilities: targets are +1 for the true class and -1 for the other, so the posterior mean per class
``mu_c`` lies near [-1, 1]. We map ``p_c = clip((mu_c + 1) / 2, 0, 1)`` and renormalise the row to sum to 1
(a row with both clipped to 0 becomes uniform). From 2.1.0 an artifact may carry a temperature ("calibration"):
``p_star = sigmoid(a * (mu_star - mu_galaxy) / 2)``, labels unchanged. Uncertainty is the (sigma^2-scaled)
posterior variance, shared by both classes since the kernel is shared.

Speed: all distances come from one Gram-matrix product per chunk of queries against the stored training
features, and the (k, k) neighbourhood distances are looked up in a precomputed training distance matrix, so
we never build MuyGPyS's ``(batch, k, k, features)`` difference tensor; the kernel is MuyGPyS's own
(`MuyGPS.kernel`, looked up from the precomputed training kernel for K_in), and the posterior mean and variance
are MuyGPyS's formulas from one batched solve (tested against `posterior_mean` / `posterior_variance`). Big
batches are chunked. 2.1.0's stamp recipe (neighbour suppression, hand features) is `models.stargal_recipe`.

No pickle anywhere: ``weights.npz`` (allow_pickle=False) holds plain arrays, ``metadata.json`` the rest.
This module must not import ``training``; training imports the helpers here.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.base import ZTF_PIXEL_SCALE, BatchPrediction, Classifier, InputSpec, ModelInfo
from models.preprocess import normalise
from models.stargal_recipe import StampRecipe, hand_features
from schemas.errors import StampflowError
from schemas.packet import StampKind

CLASSES: tuple[str, ...] = ("star", "galaxy")
INPUT_SPEC = InputSpec(survey="ZTF", stamp_kinds=(StampKind.SCIENCE,), size=20, pixel_scale=ZTF_PIXEL_SCALE)
WEIGHTS_FILE = "weights.npz"
METRIC_FOR_KERNEL = {"matern": "l2", "rbf": "F2"}
DEFAULT_CHUNK = 1024
# Up to this many training points the training kernel matrix (T^2 float64: 8 MB at 1,000) is precomputed.
PRECOMPUTE_KERNEL_MAX = 6000


# ------------------------------------------------------------------------------ features and neighbours


def features_from_images(images: np.ndarray, normalisation: str, mean: np.ndarray,
                         components: np.ndarray | None) -> np.ndarray:
    """(N, H, W[, 1]) images -> (N, D) float64 features: normalise, flatten, centre, optional PCA projection."""
    x = normalise(images, normalisation).reshape(len(images), -1).astype(np.float64)
    x -= mean
    if components is not None and components.size:
        x = x @ components.T
    return x


def pca_fit(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA by SVD (numpy only): returns (mean (D,), components (dims, D), explained variance ratio (dims,))."""
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2
    # Fix the sign so the artifact is deterministic across LAPACK builds.
    signs = np.sign(vt[np.arange(len(vt)), np.argmax(np.abs(vt), axis=1)])
    vt = vt * signs[:, None]
    return mean, vt[:dims].copy(), (var[:dims] / var.sum()) if var.sum() > 0 else np.zeros(dims)


def squared_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)) via the Gram matrix, clipped at 0."""
    if b_sq is None:
        b_sq = np.einsum("ij,ij->i", b, b)
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    np.maximum(d2, 0.0, out=d2)
    return d2


def nearest_from_sq(d2: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices (n, k) of the k smallest entries per row, nearest first; ``exclude[i]`` (a column) is skipped."""
    if exclude is not None:
        d2 = d2.copy()
        d2[np.arange(len(d2)), exclude] = np.inf
    if k >= d2.shape[1]:
        return np.argsort(d2, axis=1, kind="stable")[:, :k]
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(d2, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def metric_transform(d2: np.ndarray, metric: str) -> np.ndarray:
    """Squared distances -> the distance MuyGPyS's metric produces (``l2``: Euclidean, ``F2``: squared)."""
    if metric == "F2":
        return d2
    if metric == "l2":
        return np.sqrt(d2)
    raise ValueError(f"unknown metric {metric}")


# --------------------------------------------------------------------------------------- MuyGPyS model


def build_muygps(kernel: str, length_scale: float, noise: float, smoothness: float | None = None,
                 scale: float = 1.0, *, length_scale_bounds: Any = "fixed", noise_bounds: Any = "fixed",
                 smoothness_bounds: Any = "fixed"):
    """A `MuyGPyS.gp.MuyGPS` with an isotropic Matern (l2 metric) or RBF (F2 metric) kernel."""
    from MuyGPyS.gp import MuyGPS
    from MuyGPyS.gp.deformation import F2, Isotropy, l2
    from MuyGPyS.gp.hyperparameter import FixedScale, ScalarParam
    from MuyGPyS.gp.kernels import RBF, Matern
    from MuyGPyS.gp.noise import HomoscedasticNoise

    if kernel == "matern":
        k = Matern(smoothness=ScalarParam(float(smoothness if smoothness is not None else 0.5), smoothness_bounds),
                   deformation=Isotropy(l2, length_scale=ScalarParam(float(length_scale), length_scale_bounds)))
    elif kernel == "rbf":
        k = RBF(deformation=Isotropy(F2, length_scale=ScalarParam(float(length_scale), length_scale_bounds)))
    else:
        raise ValueError(f"unknown kernel '{kernel}' (matern or rbf)")
    return MuyGPS(kernel=k, noise=HomoscedasticNoise(float(noise), noise_bounds), scale=FixedScale(float(scale)))


def muygps_hyperparameters(muygps) -> dict[str, float]:
    """Current values of a MuyGPS model's hyperparameters as plain floats."""
    hp = muygps.kernel._hyperparameters
    out = {"length_scale": float(hp["length_scale"]()), "noise": float(muygps.noise()),
           "scale": float(np.asarray(muygps.scale()).reshape(-1)[0])}
    if "smoothness" in hp:
        out["smoothness"] = float(hp["smoothness"]())
    return out


def probabilities_from_means(means: np.ndarray) -> np.ndarray:
    """+/-1 one-hot regression means (N, K) -> probabilities: clip((mu + 1) / 2, 0, 1), rows renormalised."""
    p = np.clip((np.asarray(means, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    total = p.sum(axis=1, keepdims=True)
    k = p.shape[1] if p.ndim == 2 else 1
    return np.divide(p, total, out=np.full_like(p, 1.0 / max(k, 1)), where=total > 0)


def calibrated_probabilities(means: np.ndarray, a: float, b: float = 0.0) -> np.ndarray:
    """Two classes: ``p_0 = sigmoid(a * s + b)`` with the score ``s = (mu_0 - mu_1) / 2``, ``p_1 = 1 - p_0``.

    Temperature scaling (b = 0) of the GP's class score: ``a`` is fitted on out-of-fold predictions in training.
    With b = 0 it keeps every label, since ``p_0 >= 0.5`` exactly when ``mu_0 >= mu_1``.
    """
    m = np.asarray(means, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] != 2:
        raise ValueError(f"score calibration needs two classes, got means of shape {m.shape}")
    p0 = 1.0 / (1.0 + np.exp(-(a * (m[:, 0] - m[:, 1]) / 2.0 + b)))
    return np.stack([p0, 1.0 - p0], axis=1)


class GPPredictor:
    """Exact-kNN MuyGPs prediction over fixed training features (the serving core; training reuses it)."""

    def __init__(self, train_features: np.ndarray, train_targets: np.ndarray, nn_count: int, muygps,
                 metric: str, chunk: int = DEFAULT_CHUNK):
        self.train_features = np.ascontiguousarray(train_features, dtype=np.float64)
        self.train_targets = np.asarray(train_targets, dtype=np.float64)
        if len(self.train_features) < 2:
            raise ValueError("a GP needs at least two training points")
        self.nn_count = int(min(nn_count, len(self.train_features)))
        self.metric = metric
        self.chunk = int(chunk)
        self._train_sq = np.einsum("ij,ij->i", self.train_features, self.train_features)
        # Training-to-training distances, looked up for every (k, k) neighbourhood: T^2 floats.
        self._train_dist = metric_transform(
            squared_distances(self.train_features, self.train_features, self._train_sq), metric)
        np.fill_diagonal(self._train_dist, 0.0)
        self._train_kernel: np.ndarray | None = None
        self.muygps = muygps

    @property
    def muygps(self):
        return self._muygps

    @muygps.setter
    def muygps(self, model) -> None:
        """Set the MuyGPS model; the kernel over training pairs is precomputed once (T^2 kernel evaluations).

        The kernel is elementwise in the distance, so ``Kin`` for a neighbourhood is a lookup into this matrix
        -- identical to evaluating MuyGPyS's kernel on the (k, k) distance tensor, without recomputing the
        (Bessel-function) Matern kernel for every query.
        """
        self._muygps = model
        self._train_kernel = None
        if len(self.train_features) <= PRECOMPUTE_KERNEL_MAX:
            self._train_kernel = np.asarray(model.kernel(self._train_dist.copy()))

    def neighbourhoods(self, queries: np.ndarray, exclude: np.ndarray | None = None, pairwise: bool = True):
        """(nn_indices (n, k), crosswise distances (n, k), pairwise distances (n, k, k) or None) for queries.

        ``exclude[i]``: a training index query i may not use (itself, for leave-one-out).
        """
        d2 = squared_distances(queries, self.train_features, self._train_sq)
        nn = nearest_from_sq(d2, self.nn_count, exclude)
        cross = metric_transform(np.take_along_axis(d2, nn, axis=1), self.metric)
        pair = self._train_dist[nn[:, :, None], nn[:, None, :]] if pairwise else None
        return nn, cross, pair

    def posterior(self, queries: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean (n, K) and posterior variance (n,) for query features (n, D), in chunks."""
        n, r = len(queries), self.train_targets.shape[1]
        means = np.empty((n, r))
        var = np.empty(n)
        for start in range(0, n, self.chunk):
            sl = slice(start, min(start + self.chunk, n))
            ex = exclude[sl] if exclude is not None else None
            nn, cross, pair = self.neighbourhoods(queries[sl], ex, pairwise=self._train_kernel is None)
            if self._train_kernel is not None:
                # one flat gather from the precomputed (T, T) kernel: cheaper than 3-D fancy indexing
                t = len(self._train_kernel)
                kin = self._train_kernel.ravel().take(nn[:, :, None] * t + nn[:, None, :])
            else:
                kin = self.muygps.kernel(pair)
            kcross = self.muygps.kernel(cross)
            means[sl], var[sl] = self._mean_and_variance(kin, kcross, self.train_targets[nn])
        return means, np.maximum(var, 0.0)

    def _perturbed(self, kin: np.ndarray) -> np.ndarray:
        """K_in + noise on the diagonal. For MuyGPyS's homoscedastic noise (every model here) it is added in place
        to this batch's own K_in: the same numbers as MuyGPyS's ``K_in + noise * eye`` (off the diagonal it adds
        +0.0), without a second (n, k, k) array and the identity's multiply, ~4% of a 256-stamp batch."""
        from MuyGPyS.gp.noise import HomoscedasticNoise

        if (type(self.muygps.noise) is not HomoscedasticNoise or kin.ndim != 3 or not kin.flags.writeable
                or not kin.flags.c_contiguous):
            return self.muygps.noise.perturb(kin)
        k = kin.shape[1]
        kin.reshape(len(kin), k * k)[:, ::k + 1] += float(self.muygps.noise())
        return kin

    def _mean_and_variance(self, kin: np.ndarray, kcross: np.ndarray, targets: np.ndarray):
        """MuyGPyS's posterior mean and variance from ONE batched solve with one right-hand side.

        ``posterior_mean`` solves (K_in + noise) against the neighbours' targets and ``posterior_variance``
        against K_cross, each factorising the same (k, k) matrices. The matrix is symmetric, so
        ``K_cross^T A^-1 = (A^-1 K_cross)^T``: one solve for z = A^-1 K_cross gives both, mean = z^T Y and
        variance = sigma^2 (K(0) - z^T K_cross). The formulas are MuyGPyS's; `tests/unit/test_stargal.py` checks
        both against `MuyGPS.posterior_mean` / `posterior_variance` (they agree to rounding, ~1e-15).
        """
        a = self._perturbed(kin)
        z = np.linalg.solve(a, kcross[:, :, None])[:, :, 0]
        mean = np.einsum("bk,bkr->br", z, targets)
        k0 = float(np.asarray(self.muygps.kernel(np.zeros(1))).reshape(-1)[0])
        scale = float(np.asarray(self.muygps.scale()).reshape(-1)[0])
        var = scale * (k0 - np.einsum("bk,bk->b", z, kcross))
        return mean, var


# ------------------------------------------------------------------------------------------ classifier


class StarGalaxyGP(Classifier):
    """Served star/galaxy MuyGPs model. Input (N, size, size, 1) float32 stamps, NaN already filled; the stamp
    kind and size come from the artifact's ``input_spec`` (1.0.0: 20x20 science; 2.0.0 and 2.1.0: 19x19 template);
    2.1.0 adds the stamp recipe of `models.stargal_recipe` and a temperature on the class score."""

    family = "stargal"

    def __init__(self, info: ModelInfo, predictor: GPPredictor, normalisation: str, mean: np.ndarray,
                 components: np.ndarray | None, classes: tuple[str, ...] = CLASSES,
                 input_spec: InputSpec = INPUT_SPEC, ood_variance: float | None = None,
                 recipe: StampRecipe = StampRecipe(), calibration: dict | None = None):
        super().__init__(info)
        self.predictor = predictor
        self.normalisation = normalisation
        self.mean = mean
        self.components = components
        self._classes = tuple(classes)
        self._spec = input_spec
        # Out-of-distribution rule (metadata "ood"): posterior variance above what the training set shows.
        self.ood_variance = ood_variance
        # 2.1.0 on: NaN rule, neighbour suppression and hand features (metadata "preprocessing"), and the
        # temperature of the class score (metadata "calibration"); both absent in 1.0.0 and 2.0.0.
        self.recipe = recipe
        self.calibration = calibration

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @classmethod
    def load(cls, info: ModelInfo) -> "StarGalaxyGP":
        path = Path(info.path)
        meta = info.metadata or json.loads((path / "metadata.json").read_text())
        try:
            with np.load(path / WEIGHTS_FILE, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except FileNotFoundError:
            raise StampflowError(f"model artifact {path} has no {WEIGHTS_FILE}") from None
        except ValueError as exc:
            raise StampflowError(f"cannot read {path / WEIGHTS_FILE}: {exc}") from None
        return cls.from_arrays(info, meta, arrays)

    @classmethod
    def from_arrays(cls, info: ModelInfo, meta: dict, arrays: dict[str, np.ndarray]) -> "StarGalaxyGP":
        """Build from metadata + weight arrays (what `load` reads; training uses it to evaluate in memory)."""
        try:
            gp = meta["gp"]
            classes = tuple(meta.get("classes", CLASSES))
            hp = {k: float(v) for k, v in zip([str(s) for s in arrays["hyperparameter_names"]],
                                               arrays["hyperparameter_values"])}
            components = arrays["pca_components"]
            muygps = build_muygps(gp["kernel"], hp["length_scale"], hp["noise"], hp.get("smoothness"),
                                  hp.get("scale", 1.0))
            predictor = GPPredictor(arrays["train_features"], arrays["train_targets"], int(gp["nn_count"]),
                                    muygps, METRIC_FOR_KERNEL[gp["kernel"]])
            # 1.0.0 predates both: its spec is the module constant, and it flags nothing.
            spec = InputSpec.from_dict(meta["input_spec"]) if "input_spec" in meta else INPUT_SPEC
            ood = meta.get("ood") or {}
            if ood and ood.get("rule") != "posterior_variance_above":
                raise StampflowError(f"model artifact {info.path} has an unknown ood rule '{ood.get('rule')}'")
            recipe = StampRecipe.from_metadata(meta.get("preprocessing"))
            calibration = meta.get("calibration") or None
            if calibration and calibration.get("method") != "temperature":
                raise StampflowError(f"model artifact {info.path} has an unknown calibration "
                                     f"'{calibration.get('method')}'")
            return cls(info, predictor, meta["normalisation"], arrays["feature_mean"],
                       components if components.size else None, classes,
                       replace(spec, nan_fill=recipe.nan_fill), float(ood["threshold"]) if ood else None,
                       recipe, calibration)
        except KeyError as exc:
            raise StampflowError(f"model artifact {info.path} is missing {exc}") from None
        except ValueError as exc:
            raise StampflowError(f"model artifact {info.path}: {exc}") from None

    def features(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 4:
            if batch.shape[-1] != 1:
                raise ValueError(f"stargal takes one channel, got batch shape {batch.shape}")
            batch = batch[..., 0]
        size = self._spec.size
        if batch.shape[1:] != (size, size):
            raise ValueError(f"stargal takes ({size}, {size}) stamps, got batch shape {batch.shape}")
        batch = self.recipe.stamps(batch)
        feats = features_from_images(batch, self.normalisation, self.mean, self.components)
        if self.recipe.hand_size:
            feats = np.hstack([feats, self.recipe.scaled_hand(hand_features(batch, self.recipe.hand_size))])
        return feats

    def predict_batch(self, batch: np.ndarray) -> BatchPrediction:
        n = len(batch)
        if n == 0:
            return BatchPrediction(labels=[], probabilities=np.zeros((0, len(self._classes)), np.float32),
                                   uncertainty=np.zeros(0, np.float32), classes=self._classes)
        means, var = self.predictor.posterior(self.features(batch))
        if self.calibration:
            cal = self.calibration
            probs = calibrated_probabilities(means, float(cal["a"]), float(cal.get("b", 0.0)))
        else:
            probs = probabilities_from_means(means)
        labels = [self._classes[i] for i in np.argmax(means, axis=1)]
        ood = var > self.ood_variance if self.ood_variance is not None else None
        return BatchPrediction(labels=labels, probabilities=probs.astype(np.float32),
                               uncertainty=var.astype(np.float32), classes=self._classes, out_of_distribution=ood)
