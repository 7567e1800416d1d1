"""Statistics of the head-ablation table: well-bootstrap intervals, well-level tests and Holm adjustment.

The unit is the test well. For each ablation, the per-well mean change (ablated − full, same cells)
is tested one-sided (the ablation lowers the metric) with a t test over wells (df = wells − 1); the
p-values of the single heads are Holm-adjusted over the single heads tested, per metric. Combinations
and random-head controls keep their own (unadjusted) p-values and are worded apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["well_bootstrap", "summary", "well_tests", "holm_over_singles"]


def well_bootstrap(values: np.ndarray, wells: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Cell-weighted means ``[n_boot, n_configs]`` over well resamples (multinomial weights, seeded)."""
    codes, n_wells = pd.factorize(wells)[0], len(set(wells.tolist()))
    sums = np.stack([np.bincount(codes, weights=v, minlength=n_wells) for v in values])  # [configs, wells]
    n = np.bincount(codes, minlength=n_wells).astype(float)
    w = np.random.default_rng(seed).multinomial(n_wells, np.full(n_wells, 1 / n_wells), size=n_boot)
    return (w @ sums.T) / (w @ n)[:, None]


def summary(
    values: np.ndarray, wells: np.ndarray, name: str, n_boot: int, seed: int
) -> dict[str, np.ndarray]:
    """Mean, delta vs config 0, and their 2.5/97.5 % well-bootstrap percentiles."""
    boot = well_bootstrap(values, wells, n_boot, seed)
    delta = boot - boot[:, :1]
    lo, hi = np.nanquantile(boot, [0.025, 0.975], axis=0)
    dlo, dhi = np.nanquantile(delta, [0.025, 0.975], axis=0)
    mean = values.mean(axis=1)
    return {
        name: mean,
        f"{name}_low": lo,
        f"{name}_high": hi,
        f"d_{name}": mean - mean[0],
        f"d_{name}_low": dlo,
        f"d_{name}_high": dhi,
    }


def well_tests(values: np.ndarray, wells: np.ndarray) -> np.ndarray:
    """One-sided p (ablation lowers the metric) per config ``[n_configs]``; config 0 is the full model.

    ``values [n_configs, n_cells]``. The per-well means of ``values[a] − values[0]`` are the units of
    a one-sample t test (H1: mean < 0). No change in any well gives p = 1.
    """
    codes = pd.factorize(wells)[0]
    n = np.bincount(codes).astype(float)
    d = values - values[:1]
    per_well = np.stack([np.bincount(codes, weights=v) for v in d]) / n  # [configs, wells]
    k = per_well.shape[1]
    mean, sd = per_well.mean(axis=1), per_well.std(axis=1, ddof=1) if k > 1 else np.zeros(len(d))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(k))
    p = stats.t.cdf(t, max(k - 1, 1))
    p = np.where(sd > 0, p, np.where(mean < 0, 0.0, 1.0))
    p[0] = np.nan
    return p


def holm_over_singles(p: np.ndarray, single: np.ndarray) -> np.ndarray:
    """Holm-adjusted p over the single-head rows (NaN elsewhere)."""
    from ..stats.significance import holm  # the stats layer sits below attention: imported when used

    out = np.full(len(p), np.nan)
    if single.any():
        out[single] = holm(p[single])
    return out
