"""Metric accounting: what the engine did, as Prometheus numbers and as the run's summary.

One job: count. Consumption and decoding are counted as they happen (a stuck publish should still show
messages coming in); everything about results (published, classified, unrouted, latency, dead letters) is
counted as an observer of acknowledged batches, so the numbers describe what consumers can read.
Counters are aggregated per label first: one update per batch and label, not one per packet.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from models.base import Classifier
from schemas.packet import Packet
from stream.metrics import Metrics
from stream.observers import BatchOutcome
from stream.sources import Item

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


def topic_label(topic: str | None) -> str:
    """The ``topic`` label of a message: files have no topic, and Prometheus labels cannot be None."""
    return topic or "file"


class Accounting:
    def __init__(self, metrics: Metrics, stats: RunStats | None = None):
        self.metrics = metrics
        self.stats = stats or RunStats()

    def announce(self, code_version: str, config_hash: str, classifiers: Sequence[Classifier]) -> None:
        """Info gauges: which build and which models this worker runs (dashboards join on them)."""
        self.metrics.build_info.labels(code_version, config_hash).set(1)
        for c in classifiers:
            self.metrics.model_info.labels(c.name, c.version, c.info.family).set(1)

    def dropped(self, n: int) -> None:
        """Messages of partitions revoked while their batch filled: their new owner processes them."""
        self.stats.duplicates_dropped += n

    def consumed(self, items: list[Item]) -> None:
        for topic, n in Counter(topic_label(it.origin.topic) for it in items).items():
            self.metrics.consumed.labels(topic).inc(n)

    def decoded(self, packets: list[Packet]) -> None:
        for topic, n in Counter(topic_label(p.origin.topic) for p in packets).items():
            self.metrics.decoded.labels(topic).inc(n)

    def on_acknowledged(self, batch: list[Item], outcome: BatchOutcome) -> None:
        now = time.time()
        m = self.metrics
        m.commits.inc()
        m.batch_size.observe(len(batch))
        published: Counter[str] = Counter()
        unrouted: Counter[str] = Counter()
        classified: Counter[tuple[str, str]] = Counter()
        flagged: Counter[tuple[str, str]] = Counter()
        ingest_latency = m.latency.labels("ingest")
        alert_latency = m.latency.labels("alert")
        for r in outcome.results:
            topic = topic_label(r.source.topic)
            published[topic] += 1
            if not r.predictions:
                unrouted[topic] += 1
            for pred in r.predictions:
                classified[(topic, pred.model)] += 1
                if pred.out_of_distribution:
                    flagged[(topic, pred.model)] += 1
                counts = self.stats.label_counts.setdefault(pred.model, {})
                counts[pred.label] = counts.get(pred.label, 0) + 1
            ingest_latency.observe(max(0.0, now - r.ingest_time))
            if r.alert_time is not None:
                alert_latency.observe(max(0.0, now - r.alert_time))
        for topic, n in published.items():
            m.published.labels(topic).inc(n)
        for topic, n in unrouted.items():
            m.unrouted.labels(topic).inc(n)
            self.stats.unrouted += n
        for (topic, model), n in classified.items():
            m.classified.labels(topic, model).inc(n)
        for (topic, model), n in flagged.items():
            m.out_of_distribution.labels(topic, model).inc(n)
        for dl in outcome.dead_letters:
            m.dead_lettered.labels(topic_label(dl.origin.topic), dl.stage).inc()
            log.warning("dead-lettered %s at stage %s: %s", dl.origin.describe(), dl.stage, dl.error)
        s = self.stats
        s.consumed += len(batch)
        # Packets that failed after decoding (cutout, preprocess, classify) were decoded too.
        s.decoded += len(outcome.results) + sum(1 for d in outcome.dead_letters if d.stage not in ("read", "decode"))
        s.results += len(outcome.results)
        s.dead_letters += len(outcome.dead_letters)
        s.batches += 1
