"""Training one radio network on prepared arrays, the dihedral test-time average, and folding several
networks (and the CDL1 Bent groups) into one served Keras model.

The served ``radio-first`` 2.0.0 is a single Keras graph (standard layers only, so it loads in safe mode):
the members' softmax outputs are averaged by an ``Average`` layer, and a 5-way CDL1 head is folded to the four
Griese classes by a fixed (non-trainable) ``Dense`` that sums the two Bent groups.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from training.augment import augmentation, dihedral_augmentation
from training.cnn import fit, predict_array
from training.evaluation import balanced_accuracy
from training.radio.network import AUGMENT, CONV_FILTERS, build_model, head_of, stem_of, zoom_of
from training.radio.sets import GRIESE_CLASSES


def class_weights(labels: np.ndarray, k: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=k).astype(float)
    return {i: float(len(labels) / (k * c)) if c else 0.0 for i, c in enumerate(counts)}


def compile_model(model, lr: float, total_steps: int, loss: str = "sparse_categorical_crossentropy") -> None:
    import keras

    # Cosine decay to 5% over the whole run: no callback needed, and the same schedule for every arm of a
    # comparison with the same epochs.
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1), alpha=0.05)
    # Keras resolves "accuracy" by the targets' shape (labels or probabilities), under one name in the history
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])


def make_augment(kind: str, seed: int):
    """``dihedral``: the 8 exact symmetries of the square (no interpolation); ``rotate``: 1.0.0's any-angle
    rotation plus flips."""
    if kind == "dihedral":
        return dihedral_augmentation(seed=seed)
    if kind == "rotate":
        return augmentation(rotate_deg=AUGMENT["rotate_deg"], flip=AUGMENT["flip"], seed=seed)
    raise ValueError(f"unknown augmentation {kind!r}")


def train_network(x_fit: np.ndarray, y_fit: np.ndarray, x_val: np.ndarray | None, y_val: np.ndarray | None, *,
                  sub: np.ndarray | None = None, epochs: int, batch: int = 32, lr: float = 1e-3, seed: int = 0,
                  augment: str = "dihedral", filters: Sequence[int] | None = None, desc: str = "radio",
                  weighting: str = "balanced", extra_conv: int = 0, select: bool = False,
                  stem: str = "conv5s2", head: str = "flatten", init=None, soft: np.ndarray | None = None,
                  zoom: bool = False):
    """One network, fixed epochs (no early stopping: every arm gets the same budget); ``weighting``: balanced
    class weights (each class counts equally) or none (each image counts equally).

    ``sub``: train on the 5 CDL1 codes instead of ``y`` (the returned network then has 5 outputs: fold them
    with `fold_probabilities` or `served_model`).

    ``select``: after every epoch score the balanced accuracy (mean per-class recall) on (x_val, y_val) and
    restore the best epoch's weights at the end (the carved part is ~half FRII, Griese valid is balanced).

    ``init``: a network of the same architecture whose weights this one starts from (pretraining), instead of
    the seeded initialisation; the optimizer and its schedule start afresh.

    ``soft``: (N, 4) target probabilities per fit image (distillation, `distill_targets`), trained with the
    categorical cross-entropy instead of the labels; the class weights still follow ``y_fit`` (Keras weights a
    soft target by its most probable class, which `distill_targets` keeps at the label)."""
    if soft is not None and sub is not None:
        raise ValueError("soft targets and CDL1 sub-labels are exclusive")
    target = y_fit if sub is None else sub
    k = int(target.max()) + 1 if sub is not None else len(GRIESE_CLASSES)
    model = build_model(n_classes=k, size=int(x_fit.shape[1]), seed=seed, filters=tuple(filters or CONV_FILTERS),
                        extra_conv=extra_conv, stem=stem, head=head, zoom=zoom)
    if init is not None:
        model.set_weights(init.get_weights())
    compile_model(model, lr, epochs * int(np.ceil(len(target) / batch)),
                  loss="sparse_categorical_crossentropy" if soft is None else "categorical_crossentropy")
    # Keras scores validation data with the training loss, so soft-target runs leave it to the chooser
    val = (x_val, y_val) if x_val is not None and sub is None and soft is None else None
    chooser = BestBalanced(x_val, y_val) if select and x_val is not None and sub is None else None
    result = fit(model, (x_fit, target if soft is None else soft.astype(np.float32)), val, epochs=epochs,
                 batch_size=batch, augment=make_augment(augment, seed), seed=seed, desc=desc,
                 class_weight=class_weights(target, k) if weighting == "balanced" else None,
                 callbacks=[chooser.callback()] if chooser else ())
    history = dict(result.history)
    best = None
    if chooser:
        best = chooser.restore(model)
        history["val_balanced_accuracy"] = chooser.scores
    return model, {"images_per_s": result.images_per_s, "seconds": result.seconds, "history": history,
                   "epochs_run": result.epochs_run, "outputs": k, "best_epoch": best}


def distill_targets(y: np.ndarray, teacher: np.ndarray, alpha: float) -> np.ndarray:
    """Soft targets for a student: ``alpha`` x the one-hot label + (1 - alpha) x the teacher's probabilities
    (an ensemble's dihedral average on the unaugmented fit image, invariant to the student's rotations).

    With ``alpha`` >= 0.5 the label stays the most probable class of every target, so the class weights (applied
    by the target's most probable class) are the labels' and a teacher that disagrees with a label can soften it
    but never flip it."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha} outside [0, 1]")
    if teacher.shape != (len(y), len(GRIESE_CLASSES)):
        raise ValueError(f"teacher probabilities {teacher.shape} for {len(y)} labels")
    return alpha * np.eye(len(GRIESE_CLASSES))[y] + (1.0 - alpha) * teacher


