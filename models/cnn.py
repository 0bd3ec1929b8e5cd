"""Serving for every CNN family (radio, deepmerge, morphology, spin): one `Classifier` driven by metadata.

A CNN artifact is ``model.keras`` plus ``metadata.json`` (see docs/models.md). The model is loaded once, in
Keras safe mode (no arbitrary code, no pickle), and called through a `tf.function` with a fixed input
signature ``(None, size, size, channels) float32``: traced once, then every batch reuses the graph. Calling
``model.predict`` per batch instead rebuilds its data pipeline each time and is ~30x slower on single alerts.
Batches are cut into chunks (`serving_chunk`: `MAX_CHUNK` on a GPU, smaller for large inputs on a CPU, where it is
faster) so peak memory stays bounded whatever the stream's batch size.

An artifact may also carry an uncertainty block (metadata ``calibration`` and ``ood``, written by
`training.uncertainty.attach_uncertainty`; docs/models.md). The same one graph then also returns the last feature
map averaged over centred rings (for the k-nearest-neighbour out-of-distribution rule) and, for regression, the
spread of Monte-Carlo dropout samples of the network's dense head; numpy applies the stored temperature, variance
calibration and OOD rule. Artifacts without the block are served exactly as before.

TensorFlow places the graph on a GPU when it sees one and falls back to the CPU with no change of config.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from models.base import TASKS, BatchPrediction, Classifier, InputSpec, ModelInfo
from models.batchnorm_fold import fold_batchnorm
from models.preprocess import apply_recipe
from models.tensorflow_runtime import device_summary, tensorflow
from schemas.errors import StampflowError

log = logging.getLogger(__name__)

MAX_CHUNK = 256
#: On a CPU with TensorFlow's Eigen kernels, input values per graph call: the first convolutions' activations grow
#: with the chunk, and past about this size they spill out of cache. Measured on the 2-core CPU at batch 256, 4
#: alternating runs each (BENCHMARKS.md, model inference notes): radio-first (150x150) mean 757 images/s with
#: chunks of 32 against 672 with 256, spin (80x80x3) 841 against 724; deepmerge (75x75x2, chunk 64) and
#: morphology unchanged. oneDNN's kernels (the default, models/__init__.py) prefer whole batches: radio-first
#: 2,495 images/s with chunks of 256 against 2,100 with 32, spin 1,355 against 997 (best of 6, alternated).
CPU_CHUNK_VALUES = 32 * 150 * 150
DEFAULT_WEIGHTS = "model.keras"


def serving_chunk(input_shape: Sequence[int]) -> int:
    """Images per graph call when serving: `MAX_CHUNK` on a GPU or with oneDNN's CPU kernels; with Eigen's, the
    largest power of two (16 to `MAX_CHUNK`) whose inputs stay within `CPU_CHUNK_VALUES`. Results do not depend on
    it (inference mode)."""
    device = device_summary()
    if device["device"] == "GPU" or device.get("onednn"):
        return MAX_CHUNK
    values = int(np.prod([int(d) for d in input_shape]))
    chunk = MAX_CHUNK
    while chunk > 16 and chunk * values > CPU_CHUNK_VALUES:
        chunk //= 2
    return chunk


def load_keras(path: str | Path):
    """Load a ``.keras`` file in safe mode (refuses lambda layers and other arbitrary code)."""
    tensorflow()
    import keras

    path = Path(path)
    if not path.is_file():
        raise StampflowError(f"model weights {path} do not exist")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # a corrupt or unsafe file: one clear line, not a Keras traceback
        raise StampflowError(f"cannot load {path} in safe mode: {exc.__class__.__name__}: {exc}") from None


def compile_predict(model, input_shape: Sequence[int], chunk: int = MAX_CHUNK) -> Callable[[np.ndarray], np.ndarray]:
    """The serving call: ``f(x (N, *input_shape) float32) -> outputs (N, K) float32`` through one traced graph.

    Training and evaluation use it too, so scores are computed on the path the worker runs; a worker's copy has its
    batch normalisation folded into the convolutions (`models.batchnorm_fold`), which moves outputs by float32
    rounding only. The graph calls ``model`` live, so a model still training is scored with its current weights.
    """
    tf = tensorflow()
    shape = tuple(int(d) for d in input_shape)
    graph = tf.function(lambda x: model(x, training=False),
                        input_signature=[tf.TensorSpec((None, *shape), tf.float32)])

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != shape:
            raise ValueError(f"model input is {shape}, got batch of shape {x.shape}")
        if len(x) == 0:
            return np.zeros((0, int(model.outputs[0].shape[-1])), dtype=np.float32)
        outs = [graph(tf.constant(x[i:i + chunk])) for i in range(0, len(x), chunk)]
        # mixed-precision models compute in float16; results leave as float32
        return np.concatenate([np.asarray(o, dtype=np.float32) for o in outs]).reshape(len(x), -1)

    return predict


def entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1.0)
    return -(q * np.log(q)).sum(axis=1)


def outputs_to_prediction(raw: np.ndarray, task: str, classes: Sequence[str]) -> BatchPrediction:
    """Network outputs -> `BatchPrediction` for the task (see docs/models.md)."""
    raw = np.asarray(raw, dtype=np.float64)
    classes = tuple(classes)
    if task == "binary":
        p = np.clip(raw[:, 0], 0.0, 1.0)
        probs = np.stack([1.0 - p, p], axis=1)
    elif task in ("classification", "fractions"):
        probs = np.clip(raw, 0.0, None)
        sums = probs.sum(axis=1, keepdims=True)
        probs = np.divide(probs, sums, out=np.full_like(probs, 1.0 / max(probs.shape[1], 1)), where=sums > 0)
    elif task == "regression":
        labels = [";".join(f"{c}={v:.4g}" for c, v in zip(classes, row)) for row in raw]
        # a single regression network has no calibrated uncertainty; 0 says "not estimated", see docs/models.md
        return BatchPrediction(labels=labels, probabilities=raw, uncertainty=np.zeros(len(raw)), classes=classes,
                               task=task)
    else:
        raise ValueError(f"unknown task {task!r}")
    labels = [classes[i] for i in probs.argmax(axis=1)]
    return BatchPrediction(labels=labels, probabilities=probs, uncertainty=entropy(probs), classes=classes, task=task)


# ------------------------------------------------------------------ uncertainty block (metadata calibration / ood)

CALIBRATIONS = ("temperature", "mc_dropout")
OOD_RULES = ("knn_distance_above",)
#: Layers a Monte-Carlo dropout head may hold: each works on the last axis, so S samples ride in a leading axis.
MC_HEAD_LAYERS = ("Dense", "Dropout", "Activation")
_TINY = 1e-30


def temperature_scale(raw: np.ndarray, task: str, temperature: float) -> np.ndarray:
    """Network outputs with their logits divided by ``temperature`` (same shape as ``raw``).

    Softmax: softmax(log p / T), which is p^(1/T) renormalised (the log of a softmax output is its logit up to a
    per-row constant). Sigmoid: sigmoid(logit(p) / T). T > 1 softens over-confident outputs; argmax is unchanged.
    """
    p = np.asarray(raw, dtype=np.float64)
    t = float(temperature)
    if task == "binary":
        q = np.clip(p, _TINY, 1.0 - 1e-16)
        z = (np.log(q) - np.log1p(-q)) / t
        return 1.0 / (1.0 + np.exp(-z))
    if task == "classification":
        z = np.log(np.maximum(p, _TINY)) / t
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"temperature scaling needs a classifier, not task {task!r}")


def ring_weights(height: int, width: int, rings: int) -> np.ndarray:
    """(rings, height, width) averaging weights over concentric annuli of equal width around the map's centre.

    Astronomical stamps are centred on their source, so "what the features look like at the centre" and "what
    they look like around it" are kept apart: a stamp with the usual source but a crowded field (an NVSS field given
    to a FIRST model) differs in the outer ring even where a global average hides it.
    """
    yy, xx = np.mgrid[:height, :width]
    r = np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2)
    edges = np.linspace(0.0, r.max() * (1 + 1e-9), rings + 1)
    w = np.stack([(r >= lo) & (r < hi) for lo, hi in zip(edges[:-1], edges[1:])]).astype(np.float64)
    if (w.sum(axis=(1, 2)) == 0).any():
        raise ValueError(f"a {height}x{width} feature map is too small for {rings} rings")
    return (w / w.sum(axis=(1, 2), keepdims=True)).astype(np.float32)


def unit_rows(features: np.ndarray) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def head_chain(model, start: str):
    """(layer feeding the head, head layers) for a Monte-Carlo head that runs from layer ``start`` to the output.

    The head must be a plain chain of `MC_HEAD_LAYERS` ending at the model's output, so it can be replayed on a
    (samples, N, D) tensor; anything else is refused rather than sampled wrongly.
    """
    names = [layer.name for layer in model.layers]
    if start not in names or names.index(start) == 0:
        raise ValueError(f"no layer '{start}' to start a Monte-Carlo head from")
    i = names.index(start)
    feed, head = model.layers[i - 1], model.layers[i:]
    for before, layer in zip([feed, *head[:-1]], head):
        if type(layer).__name__ not in MC_HEAD_LAYERS:
            raise ValueError(f"Monte-Carlo head layer '{layer.name}' is a {type(layer).__name__} "
                             f"(allowed: {', '.join(MC_HEAD_LAYERS)})")
        if layer.input is not before.output:
            raise ValueError(f"Monte-Carlo head is not a chain at layer '{layer.name}'")
    if head[-1].output is not model.outputs[0]:
        raise ValueError("Monte-Carlo head does not end at the model's output")
    return feed, head


def dropout_masks(head, samples: int, seed: int) -> list[np.ndarray | None]:
    """Fixed inverted-dropout masks (samples, 1, D) per head layer (None for non-dropout layers).

    Drawn once from ``seed``: the S samples of every input use the same S masks, so served uncertainties are
    reproducible (a replay gives the same numbers) and the graph needs no random ops.
    """
    rng = np.random.default_rng(seed)
    masks: list[np.ndarray | None] = []
    for layer in head:
        if type(layer).__name__ != "Dropout":
            masks.append(None)
            continue
        rate, width = float(layer.rate), int(layer.input.shape[-1])
        keep = rng.random((samples, 1, width)) >= rate
        masks.append((keep / (1.0 - rate)).astype(np.float32))
    return masks


def compile_serving(model, input_shape: Sequence[int], *, feature_layer: str | None = None,
                    feature_rings: int | None = None, ood_reference: np.ndarray | None = None, ood_k: int = 0,
                    mc_from: str | None = None, mc_samples: int = 0, mc_seed: int = 0,
                    chunk: int = MAX_CHUNK) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """One fixed-signature graph returning ``{"outputs": (N, K)}`` plus, when asked, ``"features"`` (the output of
    ``feature_layer``, averaged over ``feature_rings`` centred annuli when it is a (N, H, W, C) map: (N, rings * C))
    or, given ``ood_reference`` (M, D) L2-normalised rows, ``"ood_score"`` (N,) instead of the features: the squared
    distance of the L2-normalised feature row to its ``ood_k``-th nearest reference row (deep k-NN, Sun et al.
    2022; computed in the graph, so it shares TensorFlow's threads instead of contending with numpy's BLAS ones),
    and ``"mc_std"`` (N, K): the standard deviation over ``mc_samples`` fixed dropout masks of the
    head from ``mc_from`` to the output. The trunk runs once; only the (cheap, dense) head is replayed, and every
    BatchNormalization stays in inference mode. ``outputs`` are the deterministic network's, as `compile_predict`."""
    tf = tensorflow()
    import keras

    shape = tuple(int(d) for d in input_shape)
    taps = [model.outputs[0]]
    rings = None
    if feature_layer:
        tap = model.get_layer(feature_layer).output
        taps.append(tap)
        if len(tap.shape) == 4:
            if not feature_rings:
                raise ValueError(f"feature layer '{feature_layer}' is a map: give the rings to pool it over")
            rings = ring_weights(int(tap.shape[1]), int(tap.shape[2]), int(feature_rings))
        elif len(tap.shape) != 2:
            raise ValueError(f"feature layer '{feature_layer}' has shape {tuple(tap.shape)}")
    head, masks = [], []
    if mc_from:
        feed, head = head_chain(model, mc_from)
        masks = dropout_masks(head, int(mc_samples), int(mc_seed))
        taps.append(feed.output)
    tapped = keras.Model(model.inputs, taps)
    mask_consts = [None if m is None else tf.constant(m) for m in masks]
    ring_const = tf.constant(rings) if rings is not None else None
    ref_const = None
    if ood_reference is not None:
        ref_const = tf.constant(np.ascontiguousarray(np.asarray(ood_reference, dtype=np.float32).T))
        ood_k = max(1, min(int(ood_k), int(ref_const.shape[1])))

    def run(x):
        res = tapped(x, training=False)
        res = list(res) if isinstance(res, (list, tuple)) else [res]
        if ring_const is not None:
            pooled = tf.einsum("nhwc,rhw->nrc", tf.cast(res[1], tf.float32), ring_const)
            res[1] = tf.reshape(pooled, (-1, pooled.shape[1] * pooled.shape[2]))
        if ref_const is not None:
            similarity = tf.matmul(tf.math.l2_normalize(tf.cast(res[1], tf.float32), axis=1), ref_const)
            res[1] = tf.maximum(2.0 - 2.0 * tf.math.top_k(similarity, ood_k).values[:, -1], 0.0)
        if head:
            h = res.pop()[None]
            for layer, mask in zip(head, mask_consts):
                h = h * tf.cast(mask, h.dtype) if mask is not None else layer(h, training=False)
            res.append(tf.math.reduce_std(tf.cast(h, tf.float32), axis=0))
        return tuple(res)

    graph = tf.function(run, input_signature=[tf.TensorSpec((None, *shape), tf.float32)])
    keys = (["outputs"] + ([("ood_score" if ref_const is not None else "features")] if feature_layer else [])
            + (["mc_std"] if head else []))

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != shape:
            raise ValueError(f"model input is {shape}, got batch of shape {x.shape}")
        if len(x) == 0:
            x = np.zeros((1, *shape), np.float32)
            return {k: np.asarray(v, np.float32)[:0] for k, v in zip(keys, graph(tf.constant(x)))}
        parts = [graph(tf.constant(x[i:i + chunk])) for i in range(0, len(x), chunk)]
        return {k: np.concatenate([np.asarray(p[j], dtype=np.float32).reshape(len(p[j]), -1) for p in parts])
                for j, k in enumerate(keys)}

    return predict


