"""The error budget: stop the worker when too many packets in a row have failed.

One job. A run of failures with no success in between means something systemic (a schema the decoder does not
know, a model that rejects every input), and dead-lettering a whole night is worse than stopping with a clear
line. It is charged after the batch is acknowledged, so what failed is already in the dead-letter sink and its
offsets are committed when the worker stops.
"""
from __future__ import annotations

from schemas.errors import ErrorBudgetExceeded
from stream.observers import BatchOutcome


class ErrorBudget:
    def __init__(self, max_consecutive_failures: int, gauge):
        self.limit = max_consecutive_failures
        self._gauge = gauge  # stampflow_consecutive_failures
        self.consecutive_failures = 0

    def charge(self, outcome: BatchOutcome) -> None:
        """Count the batch's failures in consumption order; raises `ErrorBudgetExceeded` when the run of
        failures reached the limit anywhere inside the batch, even if a success follows it."""
        worst = 0
        for failed in outcome.failed_in_order:
            self.consecutive_failures = self.consecutive_failures + 1 if failed else 0
            worst = max(worst, self.consecutive_failures)
        self._gauge.set(self.consecutive_failures)
        if worst >= self.limit:
            self.consecutive_failures = worst
            last = outcome.dead_letters[-1].error if outcome.dead_letters else "?"
            raise ErrorBudgetExceeded(
                f"stopping: {self.consecutive_failures} consecutive packets failed (error budget {self.limit}); "
                f"last error: {last}. They are in the dead-letter sink and their offsets are committed.")
