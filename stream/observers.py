"""What one batch produced, and the protocol of those who watch acknowledged batches.

Observers run only after the sink confirmed the batch and its offsets were committed: a number they publish
(results, accuracy, latency) then counts what consumers can actually read, never a batch that may be redone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from schemas.packet import DeadLetter
from schemas.results import ClassificationResult
from stream.sources import Item


@dataclass
class BatchOutcome:
    results: list[ClassificationResult]
    dead_letters: list[DeadLetter]
    # One flag per input item, in consumption order: True when that item ended as a dead letter. The error
    # budget counts failures in a row, which only the consumption order can tell.
    failed_in_order: list[bool] = field(default_factory=list)


class BatchObserver(Protocol):
    def on_acknowledged(self, batch: list[Item], outcome: BatchOutcome) -> None:
        """``batch`` is what was consumed (after dropping messages of revoked partitions), ``outcome`` what it
        became; both are durable when this is called."""
        ...
