"""Progress of long loops: a tqdm bar on a terminal, log lines (done, rate, ETA) everywhere else.

A batch job's log has no terminal, so a bar would either be hidden or spray carriage returns; there
`progress` logs one line every 10 % of the work or every minute, whichever comes first, so the log
shows that the run is alive and when it will end.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

from tqdm.auto import tqdm

from ._settings import settings

__all__ = ["progress", "LogProgress"]

logger = logging.getLogger("geneattn")


class LogProgress:
    """A tqdm-like counter that logs ``desc: done/total (pct), rate unit/s, ETA`` now and then.

    Parameters
    ----------
    total
        Units of work.
    desc, unit
        What is counted.
    every_fraction, every_seconds
        Log after this share of the work or this many seconds since the last line.
    """

    def __init__(
        self,
        total: int,
        *,
        desc: str,
        unit: str = "it",
        every_fraction: float = 0.1,
        every_seconds: float = 60.0,
    ) -> None:
        self.total, self.desc, self.unit = max(0, int(total)), desc, unit
        self.every_fraction, self.every_seconds = every_fraction, every_seconds
        self.n, self.t0 = 0, time.monotonic()
        self._last_t, self._last_n = self.t0, 0

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; log when a step of progress or of time has passed."""
        self.n += n
        now = time.monotonic()
        step = self.every_fraction * self.total
        if self.n >= self.total or self.n - self._last_n >= step or now - self._last_t >= self.every_seconds:
            self._log(now)

    def _log(self, now: float) -> None:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.n / elapsed
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        pct = 100.0 * self.n / self.total if self.total else 100.0
        logger.info("%s: %d/%d %s (%.0f%%), %.2f %s/s, elapsed %.0fs, ETA %.0fs", self.desc, self.n, self.total,
                    self.unit, pct, rate, self.unit, elapsed, eta)  # fmt: skip
        self._last_t, self._last_n = now, self.n

    def set_postfix(self, **kwargs: object) -> None:
        """Accepted for tqdm compatibility (not logged)."""

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def progress(
    total: int, *, desc: str, unit: str = "it", initial: int = 0, enabled: bool = True
) -> tqdm | LogProgress:
    """A progress counter for ``total`` units: a tqdm bar when `geneattn.settings.progress` is on, else log lines.

    ``enabled=False`` (e.g. on non-zero ranks of a distributed run) gives a silent counter.
    """
    if not enabled or settings.progress:
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled)
    bar = LogProgress(total, desc=desc, unit=unit)
    bar.n = bar._last_n = initial
    return bar
