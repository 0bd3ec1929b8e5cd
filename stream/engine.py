"""The worker loop: consume → decode → batch → classify → publish → commit. Nothing else.

Single-threaded on purpose: a batch is fully acknowledged and committed before the next consume, so a rebalance
or a kill can only ever repeat the batch in flight (at-least-once with duplicates bounded by one batch), never
skip one. Model calls are the only heavy work and they release the GIL inside numpy/TensorFlow.

Everything around the loop is a collaborator with one job: `Router` (which model sees which packet, failure
isolation), `ResultBuilder` (the typed result), the sink's ``commit`` (delivery guarantee), the observers of
acknowledged batches (`Accounting` for metrics and run stats, `TruthScorer` for running accuracy),
`ErrorBudget` and `LagTracker`.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence

from models.base import Classifier
from schemas.errors import PacketError, TransientError
from schemas.packet import DeadLetter, Packet
from stream.accounting import Accounting, RunStats
from stream.decode import Decoder
from stream.error_budget import ErrorBudget
from stream.lag import LagTracker
from stream.metrics import Metrics
from stream.observers import BatchObserver, BatchOutcome
from stream.results import ResultBuilder
from stream.routing import Router
from stream.sinks import Sink
from stream.sources import Item, Source
from stream.truth import TruthScorer

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, source: Source, sink: Sink, classifiers: Sequence[Classifier], decoder: Decoder,
                 metrics: Metrics, *, max_batch: int, max_wait_ms: int, max_consecutive_failures: int,
                 code_version: str, config_hash: str, lag_interval_s: float = 5.0,
                 on_batch: Callable[[BatchOutcome], None] | None = None, accuracy_window: int = 500):
        self.source = source
        self.sink = sink
        self.decoder = decoder
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch  # after the observers and the error budget: a caller's progress display
        self.stop_event = threading.Event()
        self.router = Router(classifiers, metrics.inference)
        self.results = ResultBuilder(code_version, config_hash)
        self.accounts = Accounting(metrics)
        self.observers: list[BatchObserver] = [self.accounts, TruthScorer(metrics, accuracy_window)]
        self.budget = ErrorBudget(max_consecutive_failures, metrics.consecutive_failures)
        self.lag = LagTracker(metrics.lag, lag_interval_s)
        self.accounts.announce(code_version, config_hash, self.router.classifiers)

    @property
    def stats(self) -> RunStats:
        return self.accounts.stats

    # -- batch -----------------------------------------------------------------------------------------------------
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
            self._turned()
            if got:
                batch.extend(got)
            if self.source.exhausted:
                break
            if deadline is None:
                if got:
                    deadline = time.monotonic() + self.max_wait_s
                else:
                    self.lag.refresh(self.source)  # idle: a good moment for the (rate-limited) lag query
            elif timeout == 0.0:
                break
        return batch

    def _turned(self) -> None:
        """The poll loop turned: liveness, and readiness as soon as the source's assignment changes."""
        self.metrics.last_poll.set_to_current_time()
        health = self.metrics.health
        health.beat()
        assigned = self.source.assigned()
        if assigned != health.assigned:
            health.assigned = assigned
            self.metrics.ready.set(1 if health.ready() else 0)

    # -- decode, classify ------------------------------------------------------------------------------------------
    def process(self, items: list[Item]) -> BatchOutcome:
        self.accounts.consumed(items)
        dead: list[DeadLetter] = []
        packets: list[Packet] = []
        item_of: dict[int, int] = {}  # id(packet) -> index of its input item, for the error budget's order
        for index, item in enumerate(items):
            if isinstance(item, DeadLetter):  # the source could not even read it
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
        self.accounts.decoded(packets)

        answers, failed = self.router.classify(packets)
        now = time.time()
        results = []
        failed_in_order = [True] * len(items)
        for p in packets:
            if id(p) in failed:
                dead.append(failed[id(p)])
            else:
                results.append(self.results.build(p, answers[id(p)], now))
                failed_in_order[item_of[id(p)]] = False
        return BatchOutcome(results=results, dead_letters=dead, failed_in_order=failed_in_order)

    # -- publish, commit -------------------------------------------------------------------------------------------
    def handle(self, items: list[Item]) -> BatchOutcome:
        """Process one batch and make it durable: publish, wait for acks, commit offsets; then tell observers."""
        owned = [it for it in items if self.source.owned(it)]
        self.accounts.dropped(len(items) - len(owned))
        outcome = self.process(owned)
        self.sink.write_results(outcome.results)
        self.sink.write_dead_letters(outcome.dead_letters)
        self.sink.commit(self.source, owned)  # raises PublishError: nothing is committed then
        for observer in self.observers:
            observer.on_acknowledged(owned, outcome)
        self.budget.charge(outcome)  # may stop the run; the batch is committed by now
        if self.on_batch is not None:
            self.on_batch(outcome)
        return outcome

    # -- loop ------------------------------------------------------------------------------------------------------
    def run(self) -> RunStats:
        try:
            while not self.stop_event.is_set():
                items = self.next_batch()
                if items:
                    self.handle(items)
                    self.lag.refresh(self.source)
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
