"""What every CNN family's training shares: device set-up, the fit loop with a progress bar and a throughput
figure, transfer-learning helpers, predictions through the serving path and the artifact writer.

Families (`training/radio/`, ...) own their data and architecture; everything here is family-neutral, and
serving-side code (`models.cnn`, `models.preprocess`) is imported, never copied, so a model is evaluated on
exactly the path the worker runs. Augmentation layers are in `training.augment`, plots in `training.plots`,
scores and splits in `training.evaluation`.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import sys
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.base import TASKS, InputSpec, ModelInfo
from models.cnn import DEFAULT_WEIGHTS, compile_predict, load_keras
from models.tensorflow_runtime import device_summary, tensorflow
from models.registry import BUNDLED_ROOT, Registry, serving_kind
from models.versioning import code_version
from schemas.errors import StampflowError
from training.evaluation import next_version

log = logging.getLogger(__name__)


def configure_device(mixed_precision: bool = False, seed: int | None = None) -> dict[str, Any]:
    """Seed everything, and turn on mixed precision only where it pays (a GPU); the CPU ignores the flag."""
    tensorflow()
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    device = device_summary()
    use_mixed = bool(mixed_precision and device["device"] == "GPU")
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    if mixed_precision and not use_mixed:
        log.warning("mixed precision asked for but no GPU is visible: training in float32 on the CPU")
    return {**device, "mixed_precision": use_mixed}


@dataclass
class FitResult:
    history: dict[str, list[float]]
    images_per_s: float  # training throughput: images through forward + backward per second of training steps
    seconds: float
    epochs_run: int
    best_epoch: int | None = None

    def record(self, *, epochs: int, batch_size: int, **details: Any) -> dict[str, Any]:
        """The artifact's ``training`` block: the same keys for every family, then the family's own details."""
        return {"epochs_max": epochs, "epochs_run": self.epochs_run, "best_epoch": self.best_epoch,
                "batch_size": batch_size, "seconds": self.seconds, "train_images_per_s": self.images_per_s,
                **details, "history": self.history}


def _progress_callback(total_epochs: int, steps: int, desc: str):
    import keras
    from tqdm import tqdm

    class Progress(keras.callbacks.Callback):
        """A tqdm bar over all training steps; train time excludes validation, for an honest images/s."""

        def __init__(self):
            super().__init__()
            self.bar = None
            self.train_seconds = 0.0
            self._t0 = 0.0
            self.epoch = 0

        def on_train_begin(self, logs=None):
            self.bar = tqdm(total=total_epochs * steps, desc=desc, unit="step", file=sys.stderr, leave=True)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if logs and batch % 5 == 0:
                self.bar.set_postfix(epoch=self.epoch + 1, loss=f"{logs.get('loss', float('nan')):.4f}")

        def on_test_begin(self, logs=None):
            self.train_seconds += time.perf_counter() - self._t0

        def on_epoch_end(self, epoch, logs=None):
            if logs:
                shown = {k: f"{v:.4f}" for k, v in logs.items() if isinstance(v, (int, float))}
                self.bar.set_postfix(epoch=epoch + 1, **shown)

        def on_train_end(self, logs=None):
            if self.bar is not None:
                self.bar.close()

    return Progress()


def _dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, augment, seed: int):
    tf = tensorflow()
    ds = tf.data.Dataset.from_tensor_slices((x.astype(np.float32, copy=False), y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda a, b: (augment(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit(model, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None, *, epochs: int,
        batch_size: int, augment=None, seed: int = 0, desc: str = "train", class_weight: dict | None = None,
        patience: int | None = None, monitor: str = "val_loss", callbacks: Sequence[Any] = ()) -> FitResult:
    """Train a compiled model on prepared arrays; augmentation runs in the tf.data pipeline.

    With ``patience``, training stops once ``monitor`` has not improved for that many epochs and the best
    epoch's weights are restored (the curves still show every epoch run).
    """
    tensorflow()
    import keras

    x, y = train
    if len(x) == 0:
        raise StampflowError("no training images")
    steps = int(np.ceil(len(x) / batch_size))
    progress = _progress_callback(epochs, steps, desc)
    callbacks = [progress, *callbacks]  # e.g. keras.callbacks.ReduceLROnPlateau, as a family's seed prescribes
    stopper = None
    if patience and val is not None:
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, restore_best_weights=True)
        callbacks.append(stopper)
    train_ds = _dataset(x, y, batch_size, shuffle=True, augment=augment, seed=seed)
    val_ds = _dataset(val[0], val[1], batch_size, shuffle=False, augment=None, seed=seed) if val is not None else None
    t0 = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        # Keras warns that shuffle= is ignored for datasets; ours are shuffled in _dataset, per epoch.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=callbacks,
                         class_weight=class_weight)
    seconds = time.perf_counter() - t0
    if val_ds is None:
        progress.train_seconds += time.perf_counter() - progress._t0
    epochs_run = len(next(iter(hist.history.values()))) if hist.history else 0
    train_seconds = progress.train_seconds or seconds
    best = None
    if stopper is not None and monitor in hist.history:
        best = int(np.argmin(hist.history[monitor])) if "loss" in monitor else int(np.argmax(hist.history[monitor]))
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return FitResult(history=history, images_per_s=len(x) * epochs_run / max(train_seconds, 1e-9), seconds=seconds,
                     epochs_run=epochs_run, best_epoch=best)


# ------------------------------------------------------------------------------------------ transfer learning


def weighted_layers(model) -> list:
    return [layer for layer in model.layers if layer.weights]


def freeze_first(model, n: int) -> list[str]:
    """Freeze the first ``n`` layers that have weights (conv, dense, batch norm); returns their names.

    Frozen batch-norm layers also run in inference mode (Keras 3), so fine-tuning does not drift the source
    survey's statistics. Recompile the model after calling this.
    """
    layers = weighted_layers(model)
    if n < 0 or n > len(layers):
        raise StampflowError(f"--freeze {n}: the model has {len(layers)} layers with weights")
    for layer in layers[:n]:
        layer.trainable = False
    return [layer.name for layer in layers[:n]]


def load_keras_model(spec: str, roots: Sequence[Path] = ()) -> tuple[Any, ModelInfo]:
    """A registry model (name, name@version or artifact directory) as a Keras model, loaded in safe mode."""
    info = Registry(list(roots)).resolve(spec)
    if serving_kind(info) != "keras":
        raise StampflowError(f"{spec} is not a Keras network ({info.family}); transfer learning needs a CNN "
                             "artifact")
    return load_keras(info.path / info.metadata.get("weights", DEFAULT_WEIGHTS)), info


_PREDICTORS: "weakref.WeakKeyDictionary[Any, dict[tuple, Any]]" = weakref.WeakKeyDictionary()


def predict_array(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Outputs for prepared arrays through the serving `tf.function` (not ``model.predict``), traced once per
    model and input shape (evaluation calls this per epoch and per split)."""
    x = np.asarray(x, dtype=np.float32)
    key = (tuple(x.shape[1:]), int(batch_size))
    per_model = _PREDICTORS.setdefault(model, {})
    if key not in per_model:
        per_model[key] = compile_predict(model, x.shape[1:], chunk=batch_size)
    return per_model[key](x)