@dataclass(frozen=True)
class Uncertainty:
    """An artifact's parsed uncertainty block (see docs/models.md, "Uncertainty and out of distribution")."""

    temperature: float | None = None          # classifiers: logits / T
    mc_from: str | None = None                # regression: Monte-Carlo dropout head
    mc_samples: int = 0
    mc_seed: int = 0
    std_scale: np.ndarray | None = None       # (K,) calibrated sigma^2 = scale^2 * mc_std^2 + floor^2
    std_floor: np.ndarray | None = None       # (K,)
    feature_layer: str | None = None          # ood: k-NN distance in this layer's (ring-pooled) output
    feature_rings: int | None = None
    ood_reference: np.ndarray | None = None   # (M, D) L2-normalised features of in-distribution stamps
    ood_k: int = 0
    ood_threshold: float | None = None

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], path: Path, where: str) -> "Uncertainty | None":
        """None when the artifact has neither ``calibration`` nor ``ood``; a one-line StampflowError when either
        names a method this code does not know or lacks a field."""
        cal, ood = meta.get("calibration"), meta.get("ood")
        if not cal and not ood:
            return None
        kw: dict[str, Any] = {}
        try:
            if cal:
                method = cal.get("method")
                if method not in CALIBRATIONS:
                    raise StampflowError(f"{where}: unknown calibration method '{method}' "
                                         f"(known: {', '.join(CALIBRATIONS)})")
                if method == "temperature":
                    kw["temperature"] = float(cal["temperature"])
                    if not kw["temperature"] > 0:
                        raise StampflowError(f"{where}: calibration temperature must be > 0")
                else:
                    kw.update(mc_from=str(cal["from_layer"]), mc_samples=int(cal["samples"]),
                              mc_seed=int(cal["seed"]), std_scale=np.asarray(cal["std_scale"], dtype=np.float64),
                              std_floor=np.asarray(cal["std_floor"], dtype=np.float64))
            if ood:
                rule = ood.get("rule")
                if rule not in OOD_RULES:
                    raise StampflowError(f"{where}: unknown ood rule '{rule}' (known: {', '.join(OOD_RULES)})")
                with np.load(Path(path) / ood["arrays"], allow_pickle=False) as z:
                    kw["ood_reference"] = z["reference"].astype(np.float32)
                rings = ood.get("rings")
                kw.update(feature_layer=str(ood["feature_layer"]), feature_rings=int(rings) if rings else None,
                          ood_k=int(ood["k"]), ood_threshold=float(ood["threshold"]))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise StampflowError(f"{where}: invalid uncertainty block in metadata.json "
                                 f"({exc.__class__.__name__}: {exc})") from None
        return cls(**kw)

    def check(self, task: str, where: str) -> None:
        if self.temperature is not None and task not in ("classification", "binary"):
            raise StampflowError(f"{where}: temperature calibration needs a classifier, the task is {task}")
        if self.mc_from is not None and task not in ("regression", "fractions"):
            raise StampflowError(f"{where}: Monte-Carlo dropout calibration is for regression/fractions, not {task}")

    def calibrated_std(self, mc_std: np.ndarray) -> np.ndarray:
        """(N, K) predictive standard deviation: sqrt(scale^2 * mc_std^2 + floor^2) per output."""
        return np.sqrt((self.std_scale * mc_std) ** 2 + self.std_floor ** 2)


