"""Gene scores that are not small-sample means: empirical-Bayes shrinkage and one ranking estimator.

A gene seen in a handful of cells gets a noisy mean, and the extremes of a ranking are then rare
genes. `eb_shrink` pulls every per-gene mean towards the precision-weighted grand mean by the
normal–normal posterior mean ``μ + B_g (m_g − μ)``, ``B_g = τ² / (τ² + se²_g)``, with ``τ²`` (the
between-gene variance of the true means) by the method of moments, ``max(0, var(m) − mean(se²))``.
A gene's ``se²_g = s²_g / n_g`` uses its within-gene variance moderated towards the pooled one
(``d0`` prior degrees of freedom), so one or two cells cannot claim a tiny variance.

`store_gene_scores` is **the** gene-score estimator of the stats stage: the head-mean log fold of
each gene over the cells of one token store (by default the held-out cells), its shrunken value and
its rank on the shrunken value among the genes seen in at least `MIN_CELLS` cells.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

__all__ = ["MIN_CELLS", "eb_shrink", "moderated_se2", "store_gene_scores", "SHRUNKEN_COLUMNS"]

#: minimum number of cells for an unshrunken per-gene mean to be shown in a top-genes table
MIN_CELLS = 30
#: prior degrees of freedom of the moderated within-gene variance
D0 = 4.0
SHRUNKEN_COLUMNS = [
    "token_id",
    "gene",
    "n_cells",
    "mean",
    "se",
    "shrunken",
    "rank",
    "passes_min_cells",
    "cells",
]


def moderated_se2(var: np.ndarray, n: np.ndarray, *, d0: float = D0) -> np.ndarray:
    """``s̃²_g / n_g`` with ``s̃²_g = ((n_g − 1) s²_g + d0 s²_pooled) / (n_g − 1 + d0)`` (``var`` NaN for n = 1)."""
    var, n = np.asarray(var, dtype=float), np.asarray(n, dtype=float)
    df = np.maximum(n - 1.0, 0.0)
    v = np.nan_to_num(var, nan=0.0)
    pooled = float((df * v).sum() / df.sum()) if df.sum() > 0 else 0.0
    return ((df * v + d0 * pooled) / (df + d0)) / np.maximum(n, 1.0)


def eb_shrink(mean: np.ndarray, se2: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(shrunken, mu, tau2)``: normal–normal posterior means of per-gene means ``mean`` with variances ``se2``."""
    m, se2 = np.asarray(mean, dtype=float), np.asarray(se2, dtype=float)
    if len(m) < 3:
        return m.copy(), float(np.mean(m)) if len(m) else float("nan"), float("nan")
    tau2 = max(float(m.var(ddof=1) - se2.mean()), 0.0)
    w = 1.0 / np.maximum(tau2 + se2, 1e-300)
    mu = float((w * m).sum() / w.sum())
    b = tau2 / (tau2 + se2)
    return mu + b * (m - mu), mu, tau2


def store_gene_scores(
    store: object,
    gene_map: Mapping[int, str] | pd.Series | None = None,
    *,
    cells: str = "held-out",
    min_cells: int = MIN_CELLS,
) -> pd.DataFrame:
    """Per gene of a token store: mean head-mean log fold over its cells, shrunken value and rank.

    Returns `SHRUNKEN_COLUMNS`: ``rank`` (1 = the largest shrunken value) among the genes seen in at
    least ``min_cells`` cells (NA for the others, listed after them); ``cells`` names the cells the
    store holds. Both guards: the ranking is on the shrunken value, and rare genes are not ranked (in
    attention, rare genes sit systematically higher, so shrinking towards one global mean alone
    leaves them on top).
    """
    tok = np.asarray(store.token_ids)
    x = np.asarray(store.logfold, dtype=np.float64).reshape(len(tok), -1).mean(1)
    n = np.bincount(tok)
    keep = np.flatnonzero(n > 0)
    genes = pd.Series(keep, index=keep).astype(str)
    if gene_map is not None:  # genes only: tokens without a gene (<cls>, <eos>) are left out
        gm = pd.Series(gene_map)
        genes = genes.index.to_series().map(gm[~gm.index.duplicated()]).dropna().astype(str)
        genes = genes[~(genes.str.startswith("<") & genes.str.endswith(">"))]  # <cls>, <eos>: no genes
        keep = genes.index.to_numpy()
    s1, s2 = np.bincount(tok, weights=x, minlength=len(n)), np.bincount(tok, weights=x * x, minlength=len(n))
    nk, mean = n[keep].astype(float), s1[keep] / n[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(nk > 1, (s2[keep] - nk * mean**2) / (nk - 1), np.nan)
    se2 = moderated_se2(np.clip(var, 0, None), nk)
    shrunk, _, _ = eb_shrink(mean, se2)
    out = pd.DataFrame({"token_id": keep, "gene": genes.to_numpy(), "n_cells": nk.astype(np.int64), "mean": mean,
                        "se": np.sqrt(se2), "shrunken": shrunk})  # fmt: skip
    out["passes_min_cells"] = out["n_cells"] >= min_cells
    out = out.sort_values(
        ["passes_min_cells", "shrunken", "token_id"], ascending=[False, False, True], kind="stable"
    )
    out = out.reset_index(drop=True)
    out["rank"] = pd.array(np.arange(1, len(out) + 1), dtype="Int64")
    out.loc[~out["passes_min_cells"], "rank"] = pd.NA
    out["cells"] = cells
    return out[SHRUNKEN_COLUMNS]
