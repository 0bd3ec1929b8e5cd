"""The morphology training recipe shared by `training.morphology.train` and the transfer study
(`training.morphology.study`): budgets, loss, optimiser, augmentation, the split, transfer from a source model,
and the records an artifact carries."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from schemas.errors import StampflowError
from training.family import TrainOptions
from training.morphology.dataset import MorphologyData, grouped_stratified_split
from training.morphology.network import CLASSES, FAMILY_NAME, expand_input_channels

SPLIT = (0.70, 0.15, 0.15)
# Budgets sized for two shared CPU cores (~400 single-band images per CPU-second in training): CANDELS ~3.5 CPU
# minutes; the CLASH study's six arms ~6.
DEFAULTS = {"candels": {"epochs": 16, "batch": 64, "lr": 1e-3, "patience": 5},
            "clash": {"epochs": 20, "batch": 32, "lr": 1e-3, "patience": 6}}
TRANSFER_LR = 3e-4
# Galaxy morphology does not depend on orientation: the 8 exact flips/rotations of the square
# (`training.augment.dihedral_augmentation`), which cost next to nothing and beat arbitrary-angle rotation with
# zoom and shift here (docs/morphology.md).
AUGMENT: dict[str, Any] = {"kind": "dihedral", "transforms": "random vertical flip, horizontal flip and transpose "
                                                             "per image: the 8 symmetries of the square"}
CITATIONS = {
    "candels": "Kartaltepe et al. 2015, ApJS 221, 11 (CANDELS GOODS-S visual classifications, via "
               "Pérez-Carrasco et al. 2019, CANDELS_labels.csv)",
    "clash": "Pérez-Carrasco et al. 2019, PASP 131, 108002 (CLASH visual classifications, CLASH_labels.csv)",
}


def _compile(model, lr: float, total_steps: int, loss: str) -> None:
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(total_steps, 1), alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="categorical_crossentropy" if loss == "crossentropy" else "mean_squared_error",
                  metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])


def fit_model(model, x_fit, y_fit, x_val, y_val, *, epochs: int, batch: int, lr: float, loss: str, seed: int,
              patience: int, desc: str):
    """Compile (Adam with cosine decay, ``loss``) and fit with the dihedral augmentation and early stopping."""
    from training.augment import dihedral_augmentation
    from training.cnn import fit

    _compile(model, lr, epochs * int(np.ceil(len(x_fit) / batch)), loss)
    return fit(model, (x_fit, y_fit), (x_val, y_val), epochs=epochs, batch_size=batch,
               augment=dihedral_augmentation(seed), seed=seed, desc=desc, patience=patience or None)


def source_model(opts: TrainOptions):
    """``--from MODEL`` as a Keras model and its ModelInfo; it must be a morphology model."""
    from training.cnn import load_keras_model

    roots = [Path(opts.out_root)] if opts.out_root else []
    source, info = load_keras_model(opts.from_model, roots)
    if info.family != FAMILY_NAME:
        raise StampflowError(f"--from {opts.from_model} is a '{info.family}' model, not a morphology one")
    return source, info


def transfer_model(source, channels: int, freeze: int, seed: int):
    """``source`` widened to ``channels`` input filters (see `expand_input_channels`), first ``freeze`` weighted
    layers frozen. Returns (model, frozen layer names)."""
    from training.cnn import freeze_first

    model = expand_input_channels(source, channels, seed=seed)
    return model, freeze_first(model, freeze)


def served_throughput(model, x: np.ndarray) -> float:
    """Images/s of the serving tf.function at batch 256 (`training.cnn.inference_rate`)."""
    from training.cnn import inference_rate

    return inference_rate(model, x.shape[1:]) if len(x) else float("nan")


def split_parts(data: MorphologyData, seed: int) -> dict[str, np.ndarray]:
    """Fit / validation / test rows: `SPLIT`, stratified by top class, all rows of a galaxy in one part."""
    parts = grouped_stratified_split(data.top, data.groups, SPLIT, seed)
    return dict(zip(("fit", "validation", "test"), parts))


def training_record(result, epochs, batch, lr, loss, patience, seed, device, transfer, architecture) -> dict:
    """The artifact's ``training`` block (`FitResult.record` plus this recipe's details)."""
    return result.record(
        epochs=epochs, batch_size=batch, optimizer="Adam", learning_rate=lr,
        schedule="cosine decay to 5% over epochs_max", loss=loss_note(loss),
        early_stopping={"monitor": "val_loss", "patience": patience, "restore_best_weights": True}
        if patience else None, augmentation=AUGMENT, seed=seed, device=device, transfer=transfer,
        architecture=architecture)


def loss_note(loss: str) -> str:
    """The loss as the artifact records it."""
    return ("categorical cross-entropy against the vote fractions (soft targets: KL divergence + constant)"
            if loss == "crossentropy" else "mean squared error of the fractions (the square of the paper's RMSE)")


def expansion_note(source, channels: int) -> str:
    """How the source model's first convolution was fitted to ``channels`` input filters."""
    src = int(source.inputs[0].shape[-1])
    if src == channels:
        return f"input channels kept ({channels})"
    return (f"first convolution widened from {src} to {channels} channels: each channel's kernel is the source "
            f"kernel summed over its channels / {channels}, so {channels} identical channels give the source output")


def training_data(path: Path, data: MorphologyData, dataset: str) -> dict[str, Any]:
    """The artifact's ``training_data`` block: where the labels and (mock) stamps came from, what was joined."""
    return {"dataset": dataset, "path": str(Path(path).resolve()), "labels": CITATIONS[dataset],
            "labels_real": True, "images": "mock stamps drawn from each real label row (training.morphology.mocks)",
            "filters": list(data.bands), "stack": data.stack, "rows": len(data.ids),
            "galaxies": len(set(data.groups)), "join": data.report.as_dict(),
            "skipped": {k: len(v) for k, v in data.skipped.items()},
            "top_class_counts": {c: int((data.top == i).sum()) for i, c in enumerate(CLASSES)},
            "mean_fractions": {c: float(v) for c, v in zip(CLASSES, data.y.mean(axis=0))}}


def split_meta(data: MorphologyData, parts: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """The artifact's ``split`` block, with the held-out IDs `evaluate` scores by default."""
    return {"method": "seeded 70/15/15, stratified by top class, grouped by galaxy (all rows of a galaxy in one "
                      "part)", "seed": seed,
            "counts": {k: int(len(v)) for k, v in parts.items()},
            "galaxies": {k: len({data.groups[i] for i in v}) for k, v in parts.items()},
            "validation_ids": [data.ids[i] for i in parts["validation"]],
            "test_ids": [data.ids[i] for i in parts["test"]]}


def check_served(artifact: Path, test_raw: MorphologyData, pred: np.ndarray) -> None:
    """Re-score the test set through KerasCNN.predict_batch on geometry-only inputs, as the worker would."""
    from training.cnn import served_predictions

    served = served_predictions(artifact, test_raw.x)
    if len(served) and float(np.abs(served - pred).max()) > 1e-3:
        raise StampflowError(f"served predictions differ from training-time ones by up to "
                             f"{float(np.abs(served - pred).max()):.3g}")
