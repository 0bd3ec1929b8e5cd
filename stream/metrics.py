"""Prometheus metrics, updated by the engine at the seams (models never touch them).

Each worker owns a `Metrics` with its own registry, so tests and benchmarks can run several engines in one
process without clashing. Names are part of the contract with deploy/prometheus and deploy/grafana.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector,
                               start_http_server)

# Alert-time latency spans sub-second (live) to days (archival replay); ingest latency is sub-second to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
                   6 * 3600, 86400, 7 * 86400, 365 * 86400, float("inf"))
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, float("inf"))
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


@dataclass
class Health:
    """What the health endpoint reports; the worker and the engine update it, the HTTP server only reads it.

    Ready: the models are loaded and the source has an assignment (a file source always has one).
    Live: the poll loop turned within ``live_timeout_s`` (a model call on a huge batch can take a while,
    so the default is generous).
    """

    models_loaded: bool = False
    assigned: bool = False
    last_poll_monotonic: float = field(default_factory=time.monotonic)
    live_timeout_s: float = 60.0
    stopping: bool = False

    def beat(self) -> None:
        self.last_poll_monotonic = time.monotonic()

    def live(self) -> bool:
        return time.monotonic() - self.last_poll_monotonic < self.live_timeout_s

    def ready(self) -> bool:
        return self.models_loaded and self.assigned and not self.stopping

    def as_dict(self) -> dict:
        return {"live": self.live(), "ready": self.ready(), "models_loaded": self.models_loaded,
                "assigned": self.assigned, "stopping": self.stopping,
                "seconds_since_poll": round(time.monotonic() - self.last_poll_monotonic, 3)}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.consumed = Counter("stampflow_messages_consumed", "Messages taken from a source.", ["topic"], registry=r)
        self.decoded = Counter("stampflow_packets_decoded", "Messages decoded into packets.", ["topic"], registry=r)
        self.classified = Counter("stampflow_packets_classified", "Packets classified, per model.",
                                  ["topic", "model"], registry=r)
        self.published = Counter("stampflow_results_published", "Results acknowledged by the sink.", ["topic"],
                                 registry=r)
        self.dead_lettered = Counter("stampflow_dead_letters", "Messages sent to the dead-letter sink.",
                                     ["topic", "stage"], registry=r)
        self.unrouted = Counter("stampflow_packets_unrouted", "Decoded packets no model accepted (a result with "
                                                              "the 'unrouted' flag is still published).", ["topic"],
                                registry=r)
        self.latency = Histogram("stampflow_end_to_end_latency_seconds",
                                 "Seconds from the reference time to the result being acknowledged. reference=alert: "
                                 "the exposure time; reference=ingest: when the worker received the message.",
                                 ["reference"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("stampflow_batch_size", "Messages per micro-batch.", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.inference = Histogram("stampflow_inference_seconds", "Seconds per model call on one batch.", ["model"],
                                   buckets=INFERENCE_BUCKETS, registry=r)
        self.lag = Gauge("stampflow_consumer_lag", "High watermark minus the consumer position (next offset to process), per partition.",
                         ["topic", "partition"], registry=r)
        self.model_info = Gauge("stampflow_model_info", "Loaded models (value 1).", ["model", "version", "family"],
                                registry=r)
        self.build_info = Gauge("stampflow_build_info", "Code version and config hash of this worker (value 1).",
                                ["code_version", "config_hash"], registry=r)
        self.commits = Counter("stampflow_offset_commits", "Offset commits after acknowledged batches.", registry=r)
        self.consecutive_failures = Gauge("stampflow_consecutive_failures", "Packets failed in a row (error budget).",
                                          registry=r)
        self.last_poll = Gauge("stampflow_last_poll_timestamp_seconds", "When the poll loop last turned.", registry=r)
        # Truth labels (archival cutout packets carry them): running quality per model.
        self.truth_labelled = Counter("stampflow_truth_labelled", "Results whose packet carried a truth label the "
                                                                  "model can be scored on.", ["model"], registry=r)
        self.truth_correct = Counter("stampflow_truth_correct", "Truth-labelled results whose predicted label "
                                                                "equals the truth label.", ["model"], registry=r)
        self.running_accuracy = Gauge("stampflow_running_accuracy", "Accuracy over the last N truth-labelled "
                                                                    "results (classifiers).", ["model"], registry=r)
        self.running_rmse = Gauge("stampflow_running_rmse", "RMSE over the last N truth-labelled results "
                                                            "(regression models).", ["model"], registry=r)
        self.ready = Gauge("stampflow_ready", "1 when models are loaded and the source has an assignment.",
                           registry=r)
        self.health = Health()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP server in a daemon thread; returns the bound port."""
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
