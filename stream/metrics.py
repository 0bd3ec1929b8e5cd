"""Prometheus metrics, updated at the engine's seams (models never touch them): `stream.accounting` counts
messages, results and latency, `stream.truth` the running accuracy, `stream.routing` inference time,
`stream.lag` consumer lag and `stream.error_budget` the failure streak; the engine itself only beats the health
clock when its poll loop turns.

Each worker owns a `Metrics` with its own registry, so tests and benchmarks can run several engines in one
process without clashing. Names are part of the contract with deploy/prometheus and deploy/grafana.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector,
                               make_wsgi_app)

# Alert-time latency spans sub-second (live) to days (archival replay); ingest latency is sub-second to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
                   6 * 3600, 86400, 7 * 86400, 365 * 86400, float("inf"))
LATENCY_REFERENCES = ("alert", "ingest")
DEAD_LETTER_STAGES = ("read", "decode", "cutout", "preprocess", "classify")
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

    def not_ready_because(self) -> str:
        why = [w for w, bad in (("models loading", not self.models_loaded), ("no partitions assigned",
               not self.assigned), ("stopping", self.stopping)) if bad]
        return ", ".join(why) or "ready"

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
        # Per model, so an alert rule can watch the share of flagged results (flagged / classified) per model.
        self.out_of_distribution = Counter("stampflow_out_of_distribution", "Predictions flagged out of "
                                           "distribution by the model's stored rule (label kept, not to be trusted).",
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
        self.lag = Gauge("stampflow_consumer_lag",
                         "High watermark minus the consumer position (next offset to process), per partition.",
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

    def prime(self, topics: Iterable[str], models: Iterable[str]) -> None:
        """Create the labelled series a worker will use, at zero, before any traffic.

        Prometheus' rate() only counts increases between samples it has stored: a series born on the first
        batch with its value already at 38 contributes nothing, so a short replay would read as zero alerts/s
        and NaN latency. Subscriptions by pattern ('^ztf_.*') name no topic, so they are left to appear lazily.
        """
        topics = [t for t in topics if not t.startswith("^")]
        models = list(models)
        for ref in LATENCY_REFERENCES:
            self.latency.labels(ref)
        for model in models:
            self.inference.labels(model)
        for topic in topics:
            self.consumed.labels(topic)
            self.decoded.labels(topic)
            self.published.labels(topic)
            self.unrouted.labels(topic)
            for stage in DEAD_LETTER_STAGES:
                self.dead_lettered.labels(topic, stage)
            for model in models:
                self.classified.labels(topic, model)

    def set_ready_gauge(self) -> None:
        self.ready.set(1 if self.health.ready() else 0)

    def serve(self, host: str, port: int) -> int:
        """Start the HTTP server (/metrics, /livez, /readyz, /healthz) in a daemon thread; returns the bound
        port (``port`` 0 picks a free one)."""
        app = health_app(self.health, make_wsgi_app(self.registry))

        class Server(_ThreadingWSGIServer):
            pass

        # An IPv6 bind address ("::") needs an AF_INET6 socket; WSGIServer defaults to AF_INET.
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                       flags=socket.AI_PASSIVE)[0]
        Server.address_family = family
        self._server = make_server(sockaddr[0], port, app, Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # A slow scraper must not hold up a health probe, and probes must not keep the process alive at exit.
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    # Probes every few seconds would flood the worker's log with access lines.
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by BaseHTTPRequestHandler
        return None


def health_app(health: Health, metrics_app):
    """WSGI app: /metrics goes to prometheus_client (gzip and OpenMetrics negotiation included), the probes
    read ``health``; anything else is a 404 so a typo in a probe path fails loudly instead of reading 200."""

    def text(start_response, ok: bool, body: str, content_type: str = "text/plain; charset=utf-8"):
        data = body.encode()
        start_response("200 OK" if ok else "503 Service Unavailable",
                       [("Content-Type", content_type), ("Content-Length", str(len(data))),
                        ("Cache-Control", "no-store")])
        return [data]

    def app(environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return [b""]
        if path == "/livez":
            ok = health.live()
            return text(start_response, ok, "ok\n" if ok else f"poll loop has not turned for "
                        f"{time.monotonic() - health.last_poll_monotonic:.0f}s\n")
        if path == "/readyz":
            ok = health.ready()
            return text(start_response, ok, "ok\n" if ok else f"not ready: {health.not_ready_because()}\n")
        if path == "/healthz":
            state = health.as_dict()
            return text(start_response, state["live"] and state["ready"], json.dumps(state) + "\n",
                        "application/json")
        if path == "/":
            return text(start_response, True, "stampflow worker: /metrics /livez /readyz /healthz\n")
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]

    return app
