"""Measured training throughput (cells/s, tokens/s) of a run's first steps, for run-time estimates."""

from __future__ import annotations

import time

__all__ = ["Throughput"]


class Throughput:
    """Times ``steps`` steps after the first one (which pays for warm-up: allocations, kernel choice).

    Call `start` before and `stop` after each step; `result` is None until the window is full (or
    the run ends early: then the steps seen so far).
    """

    def __init__(self, steps: int = 10) -> None:
        self.steps = steps
        self._seen = 0
        self._seconds, self._cells, self._tokens = 0.0, 0, 0
        self._t = 0.0
        self.result: dict[str, float] | None = None

    def start(self) -> None:
        """A step begins."""
        self._t = time.perf_counter()

    def stop(self, *, n_cells: int, n_tokens: int, last: bool = False) -> None:
        """A step of ``n_cells`` cells and ``n_tokens`` (unpadded) tokens ended; ``last``: the run's final step."""
        elapsed = time.perf_counter() - self._t
        self._seen += 1
        measured = self._seen - 1
        if self._seen == 1 or measured > self.steps:
            return
        self._seconds += elapsed
        self._cells += n_cells
        self._tokens += n_tokens
        if measured == self.steps or last:
            self.result = {
                "steps_measured": measured,
                "seconds_per_step": round(self._seconds / measured, 4),
                "cells_per_s": round(self._cells / self._seconds, 2),
                "tokens_per_s": round(self._tokens / self._seconds, 1),
            }
