"""Scoring the star/galaxy GP through the serving path, and ``stampflow evaluate`` for its artifacts.

Cutouts are wrapped as ZTF science-stamp packets and go through `prepare_batch` -> `StarGalaxyGP.predict_batch`,
as the engine runs them. `evaluate` reports how many evaluated files were in the model's training set (a GP
remembers its training points, so those are trivially right); the ``unseen`` block scores only the others.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.base import ModelInfo
from models.preprocess import prepare_batch
from models.stargal import WEIGHTS_FILE, StarGalaxyGP
from schemas.errors import StampflowError
from schemas.packet import Origin, Packet, Stamp, StampEncoding, StampImage, StampKind
from training.calibration import expected_calibration_error
from training.evaluation import classification_report
from training.stargal.data import load_stargal_dir
from training.stargal.options import StargalEvaluateOptions

FAMILY = "stargal"


def packets_from_images(images: np.ndarray, names: Sequence[str]) -> list[Packet]:
    """Wrap cutouts as science-stamp ZTF packets, so scoring runs through `prepare_batch` like the engine."""
    now = time.time()
    packets = []
    for i, (img, name) in enumerate(zip(images, names)):
        data = np.asarray(img, dtype=np.float32)
        image = StampImage(data=data, padded=False, original_shape=tuple(data.shape),
                           nan_fraction=float(np.isnan(data).mean()))
        stamp = Stamp(kind=StampKind.SCIENCE, raw=b"", encoding=StampEncoding.FITS, nominal_size=data.shape[0],
                      _image=image)
        # a cutout serves as science and template stamp alike, as cutout packets do (stream.decode.mappers)
        packets.append(Packet(candid=i, object_id=str(name), survey="ZTF", alert_time=None, ra=None, dec=None,
                              band=None, schema_version="fits-cutout",
                              stamps={StampKind.SCIENCE: stamp, StampKind.TEMPLATE: stamp},
                              origin=Origin(file=str(name)), ingest_time=now))
    return packets


def predict_images(model: StarGalaxyGP, images: np.ndarray, names: Sequence[str], batch_size: int = 256,
                   progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class indices (N,), probabilities (N, K) and uncertainty (N,) via prepare_batch + model.predict_batch."""
    from tqdm.auto import tqdm

    k = len(model.classes)
    idx, probs, unc = np.zeros(0, int), np.zeros((0, k)), np.zeros(0)
    out_idx, out_p, out_u = [], [], []
    starts = range(0, len(images), batch_size)
    for s in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
        packets = packets_from_images(images[s:s + batch_size], names[s:s + batch_size])
        batch, errors = prepare_batch(packets, model.input_spec)
        bad = [e for e in errors if e is not None]
        if bad:
            raise StampflowError(f"cannot prepare cutout {packets[errors.index(bad[0])].object_id}: {bad[0]}")
        pred = model.predict_batch(batch)
        out_idx.append(np.array([model.classes.index(lbl) for lbl in pred.labels], dtype=int))
        out_p.append(pred.probabilities)
        out_u.append(pred.uncertainty)
    if out_idx:
        idx, probs, unc = np.concatenate(out_idx), np.concatenate(out_p), np.concatenate(out_u)
    return idx, probs, unc


def training_hashes(artifact: Path) -> set[str]:
    """sha256 of every file the artifact was trained on (stored in its weights, empty for older artifacts)."""
    with np.load(Path(artifact) / WEIGHTS_FILE, allow_pickle=False) as z:
        return {bytes(h).hex() for h in z["train_file_sha256"]} if "train_file_sha256" in z.files else set()


def evaluate(info: ModelInfo, data: Path, options: StargalEvaluateOptions | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Score a star/galaxy artifact on the labelled cutouts in ``data`` through the serving path."""
    o = options or StargalEvaluateOptions()
    if info.family != FAMILY:
        raise StampflowError(f"model {info.name}@{info.version} is a '{info.family}' model, not {FAMILY}")
    model = StarGalaxyGP.load(info)
    images, labels, names, data_info = load_stargal_dir(data, size=model.input_spec.size, return_info=True)
    y = np.array([model.classes.index(lbl) for lbl in labels])
    t0 = time.perf_counter()
    pred, probs, unc = predict_images(model, images, names, batch_size=o.batch_size, progress=progress)
    seconds = time.perf_counter() - t0
    report = classification_report(y, pred, model.classes)
    report["ece"] = expected_calibration_error(probs, y)
    result: dict[str, Any] = {"model": f"{info.name}@{info.version}", "artifact": str(info.path),
                              "data": {"path": str(Path(data).resolve()), "n_files": data_info.n_files,
                                       "n_duplicates_dropped": data_info.n_duplicates,
                                       "sha256_of_sorted_file_hashes": data_info.dataset_sha256()},
                              **report,
                              "mean_uncertainty": float(unc.mean()) if len(unc) else None,
                              "seconds": seconds, "images_per_second": len(images) / seconds if seconds else None}
    trained = training_hashes(info.path)
    seen = np.array([h in trained for h in data_info.hashes], dtype=bool)
    result["n_in_training_set"] = int(seen.sum())
    if seen.any():
        unseen = ~seen
        sub = classification_report(y[unseen], pred[unseen], model.classes)
        result["unseen"] = {k: sub[k] for k in ("n", "correct", "accuracy", "accuracy_ci95", "confusion_matrix",
                                                "per_class")}
    return result
