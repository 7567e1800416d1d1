"""Streaming reducers: grouped running mean / variance, mergeable across batches, shards and processes.

`RunningStats` keeps ``count`` ``[G]`` and ``mean``/``m2`` ``[G, K]`` (float64) for G groups (genes,
positions, ...) and K statistics (e.g. stat x layer x head). Batches are folded in with Chan et al.'s
pairwise update, so the result does not depend on how cells were split into batches or processes
(up to floating-point rounding). Pure functions on tensors; no model code here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RunningStats", "batch_stats", "chan_merge"]


def chan_merge(
    n_a: torch.Tensor, mean_a: torch.Tensor, m2_a: torch.Tensor,
    n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Chan's combine of two (count ``[G]``, mean ``[G, K]``, M2 ``[G, K]``) summaries; empty groups are fine."""
    n = n_a + n_b
    safe = torch.where(n > 0, n, torch.ones_like(n))[:, None]
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b[:, None] / safe)
    m2 = m2_a + m2_b + delta.square() * (n_a[:, None] * n_b[:, None] / safe)
    return n, mean, m2


def batch_stats(
    index: torch.Tensor, values: torch.Tensor, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count, mean and M2 per group of a batch, by scatter (two passes: mean, then squared deviations).

    Parameters
    ----------
    index
        ``[N]`` long, group of each row of ``values``.
    values
        ``[N, K]``.
    n_groups
        Number of groups ``G``.

    Returns
    -------
    ``count [G]``, ``mean [G, K]``, ``m2 [G, K]`` in float64.
    """
    values = values.double()
    count = torch.zeros(n_groups, dtype=torch.float64, device=values.device)
    count.index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
    total = torch.zeros(n_groups, values.shape[1], dtype=torch.float64, device=values.device)
    total.index_add_(0, index, values)
    mean = total / count.clamp_min(1)[:, None]
    m2 = torch.zeros_like(total).index_add_(0, index, (values - mean[index]).square())
    return count, mean, m2


@dataclass
class RunningStats:
    """Grouped running count / mean / M2 (float64). ``sd`` is the sample SD (ddof=1; NaN below 2)."""

    count: torch.Tensor  # [G]
    mean: torch.Tensor  # [G, K]
    m2: torch.Tensor  # [G, K]

    @classmethod
    def zeros(cls, n_groups: int, n_stats: int, device: torch.device | str = "cpu") -> RunningStats:
        """Empty summary of ``n_groups`` x ``n_stats``."""
        z = torch.zeros(n_groups, n_stats, dtype=torch.float64, device=device)
        return cls(torch.zeros(n_groups, dtype=torch.float64, device=device), z, z.clone())

    @classmethod
    def from_values(cls, index: torch.Tensor, values: torch.Tensor, n_groups: int) -> RunningStats:
        """Summary of ``values [N, K]`` grouped by ``index [N]``."""
        return cls(*batch_stats(index, values, n_groups))

    def update(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Fold a batch in place; only the groups present in ``index`` are touched."""
        rows, inverse = torch.unique(index, return_inverse=True)
        n_b, mean_b, m2_b = batch_stats(inverse, values, rows.numel())
        n, mean, m2 = chan_merge(self.count[rows], self.mean[rows], self.m2[rows], n_b, mean_b, m2_b)
        self.count[rows], self.mean[rows], self.m2[rows] = n, mean, m2

    def merge(self, other: RunningStats) -> RunningStats:
        """Exact combination with another summary of the same groups (returns a new object)."""
        return RunningStats(*chan_merge(self.count, self.mean, self.m2, other.count, other.mean, other.m2))

    def merge_groups(self, n_blocks: int) -> RunningStats:
        """Merge ``n_blocks`` consecutive blocks of groups (``[n_blocks * G]`` -> ``[G]``), e.g. classes -> all."""
        g = self.count.shape[0] // n_blocks
        out = RunningStats(self.count[:g].clone(), self.mean[:g].clone(), self.m2[:g].clone())
        for b in range(1, n_blocks):
            sl = slice(b * g, (b + 1) * g)
            out = out.merge(RunningStats(self.count[sl], self.mean[sl], self.m2[sl]))
        return out

    def all_reduce(self) -> RunningStats:
        """Combine the summaries of all processes of an initialised ``torch.distributed`` group (in place).

        Two all-reduces: ``count`` and ``count * mean`` give the global mean; then each process adds
        ``n_k (mean_k - mean)^2`` to its M2 and the M2s are summed (the k-way Chan combine).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        n = self.count.clone()
        s = self.mean * self.count[:, None]
        dist.all_reduce(n)
        dist.all_reduce(s)
        mean = s / n.clamp_min(1)[:, None]
        m2 = self.m2 + (self.mean - mean).square() * self.count[:, None]
        dist.all_reduce(m2)
        self.count, self.mean, self.m2 = n, mean, m2
        return self

    def to(self, device: torch.device | str) -> RunningStats:
        """Copy to ``device``."""
        return RunningStats(self.count.to(device), self.mean.to(device), self.m2.to(device))

    @property
    def sd(self) -> torch.Tensor:
        """Sample standard deviation ``[G, K]`` (NaN where count < 2)."""
        var = self.m2 / (self.count[:, None] - 1).clamp_min(1)
        return torch.where(self.count[:, None] >= 2, var.clamp_min(0).sqrt(), torch.nan)