class KerasCNN(Classifier):
    """Any CNN artifact: input spec, classes, task and preprocessing recipe all come from its metadata."""

    family = "cnn"

    def __init__(self, info: ModelInfo, model, spec: InputSpec, classes: tuple[str, ...], task: str,
                 recipe: dict[str, Any], uncertainty: Uncertainty | None = None):
        super().__init__(info)
        self.model = model
        self._spec = spec
        self._classes = classes
        self.task = task
        self.recipe = recipe
        self.uncertainty = uncertainty
        shape = (spec.size, spec.size, spec.n_channels)
        chunk = serving_chunk(shape)
        # The served graph runs a copy with batch normalisation folded into the convolutions (the same outputs
        # to float32 rounding, ~30% less network time on radio-first); ``self.model`` stays the artifact's.
        taps = [uncertainty.feature_layer, uncertainty.mc_from] if uncertainty is not None else []
        served = fold_batchnorm(model, keep=[t for t in taps if t])
        if uncertainty is None:
            plain = compile_predict(served, shape, chunk=chunk)
            self._serve = lambda x: {"outputs": plain(x)}
        else:
            self._serve = compile_serving(served, shape, feature_layer=uncertainty.feature_layer,
                                          feature_rings=uncertainty.feature_rings,
                                          ood_reference=uncertainty.ood_reference, ood_k=uncertainty.ood_k,
                                          mc_from=uncertainty.mc_from, mc_samples=uncertainty.mc_samples,
                                          mc_seed=uncertainty.mc_seed, chunk=chunk)

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @classmethod
    def load(cls, info: ModelInfo) -> "KerasCNN":
        meta = info.metadata
        where = f"model {info.name}@{info.version}"
        try:
            spec = InputSpec.from_dict(meta["input_spec"])
            classes = tuple(meta["classes"])
            task = meta["task"]
        except (KeyError, TypeError, ValueError) as exc:
            raise StampflowError(f"{where}: metadata.json lacks a valid input_spec/classes/task ({exc})") from None
        if task not in TASKS:
            raise StampflowError(f"{where}: unknown task '{task}' (known: {', '.join(TASKS)})")
        recipe = dict(meta.get("preprocess") or {})
        try:
            apply_recipe(np.zeros((1, 2, 2, 1), dtype=np.float32), recipe)
        except ValueError as exc:
            raise StampflowError(f"{where}: {exc}") from None
        model = load_keras(info.path / meta.get("weights", DEFAULT_WEIGHTS))
        expected = (None, spec.size, spec.size, spec.n_channels)
        got = tuple(model.inputs[0].shape)
        if got != expected:
            raise StampflowError(f"{where}: network input {got} does not match its input_spec {expected}")
        outputs = int(model.outputs[0].shape[-1])
        want = 1 if task == "binary" else len(classes)
        if outputs != want:
            raise StampflowError(f"{where}: network has {outputs} outputs, task {task} with {len(classes)} "
                                 f"classes needs {want}")
        uncertainty = Uncertainty.from_metadata(meta, info.path, where)
        if uncertainty is not None:
            uncertainty.check(task, where)
        try:
            self = cls(info, model, spec, classes, task, recipe, uncertainty)
        except ValueError as exc:  # a Monte-Carlo head or feature layer the network does not have
            raise StampflowError(f"{where}: {exc}") from None
        self._serve(np.zeros((1, *expected[1:]), dtype=np.float32))  # trace now, not on the first live batch
        log.info("loaded %s@%s (%s, %s) on %s", info.name, info.version, info.family, task,
                 device_summary()["device"])
        return self

    def predict_batch(self, batch: np.ndarray) -> BatchPrediction:
        x = apply_recipe(batch, self.recipe)
        return served_prediction(self._serve(x), self.task, self._classes, self.uncertainty)


