"""Route decoded packets to the models that accept them, prepare their arrays and run the models.

One job: turn packets into per-model answers, or into dead letters for the packets a model cannot take. A
failure stays with its packet: a stamp that does not prepare, or a model call that raises, dead-letters that
packet and never the batch around it.
"""
from __future__ import annotations

import logging
import time
from typing import NamedTuple, Sequence

import numpy as np

from models.base import BatchPrediction, Classifier, InputSpec
from models.preprocess import prepare_batch
from schemas.packet import DeadLetter, Packet

log = logging.getLogger(__name__)


class Answer(NamedTuple):
    """One model's prediction for one packet: row ``row`` of ``prediction``."""

    classifier: Classifier
    prediction: BatchPrediction
    row: int


def stamp_flags(p: Packet, spec: InputSpec) -> None:
    """Surface stamp quality on the result: edge-of-CCD padding, and NaN pixels in the data itself.

    Only the stamps a model actually read are looked at, so the flags say something about the prediction."""
    stamps = ([p.band_stamps[b] for b in spec.channels] if spec.channels is not None
              else [p.stamps[k] for k in spec.stamp_kinds])
    for stamp in stamps:
        img = stamp.image()
        h, w = img.original_shape
        size = img.data.shape[0] * img.data.shape[1]
        if img.padded and "padded_stamp" not in p.flags:
            p.flags.append("padded_stamp")
        # Padding is NaN too; only NaNs beyond the padded border are the survey's own.
        own_nans = img.nan_fraction * size - (size - h * w if img.padded else 0)
        if own_nans > 0.5 and "nan_pixels" not in p.flags:
            p.flags.append("nan_pixels")


class Router:
    """Runs every classifier on the packets its `InputSpec` accepts, in the order the models were given."""

    def __init__(self, classifiers: Sequence[Classifier], inference_seconds):
        self.classifiers = list(classifiers)
        self._inference = inference_seconds  # the histogram stampflow_inference_seconds, labelled by model

    def classify(self, packets: list[Packet]) -> tuple[dict[int, list[Answer]], dict[int, DeadLetter]]:
        """Answers per ``id(packet)`` (empty list: no model accepted it), and dead letters per ``id(packet)``.

        A packet that fails for one model is out for the models after it too: its result would otherwise
        claim a complete set of predictions that it does not have.
        """
        answers: dict[int, list[Answer]] = {id(p): [] for p in packets}
        failed: dict[int, DeadLetter] = {}
        for clf in self.classifiers:
            routed = [p for p in packets if id(p) not in failed and clf.input_spec.accepts(p)]
            if not routed:
                continue
            arrays, errors = prepare_batch(routed, clf.input_spec)
            good: list[Packet] = []
            for p, err in zip(routed, errors):
                if err is None:
                    good.append(p)
                else:
                    stage = getattr(err, "stage", "preprocess")
                    failed[id(p)] = DeadLetter.from_exception(p.raw, p.origin, err, stage=stage, candid=p.candid)
            if len(good) != len(routed):
                arrays = arrays[[i for i, err in enumerate(errors) if err is None]]
            if not good:
                continue
            for p in good:
                stamp_flags(p, clf.input_spec)
            for p, answer in self._predict(clf, good, arrays, failed):
                answers[id(p)].append(answer)
        return answers, failed

    def _predict(self, clf: Classifier, packets: list[Packet], arrays: np.ndarray,
                 failed: dict[int, DeadLetter]) -> list[tuple[Packet, Answer]]:
        t0 = time.perf_counter()
        try:
            pred = clf.predict_batch(arrays)
            if len(pred.labels) != len(packets):
                raise ValueError(f"model {clf.name} returned {len(pred.labels)} predictions for {len(packets)} inputs")
            self._inference.labels(clf.name).observe(time.perf_counter() - t0)
            return [(p, Answer(clf, pred, i)) for i, p in enumerate(packets)]
        except Exception as exc:  # a model failure belongs to its packet(s), never to the worker
            if len(packets) == 1:
                failed[id(packets[0])] = DeadLetter.from_exception(packets[0].raw, packets[0].origin, exc,
                                                                  stage="classify", candid=packets[0].candid)
                return []
            # Isolate the culprit(s) by halving, so one poisonous stamp costs log2(N) extra calls, not the batch.
            log.warning("model %s failed on a batch of %d (%s); isolating", clf.name, len(packets), exc)
            mid = len(packets) // 2
            return (self._predict(clf, packets[:mid], arrays[:mid], failed)
                    + self._predict(clf, packets[mid:], arrays[mid:], failed))
