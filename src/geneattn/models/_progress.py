"""Training progress: a tqdm bar on a terminal, log lines in batch jobs, and measured throughput."""

from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm

__all__ = ["Progress"]

logger = logging.getLogger(__name__)


class Progress:
    """Progress of a training loop.

    With bars on (``bar=True``) a tqdm bar; otherwise (a batch job, ``settings.progress`` off) one
    log line every ``log_fraction`` of the run or every ``log_seconds``, whichever comes first:
    steps done, cells/s, tokens/s, loss and ETA, so a job's log shows it is alive.

    Throughput is measured over the first ``measure_steps`` steps after the first one (which pays
    for warm-up: allocations, kernel selection) and kept in `throughput`.
    """

    def __init__(
        self,
        *,
        total: int,
        initial: int,
        desc: str,
        bar: bool,
        log: bool,
        log_fraction: float = 0.1,
        log_seconds: float = 60.0,
        measure_steps: int = 10,
    ) -> None:
        self.total, self.done, self.desc = total, initial, desc
        self._bar = tqdm(total=total, initial=initial, desc=desc, disable=not bar)
        self._log = log and not bar
        self._every = max(1, round(log_fraction * total))
        self._log_seconds = log_seconds
        self._measure = measure_steps
        self._start = self._last_log = time.perf_counter()
        self._steps_run = 0
        self._window = [0.0, 0, 0]  # seconds, cells, tokens over the measured steps
        self._step_start = self._start
        self.throughput: dict[str, float] | None = None

    def step_started(self) -> None:
        """Call before each step (so the measurement covers the step alone)."""
        self._step_start = time.perf_counter()

    def step_done(self, *, n_cells: int, n_tokens: int, loss: float, epoch: int) -> None:
        """Call after each optimizer step."""
        now = time.perf_counter()
        self.done += 1
        self._steps_run += 1
        if 1 < self._steps_run <= self._measure + 1:
            w = self._window
            w[0] += now - self._step_start
            w[1] += n_cells
            w[2] += n_tokens
            if self._steps_run == self._measure + 1 or self.done == self.total:
                self.throughput = {
                    "steps_measured": self._steps_run - 1,
                    "seconds_per_step": round(w[0] / (self._steps_run - 1), 4),
                    "cells_per_s": round(w[1] / w[0], 2),
                    "tokens_per_s": round(w[2] / w[0], 1),
                }
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch)
        due = self.done % self._every == 0 or now - self._last_log >= self._log_seconds
        if self._log and (due or self.done == self.total):
            self._last_log = now
            self._log_line(now, loss)

    def _log_line(self, now: float, loss: float) -> None:
        elapsed = now - self._start
        rate = self._steps_run / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        tp = self.throughput or {}
        logger.info(
            "%s: step %d/%d (%.0f%%), %.2f steps/s%s, loss %.4f, elapsed %s, ETA %s",
            self.desc,
            self.done,
            self.total,
            100 * self.done / max(1, self.total),
            rate,
            f", {tp['cells_per_s']:.1f} cells/s, {tp['tokens_per_s']:,.0f} tokens/s" if tp else "",
            loss,
            _clock(elapsed),
            _clock(eta),
        )

    def close(self) -> None:
        """Close the bar."""
        self._bar.close()


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"