def inference_rate(model, input_shape: Sequence[int], batch: int = 256, repeats: int = 5) -> float:
    """Images/s of the serving `tf.function` at ``batch`` (after one warm-up call), reported by every run."""
    f = compile_predict(model, input_shape, chunk=batch)
    x = np.random.default_rng(0).uniform(size=(batch, *input_shape)).astype(np.float32)
    f(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        f(x)
    return batch * repeats / (time.perf_counter() - t0)


def load_served(info: ModelInfo, family: str):
    """`evaluate`'s common start: check the resolved artifact is this family's, and load it through the serving
    class (`models.cnn.KerasCNN`), so evaluation runs exactly what a worker runs."""
    from models.cnn import KerasCNN

    if info.family != family:
        raise StampflowError(f"model {info.name}@{info.version} is a '{info.family}' model, not {family}")
    return KerasCNN.load(info)


def served_predictions(artifact: Path, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """A freshly written artifact's outputs for geometry-prepared stamps ``x``, through the serving class
    (recipe + network, ``KerasCNN.predict_batch``): training checks them against its in-memory predictions."""
    from models.cnn import KerasCNN

    artifact = Path(artifact)
    meta = json.loads((artifact / "metadata.json").read_text())
    clf = KerasCNN.load(ModelInfo(meta["name"], meta["version"], meta["family"], artifact, meta))
    out = [clf.predict_batch(x[i:i + batch]).probabilities for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(meta["classes"])))


# ------------------------------------------------------------------------------------------------- artifacts


def save_artifact(model, *, name: str, family: str, version: str | None, out_root: Path | None, task: str,
                  classes: Sequence[str], input_spec: InputSpec, preprocess: dict[str, Any],
                  training_data: dict[str, Any], split: dict[str, Any], metrics: dict[str, Any], trained_on: str,
                  training: dict[str, Any], plots_from: Path | None = None,
                  extra: dict[str, Any] | None = None) -> Path:
    """Write ``<root>/<name>/<version>/model.keras`` + ``metadata.json`` (+ PNGs from ``plots_from``).

    The artifact is reloaded through the serving class before this returns, so a model that cannot be served
    (unsafe layer, shape mismatch, bad recipe) fails here, not in a worker.
    """
    import keras

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    if trained_on not in ("real", "mock"):
        raise ValueError("trained_on must be 'real' or 'mock'")
    root = Path(out_root) if out_root else BUNDLED_ROOT
    version = version or next_version(root, name)
    target = root / name / version
    if target.exists():
        raise StampflowError(f"{target} already exists; pass --version to write another version")
    tmp = target.with_name(f".{version}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        # An uncompiled copy: the optimizer state would triple the file and no worker needs it (clone_model
        # would carry the compile state over; a model rebuilt from its config does not).
        serving = type(model).from_config(model.get_config())
        serving.set_weights(model.get_weights())
        keras.saving.save_model(serving, tmp / DEFAULT_WEIGHTS)
        if plots_from is not None:
            for png in Path(plots_from).glob("*.png"):
                shutil.copy2(png, tmp / png.name)
        meta = {
            "name": name, "version": version, "family": family, "task": task, "classes": list(classes),
            "input_spec": input_spec.as_dict(), "preprocess": preprocess, "weights": DEFAULT_WEIGHTS,
            "trained_on": trained_on, "training_data": training_data, "split": split, "metrics": metrics,
            "training": training, "parameters": int(model.count_params()),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(), **(extra or {}),
        }
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        from models.cnn import KerasCNN

        KerasCNN.load(ModelInfo(name, version, family, tmp, json.loads((tmp / "metadata.json").read_text())))
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved %s", target)
    return target


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
