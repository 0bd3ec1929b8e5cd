"""Consumer lag per partition, refreshed on an interval.

One job: keep the stampflow_consumer_lag gauge in step with the source's assignment. Lag is observability
only: a failure to read it is logged and never stops the pipeline.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


class LagTracker:
    def __init__(self, gauge, interval_s: float):
        self._gauge = gauge  # stampflow_consumer_lag, labelled (topic, partition)
        self.interval_s = interval_s
        self._last = 0.0
        self._series: set[tuple[str, str]] = set()

    def refresh(self, source, force: bool = False) -> None:
        """Ask ``source`` (a `stream.sources.Source`) for its lag, at most once per interval unless forced."""
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        try:
            current = {(topic, str(partition)): lag for (topic, partition), lag in source.lag().items()}
            for key, lag in current.items():
                self._gauge.labels(*key).set(lag)
            # A partition revoked in a rebalance is another worker's now: drop its series, or its last value
            # would linger and double-count lag (and could fire the stalled-worker alert).
            for key in self._series - current.keys():
                self._gauge.remove(*key)
            self._series = set(current)
        except Exception as exc:  # observability only: say so, and keep the pipeline running
            log.warning("could not refresh consumer lag: %s", exc)
