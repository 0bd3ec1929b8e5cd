"""The worker loop: consume → decode → batch → route → classify → publish → commit.

Single-threaded on purpose: a batch is fully acknowledged and committed before the next consume, so a rebalance
or a kill can only ever repeat the batch in flight (at-least-once with duplicates bounded by one batch), never
skip one. Model calls are the only heavy work and they release the GIL inside numpy/TensorFlow.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from models.base import BatchPrediction, Classifier
from models.preprocess import prepare_batch
from stream.decode import Decoder
from schemas.errors import ErrorBudgetExceeded, PacketError, TransientError
from stream.metrics import Metrics
from schemas.packet import DeadLetter, Packet
from stream.sinks import KafkaSink, Sink
from stream.sources import Item, KafkaSource, Source

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    consumed: int = 0
    decoded: int = 0
    results: int = 0
    dead_letters: int = 0
    unrouted: int = 0
    batches: int = 0
    duplicates_dropped: int = 0
    started: float = field(default_factory=time.time)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        elapsed = max(time.time() - self.started, 1e-9)
        return {"consumed": self.consumed, "decoded": self.decoded, "results": self.results,
                "dead_letters": self.dead_letters, "unrouted": self.unrouted, "batches": self.batches,
                "seconds": round(elapsed, 3), "alerts_per_s": round(self.consumed / elapsed, 1),
                "labels": self.label_counts}


@dataclass
class BatchOutcome:
    results: list[dict[str, Any]]
    dead_letters: list[DeadLetter]
    packets: list[Packet]
    failed_in_order: list[bool] = field(default_factory=list)  # per input item, in consumption order


def _stamp_flags(p: Packet, spec) -> None:
    """Surface stamp quality on the result: edge-of-CCD padding, and NaN pixels in the data itself."""
    stamps = ([p.band_stamps[b] for b in spec.channels] if spec.channels is not None
              else [p.stamps[k] for k in spec.stamp_kinds])
    for stamp in stamps:
        img = stamp.image()
        h, w = img.original_shape
        size = img.data.shape[0] * img.data.shape[1]
        if img.padded and "padded_stamp" not in p.flags:
            p.flags.append("padded_stamp")
        own_nans = img.nan_fraction * size - (size - h * w if img.padded else 0)
        if own_nans > 0.5 and "nan_pixels" not in p.flags:
            p.flags.append("nan_pixels")


def _topic_label(item: Item) -> str:
    return item.origin.topic or "file"


class Engine:
    def __init__(self, source: Source, sink: Sink, classifiers: Sequence[Classifier], decoder: Decoder,
                 metrics: Metrics, *, max_batch: int, max_wait_ms: int, max_consecutive_failures: int,
                 code_version: str, config_hash: str, lag_interval_s: float = 5.0,
                 on_batch: Callable[[BatchOutcome], None] | None = None, accuracy_window: int = 500):
        self.source = source
        self.sink = sink
        self.classifiers = list(classifiers)
        self.decoder = decoder
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_consecutive_failures = max_consecutive_failures
        self.code_version = code_version
        self.config_hash = config_hash
        self.lag_interval_s = lag_interval_s
        self.on_batch = on_batch
        self.stop_event = threading.Event()
        self.stats = RunStats()
        self.consecutive_failures = 0
        self._last_lag = 0.0
        self._lag_series: set[tuple[str, str]] = set()
        self.accuracy_window = accuracy_window
        # per model: the last N truth scores (1/0 for labels, squared errors for regression values)
        self._hits: dict[str, deque] = {}
        self._sq_errors: dict[str, deque] = {}
        metrics.build_info.labels(code_version, config_hash).set(1)
        for c in self.classifiers:
            metrics.model_info.labels(c.name, c.version, c.info.family).set(1)

    # -- batching ------------------------------------------------------------------------------------------------
    def next_batch(self) -> list[Item]:
        """Close the batch on size, or max_wait after its first message; return early on stop."""
        batch: list[Item] = []
        deadline: float | None = None
        while len(batch) < self.max_batch and not self.stop_event.is_set():
            if deadline is None:
                # Idle: ask for one message so the wait ends the moment anything arrives (a consume for N
                # messages would sit out its whole timeout), and wake up regularly to notice a stop request.
                want, timeout = 1, 0.25
            else:
                # Once the deadline has passed, one last non-blocking poll takes what is already fetched, so a
                # max_wait of 0 still batches a backlog instead of handling it one message at a time.
                want, timeout = self.max_batch - len(batch), max(0.0, deadline - time.monotonic())
            got = self.source.poll(want, timeout)
            self.metrics.last_poll.set_to_current_time()
            health = self.metrics.health
            health.beat()
            assigned = self.source.assigned()
            if assigned != health.assigned:
                health.assigned = assigned
                self.metrics.ready.set(1 if health.ready() else 0)
            if got:
                batch.extend(got)
            if self.source.exhausted:
                break
            if deadline is None:
                if got:
                    deadline = time.monotonic() + self.max_wait_s
                else:
                    self._maybe_update_lag()
            elif timeout == 0.0:
                break
        return batch

    # -- processing ------------------------------------------------------------------------------------------------
    def process(self, items: list[Item]) -> BatchOutcome:
        dead: list[DeadLetter] = []
        packets: list[Packet] = []
        item_of: dict[int, int] = {}  # id(packet) -> index of its input item, for the error budget's order
        for topic, n in Counter(_topic_label(it) for it in items).items():
            self.metrics.consumed.labels(topic).inc(n)
        for index, item in enumerate(items):
            if isinstance(item, DeadLetter):
                dead.append(item)
                continue
            try:
                packet = self.decoder.decode(item)
            except TransientError:
                raise  # not the packet's fault: leave the batch uncommitted and stop
            except PacketError as exc:
                dead.append(DeadLetter.from_exception(item.value, item.origin, exc))
                continue
            except Exception as exc:  # a decoder bug must not take the worker down on one packet
                log.exception("unexpected decode failure at %s", item.origin.describe())
                dead.append(DeadLetter.from_exception(item.value, item.origin, exc, stage="decode"))
                continue
            packets.append(packet)
            item_of[id(packet)] = index

        for topic, n in Counter(p.origin.topic or "file" for p in packets).items():
            self.metrics.decoded.labels(topic).inc(n)
        predictions: dict[int, list[tuple[Classifier, BatchPrediction, int]]] = {id(p): [] for p in packets}
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
                keep = [i for i, err in enumerate(errors) if err is None]
                arrays = arrays[keep]
            if not good:
                continue
            for p in good:
                _stamp_flags(p, clf.input_spec)
            for p, pred, row in self._predict(clf, good, arrays, failed):
                predictions[id(p)].append((clf, pred, row))

        results: list[dict[str, Any]] = []
        now = time.time()
        for p in packets:
            if id(p) in failed:
                dead.append(failed[id(p)])
                continue
            results.append(self._result(p, predictions[id(p)], now))
        order = [True] * len(items)
        for p in packets:
            if id(p) not in failed:
                order[item_of[id(p)]] = False
        return BatchOutcome(results=results, dead_letters=dead, packets=[p for p in packets if id(p) not in failed],
                            failed_in_order=order)

    def _predict(self, clf: Classifier, packets: list[Packet], arrays: np.ndarray, failed: dict[int, DeadLetter]):
        t0 = time.perf_counter()
        try:
            pred = clf.predict_batch(arrays)
            if len(pred.labels) != len(packets):
                raise ValueError(f"model {clf.name} returned {len(pred.labels)} predictions for {len(packets)} inputs")
            self.metrics.inference.labels(clf.name).observe(time.perf_counter() - t0)
            return [(p, pred, i) for i, p in enumerate(packets)]
        except Exception as exc:
            if len(packets) == 1:
                failed[id(packets[0])] = DeadLetter.from_exception(packets[0].raw, packets[0].origin, exc,
                                                                  stage="classify", candid=packets[0].candid)
                return []
            # Isolate the culprit(s) by halving, so one poisonous stamp costs log2(N) extra calls, not the batch.
            log.warning("model %s failed on a batch of %d (%s); isolating", clf.name, len(packets), exc)
            mid = len(packets) // 2
            return (self._predict(clf, packets[:mid], arrays[:mid], failed)
                    + self._predict(clf, packets[mid:], arrays[mid:], failed))

    def _result(self, p: Packet, preds: list[tuple[Classifier, BatchPrediction, int]], now: float) -> dict[str, Any]:
        flags = list(p.flags)
        truth_label = p.truth.get("label") if p.truth else None
        out = []
        for clf, pred, row in preds:
            probs = pred.probabilities[row]
            regression = pred.task == "regression"
            label = pred.labels[row]
            correct = None
            if truth_label is not None and not regression and truth_label in pred.classes:
                correct = label == truth_label
            out.append({"model": clf.name, "model_version": clf.version, "label": label,
                        "probabilities": {} if regression else {c: float(v) for c, v in zip(pred.classes, probs)},
                        "uncertainty": float(pred.uncertainty[row]), "task": pred.task,
                        "values": {c: float(v) for c, v in zip(pred.classes, probs)} if regression else {},
                        "correct": correct})
        if not preds:
            flags.append("unrouted")
        truth = None
        if p.truth:
            truth = {"label": truth_label, "values": {k: float(v) for k, v in (p.truth.get("values") or {}).items()}}
        return {"schema_version": "2", "candid": int(p.candid), "objectId": p.object_id, "survey": p.survey,
                "source": p.origin.as_dict(), "alert_time": p.alert_time, "ingest_time": p.ingest_time,
                "classified_time": now, "flags": flags, "predictions": out, "packet_id": p.packet_id,
                "dataset": p.extra.get("dataset") if p.packet_id else None, "truth": truth,
                "code_version": self.code_version, "config_hash": self.config_hash}

    def _score_truth(self, result: dict[str, Any]) -> set[str]:
        """Feed the running accuracy / RMSE windows from a truth-labelled result; returns the models scored."""
        truth = result["truth"]
        scored: set[str] = set()
        for pred in result["predictions"]:
            model = pred["model"]
            if pred["correct"] is not None:
                self._hits.setdefault(model, deque(maxlen=self.accuracy_window)).append(1 if pred["correct"] else 0)
                self.metrics.truth_labelled.labels(model).inc()
                if pred["correct"]:
                    self.metrics.truth_correct.labels(model).inc()
                scored.add(model)
            outputs = pred["values"] or (pred["probabilities"] if pred["task"] == "fractions" else {})
            common = [k for k in outputs if k in truth["values"]]
            if common:
                err = sum((outputs[k] - truth["values"][k]) ** 2 for k in common) / len(common)
                self._sq_errors.setdefault(model, deque(maxlen=self.accuracy_window)).append(err)
                if pred["correct"] is None:
                    self.metrics.truth_labelled.labels(model).inc()
                scored.add(model)
        return scored

    def _publish_truth_gauges(self, models: set[str]) -> None:
        for model in models:
            hits = self._hits.get(model)
            if hits:
                self.metrics.running_accuracy.labels(model).set(sum(hits) / len(hits))
            errors = self._sq_errors.get(model)
            if errors:
                self.metrics.running_rmse.labels(model).set(math.sqrt(sum(errors) / len(errors)))

    # -- delivery --------------------------------------------------------------------------------------------------
    def handle(self, items: list[Item]) -> BatchOutcome:
        """Process one batch and make it durable: publish, wait for acks, then commit offsets."""
        owned = [it for it in items if self.source.owned(it)]
        self.stats.duplicates_dropped += len(items) - len(owned)
        items = owned
        outcome = self.process(items)
        self.sink.write_results(outcome.results)
        self.sink.write_dead_letters(outcome.dead_letters)
        if isinstance(self.sink, KafkaSink) and self.sink.transactional and isinstance(self.source, KafkaSource):
            self.sink.flush()
            self.sink.commit_transaction(KafkaSource.next_offsets(items), self.source.group_metadata())
        else:
            self.sink.flush()  # raises PublishError: nothing is committed then
            self.source.commit(items)
        self.metrics.commits.inc()
        self._account(items, outcome)
        if self.on_batch is not None:
            self.on_batch(outcome)
        return outcome

    def _account(self, items: list[Item], outcome: BatchOutcome) -> None:
        now = time.time()
        m = self.metrics
        m.batch_size.observe(len(items))
        # Aggregate per label first: one counter update per batch and label, not per packet.
        published: Counter[str] = Counter()
        unrouted: Counter[str] = Counter()
        classified: Counter[tuple[str, str]] = Counter()
        ingest_latency = m.latency.labels("ingest")
        alert_latency = m.latency.labels("alert")
        scored: set[str] = set()
        for p, r in zip(outcome.packets, outcome.results):
            if r["truth"] is not None and r["predictions"]:
                scored |= self._score_truth(r)
            topic = p.origin.topic or "file"
            published[topic] += 1
            if not r["predictions"]:
                unrouted[topic] += 1
            for pred in r["predictions"]:
                classified[(topic, pred["model"])] += 1
                counts = self.stats.label_counts.setdefault(pred["model"], {})
                counts[pred["label"]] = counts.get(pred["label"], 0) + 1
            ingest_latency.observe(max(0.0, now - p.ingest_time))
            if p.alert_time is not None:
                alert_latency.observe(max(0.0, now - p.alert_time))
        self._publish_truth_gauges(scored)
        for topic, n in published.items():
            m.published.labels(topic).inc(n)
        for topic, n in unrouted.items():
            m.unrouted.labels(topic).inc(n)
            self.stats.unrouted += n
        for (topic, model), n in classified.items():
            m.classified.labels(topic, model).inc(n)
        for dl in outcome.dead_letters:
            m.dead_lettered.labels(dl.origin.topic or "file", dl.stage).inc()
            log.warning("dead-lettered %s at stage %s: %s", dl.origin.describe(), dl.stage, dl.error)
        self.stats.consumed += len(items)
        self.stats.decoded += len(outcome.packets) + sum(1 for d in outcome.dead_letters
                                                         if d.stage not in ("read", "decode"))
        self.stats.results += len(outcome.results)
        self.stats.dead_letters += len(outcome.dead_letters)
        self.stats.batches += 1
        # Error budget: a run of failures with no success in between means something systemic.
        worst = 0
        for failed in outcome.failed_in_order:
            self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
            worst = max(worst, self.consecutive_failures)
        m.consecutive_failures.set(self.consecutive_failures)
        if worst >= self.max_consecutive_failures:
            self.consecutive_failures = worst
            raise ErrorBudgetExceeded(
                f"stopping: {self.consecutive_failures} consecutive packets failed (error budget "
                f"{self.max_consecutive_failures}); last error: {outcome.dead_letters[-1].error if outcome.dead_letters else '?'}. "
                f"They are in the dead-letter sink and their offsets are committed.")

    def _maybe_update_lag(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_lag < self.lag_interval_s:
            return
        self._last_lag = now
        try:
            current = {(topic, str(partition)): lag for (topic, partition), lag in self.source.lag().items()}
            for key, lag in current.items():
                self.metrics.lag.labels(*key).set(lag)
            # A partition revoked in a rebalance is another worker's now: drop its series, or its last value
            # would linger and double-count lag (and could fire the stalled-worker alert).
            for key in self._lag_series - current.keys():
                self.metrics.lag.remove(*key)
            self._lag_series = set(current)
        except Exception as exc:  # lag is observability only; never stop the pipeline for it
            log.warning("could not refresh consumer lag: %s", exc)

    # -- loop ------------------------------------------------------------------------------------------------------
    def run(self) -> RunStats:
        try:
            while not self.stop_event.is_set():
                items = self.next_batch()
                if items:
                    self.handle(items)
                    self._maybe_update_lag()
                if self.source.exhausted:
                    break
            return self.stats
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            self.sink.close()
        finally:
            self.source.close()

    def stop(self) -> None:
        self.stop_event.set()
