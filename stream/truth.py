"""Score acknowledged results against the truth labels their packets carried (archival cutout replays).

One job: keep, per model, a window of the last N truth scores and publish running accuracy (labels) and RMSE
(regression values, vote fractions). An observer of acknowledged batches, so a batch that is redone after a
failed publish is scored once, not twice.
"""
from __future__ import annotations

import math
from collections import deque

from schemas.results import ClassificationResult
from stream.metrics import Metrics
from stream.observers import BatchOutcome
from stream.sources import Item


class TruthScorer:
    def __init__(self, metrics: Metrics, window: int):
        self.metrics = metrics
        self.window = window
        # per model: the last N truth scores (1/0 for labels, squared errors for regression values)
        self._hits: dict[str, deque] = {}
        self._sq_errors: dict[str, deque] = {}

    def on_acknowledged(self, batch: list[Item], outcome: BatchOutcome) -> None:
        scored: set[str] = set()
        for r in outcome.results:
            if r.truth is not None and r.predictions:
                scored |= self._score(r)
        self._publish(scored)  # gauges once per batch and model, not per result

    def _score(self, result: ClassificationResult) -> set[str]:
        """Feed the windows from one truth-labelled result; returns the models scored."""
        truth_values = result.truth.values
        scored: set[str] = set()
        for pred in result.predictions:
            model = pred.model
            if pred.correct is not None:
                self._hits.setdefault(model, deque(maxlen=self.window)).append(1 if pred.correct else 0)
                self.metrics.truth_labelled.labels(model).inc()
                if pred.correct:
                    self.metrics.truth_correct.labels(model).inc()
                scored.add(model)
            # Vote fractions are scored like regression outputs: the truth is a fraction per class too.
            outputs = pred.values or (pred.probabilities if pred.task == "fractions" else {})
            common = [k for k in outputs if k in truth_values]
            if common:
                err = sum((outputs[k] - truth_values[k]) ** 2 for k in common) / len(common)
                self._sq_errors.setdefault(model, deque(maxlen=self.window)).append(err)
                if pred.correct is None:  # not counted above: one labelled result per model and packet
                    self.metrics.truth_labelled.labels(model).inc()
                scored.add(model)
        return scored

    def _publish(self, models: set[str]) -> None:
        for model in models:
            hits = self._hits.get(model)
            if hits:
                self.metrics.running_accuracy.labels(model).set(sum(hits) / len(hits))
            errors = self._sq_errors.get(model)
            if errors:
                self.metrics.running_rmse.labels(model).set(math.sqrt(sum(errors) / len(errors)))
