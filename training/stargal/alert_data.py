"""Real alerts as star/galaxy training data: stamps through the worker's path, labels from the PS1 reference.

Each alert with a confident PS1 reference (`reference.py`) becomes one training row: its stamp is decoded and
cut by the very code the worker runs (`stream.decode.Decoder` -> `models.preprocess.prepare_batch` with the
model's `InputSpec`), so training and serving see the same pixels. The label is the reference; the reference
fields themselves never become features. Alerts are kept once per ``candid``, and their ``objectId`` goes with
them so every split of alerts is grouped by object: no object is both trained and scored on.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from models.base import InputSpec
from models.preprocess import prepare_batch
from schemas.errors import StampflowError
from schemas.packet import Packet, RawMessage
from training.stargal.reference import Reference, Thresholds, record_of, reference_of


@dataclass
class AlertSet:
    images: np.ndarray          # (N, size, size) float32, exactly as served
    labels: np.ndarray          # (N,) "star" / "galaxy" from the PS1 reference
    object_ids: list[str]       # for grouped splits
    candids: np.ndarray         # (N,) int64
    references: list[Reference]
    n_messages: int             # alert messages read
    n_unprepared: int           # confident references whose stamp could not be prepared (e.g. unreadable)


def load_alert_set(paths: Sequence[Path], spec: InputSpec, t: Thresholds = Thresholds(),
                   batch: int = 256) -> AlertSet:
    """Every alert under ``paths`` with a confident PS1 reference, prepared for ``spec``; first copy per candid."""
    from stream.decode import Decoder
    from stream.file_source import FileSource

    for p in paths:
        if not Path(p).exists():
            raise StampflowError(f"alert path {p} does not exist")
    decoder = Decoder()
    packets: list[Packet] = []
    refs: list[Reference] = []
    seen: set[int] = set()
    n_messages = 0
    for item in FileSource([Path(p) for p in paths]).iter_messages():
        if not isinstance(item, RawMessage):
            continue  # unreadable input: the worker dead-letters it, training skips it
        n_messages += 1
        rec = record_of(item)
        ref = reference_of(rec, t) if rec is not None else None
        if ref is None or ref.label is None or ref.candid in seen:
            continue
        packet = decoder.decode_or_dead_letter(item)
        if not isinstance(packet, Packet) or packet.survey != "ZTF":
            continue
        seen.add(ref.candid)
        packets.append(packet)
        refs.append(ref)
    images, keep = [], []
    for s in range(0, len(packets), batch):
        arr, errors = prepare_batch(packets[s:s + batch], spec)
        ok = [e is None for e in errors]
        images.append(arr[ok][..., 0])
        keep.extend(s + i for i, good in enumerate(ok) if good)
    if not keep:
        raise StampflowError(f"no alert with a confident PS1 reference in {', '.join(map(str, paths))}")
    refs_kept = [refs[i] for i in keep]
    return AlertSet(images=np.concatenate(images).astype(np.float32), labels=np.array([r.label for r in refs_kept]),
                    object_ids=[r.object_id for r in refs_kept],
                    candids=np.array([r.candid for r in refs_kept], dtype=np.int64), references=refs_kept,
                    n_messages=n_messages, n_unprepared=len(packets) - len(keep))


def grouped_folds(object_ids: Sequence[str], labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number per row, grouped by object (all alerts of an object share a fold) and stratified by the
    object's majority label, so the rare class (galaxies) spreads over every fold."""
    rng = np.random.default_rng(seed)
    objects: dict[str, list[int]] = {}
    for i, oid in enumerate(object_ids):
        objects.setdefault(oid, []).append(i)
    fold_of = np.zeros(len(object_ids), dtype=int)
    for label in sorted(set(labels.tolist())):
        members = [o for o, rows in objects.items()
                   if max(set(labels[rows].tolist()), key=labels[rows].tolist().count) == label]
        members = [members[i] for i in rng.permutation(len(members))]
        for j, oid in enumerate(members):
            fold_of[objects[oid]] = j % k
    return fold_of