def served_prediction(res: dict[str, np.ndarray], task: str, classes: Sequence[str],
                      u: Uncertainty | None) -> BatchPrediction:
    """`compile_serving` outputs -> `BatchPrediction`, applying the artifact's uncertainty block when it has one.

    ``uncertainty`` then means (docs/models.md): classifiers, 1 - the calibrated probability of the predicted
    class (the chance the label is wrong); regression, the calibrated predictive standard deviation in the
    target's units (root mean square over outputs when there are several); vote fractions, the calibrated standard
    deviation of the predicted class's fraction. Without the block: entropy (classifiers), 0 (regression).
    """
    raw = res["outputs"]
    if u is None:
        return outputs_to_prediction(raw, task, classes)
    if u.temperature is not None:
        raw = temperature_scale(raw, task, u.temperature)
    pred = outputs_to_prediction(raw, task, classes)
    if u.temperature is not None:
        pred.uncertainty = 1.0 - pred.probabilities.max(axis=1)
    if u.mc_from is not None:
        std = u.calibrated_std(res["mc_std"])
        if task == "fractions":
            pred.uncertainty = std[np.arange(len(std)), np.asarray(raw).argmax(axis=1)]
        else:
            pred.uncertainty = np.sqrt((std ** 2).mean(axis=1))
    if u.feature_layer is not None:
        pred.out_of_distribution = res["ood_score"].reshape(-1) > u.ood_threshold
    return pred
