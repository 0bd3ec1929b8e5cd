"""A JSON-lines log of the worker's own metrics, for runs without a Prometheus server.

One line per ``interval_s`` (plus one at start and one at stop)::

    {"ts": 1795300000.123, "host": "worker-1", "pid": 4242,
     "samples": [["stampflow_messages_consumed_total", {"topic": "ztf"}, 1200.0], ...]}

Samples are the registry's own, exactly as /metrics exposes them (counters as ``*_total``, histograms as
``_bucket``/``_sum``/``_count``), so `stampflow report --metrics-log` and a Prometheus query see the same
numbers. ``host`` and ``pid`` tell runs apart when a restarted worker appends to the same file.
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

PREFIXES = ("stampflow_", "process_")


def snapshot(registry: CollectorRegistry, prefixes: tuple[str, ...] = PREFIXES) -> list[list[Any]]:
    """[name, labels, value] for every sample whose name starts with one of ``prefixes``.

    ``*_created`` samples are left out: they are creation timestamps, not measurements, and would read as
    huge counters to anything that sums samples.
    """
    out: list[list[Any]] = []
    for family in registry.collect():
        if not family.name.startswith(prefixes):
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            value = s.value if math.isfinite(s.value) else None  # strict JSON has no NaN/Inf
            out.append([s.name, dict(s.labels), value])
    return out


def snapshot_line(registry: CollectorRegistry, now: float | None = None) -> str:
    record = {"ts": round(time.time() if now is None else now, 3), "host": socket.gethostname(),
              "pid": os.getpid(), "samples": snapshot(registry)}
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


class MetricsLogger:
    """Appends a snapshot every ``interval_s`` from a daemon thread; ``stop()`` writes the last one.

    The file is opened per write, so a rotated or deleted log is recreated instead of written into the void,
    and each line goes out in one write() so a reader never sees half a snapshot.
    """

    def __init__(self, registry: CollectorRegistry, path: Path, interval_s: float):
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.registry = registry
        self.path = Path(path)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.lines_written = 0
        self._warned = False

    def write(self) -> None:
        line = snapshot_line(self.registry) + "\n"
        with self._lock:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line)
                self.lines_written += 1
                self._warned = False
            except OSError as exc:
                # Observability must not stop the pipeline; say so once per outage, not every interval.
                if not self._warned:
                    log.warning("cannot write metrics log %s: %s", self.path, exc.strerror or exc)
                    self._warned = True

    def start(self) -> "MetricsLogger":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.write()  # the baseline: report computes every rate from differences to it
        self._thread = threading.Thread(target=self._run, name="metrics-log", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(10)
        self._thread = None
        self.write()
