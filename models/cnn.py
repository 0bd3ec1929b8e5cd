"""Serving for every CNN family (radio, deepmerge, morphology, spin): one `Classifier` driven by metadata.

A CNN artifact is ``model.keras`` plus ``metadata.json`` (see docs/models.md). The model is loaded once, in
Keras safe mode (no arbitrary code, no pickle), and called through a `tf.function` with a fixed input
signature ``(None, size, size, channels) float32``: traced once, then every batch reuses the graph. Calling
``model.predict`` per batch instead rebuilds its data pipeline each time and is ~30x slower on single alerts.
Batches larger than `MAX_CHUNK` are cut so peak memory stays bounded whatever the stream's batch size.

TensorFlow places the graph on a GPU when it sees one and falls back to the CPU with no change of config.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from models.base import TASKS, BatchPrediction, Classifier, InputSpec, ModelInfo
from models.preprocess import apply_recipe
from schemas.errors import StampflowError

log = logging.getLogger(__name__)

MAX_CHUNK = 256
DEFAULT_WEIGHTS = "model.keras"


def tensorflow():
    """Import TensorFlow quietly (its C++ start-up chatter is not ours to show)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf


def device_summary() -> dict[str, Any]:
    """Which device TensorFlow will use: the first GPU if any, else the CPU."""
    tf = tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return {"device": "GPU", "name": details.get("device_name", gpus[0].name), "count": len(gpus)}
    return {"device": "CPU", "name": "cpu", "count": 0}


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

    Training and evaluation use it too, so scores are computed on exactly the path the worker runs.
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


class KerasCNN(Classifier):
    """Any CNN artifact: input spec, classes, task and preprocessing recipe all come from its metadata."""

    family = "cnn"

    def __init__(self, info: ModelInfo, model, spec: InputSpec, classes: tuple[str, ...], task: str,
                 recipe: dict[str, Any]):
        super().__init__(info)
        self.model = model
        self._spec = spec
        self._classes = classes
        self.task = task
        self.recipe = recipe
        self._predict = compile_predict(model, (spec.size, spec.size, spec.n_channels))

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
        self = cls(info, model, spec, classes, task, recipe)
        self._predict(np.zeros((1, *expected[1:]), dtype=np.float32))  # trace now, not on the first live batch
        log.info("loaded %s@%s (%s, %s) on %s", info.name, info.version, info.family, task,
                 device_summary()["device"])
        return self

    def predict_batch(self, batch: np.ndarray) -> BatchPrediction:
        x = apply_recipe(batch, self.recipe)
        return outputs_to_prediction(self._predict(x), self.task, self._classes)
