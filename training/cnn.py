"""What every CNN family's training shares: options, device set-up, augmentation, the fit loop with a progress
bar and a throughput figure, transfer-learning helpers, plots and the artifact writer.

Families (`training/radio.py`, ...) own their data and architecture; everything here is family-neutral, and
serving-side code (`models.cnn`, `models.preprocess`) is imported, never copied, so a model is evaluated on
exactly the path the worker runs.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
import sys
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.base import TASKS, InputSpec, ModelInfo
from models.cnn import DEFAULT_WEIGHTS, compile_predict, device_summary, load_keras, tensorflow
from models.registry import BUNDLED_ROOT, Registry
from models.versioning import code_version
from schemas.errors import StampflowError
from training.evaluation import classification_report, next_version, quantile_bins, regression_report  # noqa: F401
from training.evaluation import stratified_split_fractions as stratified_split  # noqa: F401  (families' API)

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """``stampflow train FAMILY`` options; family-specific ones arrive in ``extra`` (``--set key=value``)."""

    data: Path
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    from_model: str | None = None
    freeze: int | None = None
    out_root: Path | None = None
    version: str | None = None
    mixed_precision: bool = False
    learning_rate: float | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: Any = None, cast: type | None = None) -> Any:
        """A ``--set`` value, cast (bool accepts 1/0/true/false/yes/no); a bad value is a one-line error."""
        if key not in self.extra:
            return default
        raw = self.extra[key]
        if cast is None:
            return raw
        try:
            if cast is bool:
                low = raw.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                return low in ("1", "true", "yes")
            return cast(raw)
        except ValueError:
            raise StampflowError(f"--set {key}={raw}: expected {cast.__name__}") from None

    def fractions(self, default: tuple[float, ...], key: str = "fractions") -> tuple[float, ...]:
        """``--set fractions=0.7,0.15,0.15``: train/validation/test parts, checked; ``default`` when unset."""
        raw = self.extra.get(key)
        if not raw:
            return tuple(default)
        try:
            fr = tuple(float(v) for v in raw.split(","))
        except ValueError:
            raise StampflowError(f"--set {key}={raw}: expected e.g. 0.7,0.15,0.15") from None
        if len(fr) != 3 or any(f <= 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
            raise StampflowError(f"--set {key}={raw}: three positive fractions (train,val,test) summing to 1")
        return fr

    @property
    def registry_root(self) -> Path:
        return Path(self.out_root) if self.out_root else BUNDLED_ROOT


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


def augmentation(rotate_deg: float = 0.0, flip: str | None = None, zoom: float = 0.0, shift: float = 0.0,
                 seed: int = 0):
    """Keras preprocessing layers for on-the-fly augmentation, or None if nothing is asked.

    ``rotate_deg``: maximum rotation either way (180 = any angle); ``flip``: "horizontal", "vertical" or
    "horizontal_and_vertical"; ``zoom``: ±fraction; ``shift``: ±fraction of the image size. Empty corners are
    filled with the nearest edge pixels, so augmentation never invents a border the sky does not have.
    """
    tensorflow()
    import keras

    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=seed))
    if rotate_deg:
        layers.append(keras.layers.RandomRotation(rotate_deg / 360.0, fill_mode="nearest", seed=seed + 1))
    if zoom:
        layers.append(keras.layers.RandomZoom((-zoom, zoom), fill_mode="nearest", seed=seed + 2))
    if shift:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed + 3))
    return keras.Sequential(layers, name="augmentation") if layers else None


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
    if info.family == "stargal":
        raise StampflowError(f"{spec} is a Gaussian-process model; transfer learning needs a CNN artifact")
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


def load_family_model(model: str, family: str, options: dict[str, Any] | None, known: set[str]):
    """`evaluate`'s common start: refuse unknown ``--set`` options, resolve the model, check its family,
    load it through the serving class. Returns (KerasCNN, options dict)."""
    from models.cnn import KerasCNN

    options = dict(options or {})
    unknown = set(options) - set(known)
    if unknown:
        raise StampflowError(f"unknown evaluate option(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(known))})")
    info = Registry().resolve(str(model))
    if info.family != family:
        raise StampflowError(f"model {info.name}@{info.version} is a '{info.family}' model, not {family}")
    return KerasCNN.load(info), options


# ------------------------------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: dict[str, list[float]], path: Path, title: str = "Training curves") -> Path:
    """Loss and every other metric per epoch, training vs validation, one panel each."""
    plt = _pyplot()
    names = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.2 * max(len(names), 1), 3.4), dpi=110,
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = np.arange(1, len(history[name]) + 1)
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_scatter(true: np.ndarray, pred: np.ndarray, names: Sequence[str], path: Path,
                 title: str = "Predicted vs true") -> Path:
    """Predicted against true, one panel per output, with the identity line and the RMSE."""
    plt = _pyplot()
    t = np.asarray(true, dtype=float).reshape(len(true), -1)
    p = np.asarray(pred, dtype=float).reshape(len(pred), -1)
    k = t.shape[1]
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 3.4), dpi=110, squeeze=False)
    for i, ax in enumerate(axes[0]):
        lo, hi = float(min(t[:, i].min(), p[:, i].min())), float(max(t[:, i].max(), p[:, i].max()))
        ax.scatter(t[:, i], p[:, i], s=6, alpha=0.5)
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
        rmse = float(np.sqrt(np.mean((p[:, i] - t[:, i]) ** 2)))
        ax.set_title(f"{names[i]}  RMSE {rmse:.3f}", fontsize=9)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_training_plots(history: dict[str, list[float]], out_dir: Path, report: dict[str, Any], task: str,
                         classes: Sequence[str], *, true: np.ndarray | None = None,
                         pred: np.ndarray | None = None, name: str = "") -> dict[str, str]:
    """Curves PNG, plus a confusion matrix (classifiers, from ``report``) or a scatter plot (regression and
    vote fractions, from ``true``/``pred``). Returns {plot name: file name}."""
    from training.plots import plot_confusion_matrix

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {"curves": plot_curves(history, out_dir / "training_curves.png", f"{name} training curves").name}
    cm = report.get("confusion_matrix")
    if cm is not None:
        plots["confusion_matrix"] = plot_confusion_matrix(cm["matrix"], cm["labels"], out_dir / "confusion_matrix.png",
                                                          f"{name} confusion matrix (test)").name
    if task in ("regression", "fractions") and true is not None and pred is not None:
        plots["scatter"] = plot_scatter(true, pred, classes, out_dir / "scatter.png", f"{name} predicted vs true").name
    return plots


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
