"""Streaming reducers: grouped count / sum / sum of squares, mergeable across batches, shards and processes.

`RunningStats` keeps ``count`` ``[G]`` and ``moments`` ``[G, 2K]`` (sums, then sums of squares) in
float64 for G groups (genes, positions, ...) and K statistics (e.g. stat x layer x head). A batch is
folded in with one ``index_add`` (scatter) on the device; two summaries merge by addition, so the result
does not depend on how cells were split into batches, shards or processes (up to floating-point
rounding), and ``torch.distributed.all_reduce(SUM)`` merges processes exactly. Mean and sample variance
are formed only at the end (float64: the cancellation error of ``(S2 - S1^2/n)/(n-1)`` is about
1e-16 * mean^2/var, negligible for attention statistics). Pure functions on tensors; no model code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RunningStats"]


@dataclass
class RunningStats:
    """Grouped running moments (float64).

    Attributes
    ----------
    count
        ``[G]`` number of observations per group.
    moments
        ``[G, 2K]``: sums of the K values (``total``), then sums of their squares (``total_sq``).
    """

    count: torch.Tensor
    moments: torch.Tensor

    @classmethod
    def zeros(cls, n_groups: int, n_stats: int, device: torch.device | str = "cpu") -> RunningStats:
        """Empty summary of ``n_groups`` x ``n_stats``."""
        return cls(
            torch.zeros(n_groups, dtype=torch.float64, device=device),
            torch.zeros(n_groups, 2 * n_stats, dtype=torch.float64, device=device),
        )

    @classmethod
    def from_values(cls, index: torch.Tensor, values: torch.Tensor, n_groups: int) -> RunningStats:
        """Summary of ``values [N, K]`` grouped by ``index [N]`` (long, in ``[0, n_groups)``)."""
        out = cls.zeros(n_groups, values.shape[1], values.device)
        out.update(index, values)
        return out

    @property
    def n_stats(self) -> int:
        """K, the number of statistics per group."""
        return self.moments.shape[1] // 2

    @property
    def total(self) -> torch.Tensor:
        """``[G, K]`` sums (a view)."""
        return self.moments[:, : self.n_stats]

    @property
    def total_sq(self) -> torch.Tensor:
        """``[G, K]`` sums of squares (a view)."""
        return self.moments[:, self.n_stats :]

    def update(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Fold a batch in place: ``values [N, K]`` (any float dtype) observed in groups ``index [N]``."""
        v = values.to(torch.float64)
        self.count.index_add_(0, index, torch.ones(index.shape[0], dtype=torch.float64, device=index.device))
        self.moments.index_add_(0, index, torch.cat([v, v * v], 1))

    def merge(self, other: RunningStats) -> RunningStats:
        """Exact combination with a summary of the same groups (returns a new object)."""
        return RunningStats(self.count + other.count, self.moments + other.moments)

    def merge_groups(self, n_blocks: int) -> RunningStats:
        """Merge ``n_blocks`` consecutive blocks of groups (``[n_blocks * G]`` -> ``[G]``), e.g. classes -> all."""
        g = self.count.shape[0] // n_blocks
        return RunningStats(
            self.count.reshape(n_blocks, g).sum(0), self.moments.reshape(n_blocks, g, -1).sum(0)
        )

    def all_reduce(self) -> RunningStats:
        """Sum the summaries of all processes of an initialised ``torch.distributed`` group (in place)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.count)
            dist.all_reduce(self.moments)
        return self

    def to(self, device: torch.device | str) -> RunningStats:
        """Copy to ``device``."""
        return RunningStats(self.count.to(device), self.moments.to(device))

    @property
    def mean(self) -> torch.Tensor:
        """``[G, K]`` mean (NaN for empty groups)."""
        return self.total / self.count[:, None]

    @property
    def sd(self) -> torch.Tensor:
        """``[G, K]`` sample standard deviation (ddof=1; NaN where count < 2)."""
        n = self.count[:, None]
        var = (self.total_sq - self.total * self.total / n.clamp_min(1)) / (n - 1).clamp_min(1)
        return torch.where(n >= 2, var.clamp_min(0).sqrt(), torch.nan)