def suspect_labels(p: np.ndarray, y: np.ndarray, below: float = 0.2) -> np.ndarray:
    """Label cleaning ("confident learning"): the images whose out-of-fold probability ``p`` for their own label
    ``y`` is under ``below`` while another class has the largest."""
    p = np.asarray(p)
    return (p[np.arange(len(y)), y] < below) & (p.argmax(axis=1) != y)


class BestBalanced:
    """Best-epoch selection on the balanced accuracy of a validation part (a Keras callback via `callback`)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.x, self.y = x, y
        self.scores: list[float] = []
        self.best_weights = None
        self.best_epoch: int | None = None

    def callback(self):
        import keras

        chooser = self

        class _Epoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                score = balanced_accuracy(chooser.y, predict_array(self.model, chooser.x).argmax(axis=1))
                if not chooser.scores or score > max(chooser.scores):
                    chooser.best_weights, chooser.best_epoch = self.model.get_weights(), epoch + 1
                chooser.scores.append(score)

        return _Epoch()

    def restore(self, model) -> int | None:
        if self.best_weights is not None:
            model.set_weights(self.best_weights)
        return self.best_epoch


# CDL1 splits Griese's Bent into two groups (codes 3 and 4); the served classes are Griese's four.
CDL1_FOLD = {GRIESE_CLASSES.index("Bent"): (3, 4)}


def fold_matrix(n_in: int, n_out: int = len(GRIESE_CLASSES), groups: dict[int, Sequence[int]] = CDL1_FOLD):
    """(n_in, n_out) 0/1 matrix: output j sums inputs groups[j] (default: input j alone)."""
    w = np.zeros((n_in, n_out), dtype=np.float32)
    for j in range(n_out):
        for i in (groups.get(j, (j,)) if n_in > n_out else (j,)):
            w[i, j] = 1.0
    return w


def fold_probabilities(p: np.ndarray) -> np.ndarray:
    return p if p.shape[1] == len(GRIESE_CLASSES) else p @ fold_matrix(p.shape[1])


def served_model(members: Sequence[Any], name: str = "radio_first"):
    """One flat Keras graph (standard layers only, loads in safe mode): each trained member copied with a
    ``m<i>_`` prefix onto one shared input, a 5-way CDL1 head folded to 4 classes by a fixed Dense, and the
    members' probabilities averaged. One member: that network alone (folded when needed)."""
    import keras

    shape = tuple(members[0].inputs[0].shape[1:])
    inp = keras.Input(shape, name="stamp")
    outs = []
    for i, m in enumerate(members):
        k = int(m.outputs[0].shape[-1])
        # the member's own widths, read off its layers (build_model's fixed layer names)
        convs = [layer for layer in m.layers if type(layer).__name__ == "Conv2D"
                 and not layer.name.startswith("zconv")]   # the zoom branch's widths are the main stack's
        extra = [c.filters for c in convs if c.name.endswith("b")]
        filters = tuple(c.filters for c in convs if not c.name.endswith("b"))
        stem = stem_of(m)
        copy = build_model(n_classes=k, size=int(shape[0]), filters=filters, dense=m.get_layer("dense").units,
                           prefix=f"m{i}_", inputs=inp, extra_conv=extra[0] if extra else 0, stem=stem,
                           head=head_of(m), zoom=zoom_of(m))
        copy.set_weights(m.get_weights())
        out = copy.outputs[0]
        if k != len(GRIESE_CLASSES):
            fold = keras.layers.Dense(len(GRIESE_CLASSES), use_bias=False, trainable=False, dtype="float32",
                                      name=f"m{i}_fold_cdl1")
            out = fold(out)
            fold.set_weights([fold_matrix(k)])
        outs.append(out)
    out = outs[0] if len(outs) == 1 else keras.layers.Average(name="mean_probability")(outs)
    return keras.Model(inp, out, name=name)


DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))


def dihedral(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate (N, H, W, C) stamps by k x 90 degrees, after a left-right mirror when ``flip``."""
    y = x[:, :, ::-1] if flip else x
    return np.ascontiguousarray(np.rot90(y, k, axes=(1, 2)))


def dihedral_average(model, x: np.ndarray, transforms: int = 8) -> np.ndarray:
    """Mean (4-class, folded) softmax over the first ``transforms`` dihedral symmetries (1 = the plain
    prediction)."""
    return fold_probabilities(np.mean([predict_array(model, dihedral(x, k, f)) for k, f in DIHEDRAL[:transforms]],
                                      axis=0))


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
