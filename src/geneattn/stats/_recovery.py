"""Recovery of planted genes by a score: stratified AUROC, expression strata, recovery by effect size.

Re-exported by `geneattn.stats.incremental` (see its docstring for the definitions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import InputError
from .agreement import auroc

__all__ = ["expression_strata", "stratified_auroc", "recovery_by_effect_size"]


def expression_strata(values: pd.Series, n_strata: int = 10) -> pd.Series:
    """Equal-count strata (0 … n_strata − 1) of a gene covariate, e.g. ``log_mean``; ties share a stratum."""
    if n_strata < 1:
        msg = f"n_strata must be >= 1, got {n_strata}"
        raise InputError(msg)
    ranks = values.rank(method="min", pct=False) - 1
    return (ranks * n_strata // max(len(values), 1)).astype(np.int64).rename("stratum")


def _placements(
    score: np.ndarray, truth: np.ndarray, strata: np.ndarray
) -> tuple[list[float], list[tuple[int, int]]]:
    """Per stratum with both classes: the planted genes' summed placement counts (ties ½) and (n_pos, n_neg)."""
    sums, sizes = [], []
    for s in np.unique(strata):
        m = strata == s
        pos, neg = score[m & truth], np.sort(score[m & ~truth])
        if not len(pos) or not len(neg):
            continue
        below = np.searchsorted(neg, pos, side="left")
        ties = np.searchsorted(neg, pos, side="right") - below
        sums.append(float((below + 0.5 * ties).sum()))
        sizes.append((len(pos), len(neg)))
    return sums, sizes


def stratified_auroc(
    score: pd.Series | np.ndarray,
    truth: pd.Series | np.ndarray,
    strata: pd.Series | np.ndarray,
    *,
    weight: str = "positives",
) -> float:
    """Covariate-adjusted AUROC: planted vs unplanted genes compared within strata only.

    Parameters
    ----------
    score, truth, strata
        One value per gene (Series are aligned on ``truth``'s index); ``truth`` boolean. Genes with
        a NaN score are dropped.
    weight
        ``"positives"`` (Janes & Pepe: mean placement value of the planted genes) or ``"pairs"``
        (all within-stratum pairs count equally).

    Returns
    -------
    float
        NaN when no stratum holds both planted and unplanted genes.
    """
    s, y, g = _align(score, truth, strata)
    sums, sizes = _placements(s, y, g)
    if not sums:
        return float("nan")
    n_pos, n_neg = np.array(sizes, dtype=float).T
    if weight == "positives":
        return float(np.sum(np.array(sums) / n_neg) / n_pos.sum())
    if weight == "pairs":
        return float(np.sum(sums) / np.sum(n_pos * n_neg))
    msg = f"weight must be 'positives' or 'pairs', got {weight!r}"
    raise InputError(msg)


def _align(
    score: pd.Series | np.ndarray, truth: pd.Series | np.ndarray, strata: pd.Series | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays of (score, truth, strata) over the genes with a finite score and a stratum."""
    if isinstance(truth, pd.Series):
        idx = truth.index
        score = score.reindex(idx) if isinstance(score, pd.Series) else score
        strata = strata.reindex(idx) if isinstance(strata, pd.Series) else strata
    s = np.asarray(score, dtype=float)
    y = np.asarray(truth).astype(bool)
    if s.shape != y.shape or np.shape(strata) != y.shape:
        msg = f"score, truth and strata must have one value per gene, got {s.shape}, {y.shape}, {np.shape(strata)}"
        raise InputError(msg)
    g = np.asarray(strata)
    ok = np.isfinite(s) & pd.notna(g)
    return s[ok], y[ok], g[ok]


def recovery_by_effect_size(
    scores: Mapping[str, pd.Series],
    truth: pd.Series,
    effect_size: pd.Series,
    *,
    bins: Sequence[float] | int = 4,
    strata: pd.Series | None = None,
) -> pd.DataFrame:
    """Recovery of planted genes per effect-size bin (the report's recovery-vs-effect-size plot).

    Parameters
    ----------
    scores, truth
        As in `incremental_table`.
    effect_size
        Effect size per planted gene (e.g. ``var["effect_size"]``; unplanted genes are ignored).
    bins
        Bin edges, or a number of equal-count bins over the planted genes' effect sizes.
    strata
        Optional expression strata: adds the stratified AUROC per bin.

    Returns
    -------
    pandas.DataFrame
        ``method, bin, lo, hi, n_planted, auroc, stratified_auroc, recall``. ``auroc``: the bin's
        planted genes against all unplanted genes scored by the method; ``recall``: share of the
        bin's planted genes among the top ``N`` genes, ``N`` = planted genes the method scores.
    """
    es = effect_size.reindex(truth.index[truth.astype(bool)]).dropna()
    edges = np.quantile(es, np.linspace(0, 1, bins + 1)) if isinstance(bins, int) else np.asarray(bins, float)
    which = np.clip(np.searchsorted(edges, es.to_numpy(), side="right") - 1, 0, len(edges) - 2)
    bin_of = pd.Series(which, index=es.index)
    rows = []
    for method, score in scores.items():
        s = score[~score.index.duplicated()].astype(float).dropna().reindex(truth.index).dropna()
        y = truth.reindex(s.index).astype(bool)
        top = set(s.nlargest(int(y.sum())).index)
        for b in range(len(edges) - 1):
            pos = y & bin_of.reindex(s.index).eq(b)
            keep = pos | ~y
            g = None if strata is None else strata.reindex(s.index)[keep]
            rows.append({
                "method": method, "bin": b, "lo": edges[b], "hi": edges[b + 1], "n_planted": int(pos.sum()),
                "auroc": auroc(s[keep].to_numpy(), pos[keep].to_numpy()),
                "stratified_auroc": np.nan if g is None else stratified_auroc(s[keep], pos[keep], g),
                "recall": float(np.mean([i in top for i in pos.index[pos]])) if pos.any() else np.nan,
            })  # fmt: skip
    return pd.DataFrame(rows)
