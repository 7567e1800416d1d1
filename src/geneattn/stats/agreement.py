"""Agreement between gene scores: top-k overlap (hypergeometric), Spearman, planted-gene recovery.

All functions take gene scores as arrays or `pandas.Series` indexed by gene; "higher = more
important". Genes without a score (e.g. never expressed, or outside the top-K of a deletion scan)
are ranked last (`fill="min"`) so that every method is judged on the same gene universe.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError

__all__ = ["auroc", "auprc", "topk_overlap", "spearman", "de_gene_score", "agreement", "AGREEMENT_COLUMNS"]

AGREEMENT_COLUMNS = [
    "score",
    "n_genes",
    "spearman_vs_de",
    "spearman_p",
    "k",
    "topk_overlap_de",
    "topk_expected",
    "hypergeom_p",
    "auroc_planted",
    "auprc_planted",
    "n_planted",
    "marker",
    "marker_rank",
    "topk_min_cells",
]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        msg = f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}"
        raise InputError(msg)
    if np.isnan(s).any():
        msg = "scores contain NaN; fill or drop them first"
        raise InputError(msg)
    return s, y


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the Mann–Whitney rank formula (ties count one half).

    ``AUROC = (R_pos − n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the sum of the
    average ranks of the positives. NaN when one class is empty.
    """
    s, y = _check(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)  # average ranks for ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auprc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision ``Σ_n (R_n − R_{n−1}) P_n`` over distinct score thresholds (as sklearn)."""
    s, y = _check(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie group
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _top(s: pd.Series, k: int) -> set:
    # deterministic: sort by score desc then by gene name
    df = pd.DataFrame({"s": s.to_numpy(), "g": s.index.astype(str)})
    df = df.sort_values(["s", "g"], ascending=[False, True], kind="stable")
    return set(s.index[df.index[:k]])


def topk_overlap(
    a: pd.Series, b: pd.Series, k: int = 20, *, universe: Sequence | None = None
) -> dict[str, float]:
    """Overlap of the top-``k`` genes of two scores, with a hypergeometric p-value.

    p = P(X ≥ overlap) for X ~ Hypergeom(M = |universe|, n = k, N = k): drawing ``k`` genes at
    random from the universe, how often do at least that many fall among the other top-``k``.

    Returns
    -------
    dict with ``overlap``, ``expected`` (k²/M), ``pval``, ``k``, ``n_genes``.
    """
    idx = pd.Index(universe) if universe is not None else a.index.intersection(b.index)
    a, b = a.reindex(idx), b.reindex(idx)
    a, b = a.fillna(-np.inf), b.fillna(-np.inf)
    m = len(idx)
    k = int(min(k, m))
    if k == 0:
        return {"overlap": 0, "expected": float("nan"), "pval": float("nan"), "k": 0, "n_genes": m}
    x = len(_top(a, k) & _top(b, k))
    p = float(stats.hypergeom.sf(x - 1, m, k, k))
    return {"overlap": x, "expected": k * k / m, "pval": p, "k": k, "n_genes": m}


def spearman(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Spearman correlation over genes scored by both (NaN-dropped); ``(rho, p)``."""
    df = pd.concat([a, b], axis=1, join="inner").dropna()
    if len(df) < 3 or df.iloc[:, 0].nunique() < 2 or df.iloc[:, 1].nunique() < 2:
        return float("nan"), float("nan")
    r = stats.spearmanr(df.iloc[:, 0], df.iloc[:, 1])
    return float(r.statistic), float(r.pvalue)


def de_gene_score(de: pd.DataFrame, *, how: str = "max_abs", group: str | None = None) -> pd.Series:
    """One DE score per gene from a tidy DE table (`de.de_df` / `de.pseudobulk`).

    ``how="max_abs"``: max over groups of ``|score|`` (any class differs); ``"max"``: max signed score;
    with ``group`` given, that group's signed score.
    """
    d = de if group is None else de[de["group"].astype(str) == str(group)]
    if d.empty:
        msg = f"DE table has no rows for group {group!r}"
        raise InputError(msg)
    if group is not None or how == "max":
        return d.groupby("gene", sort=False)["score"].max()
    return d.assign(a=d["score"].abs()).groupby("gene", sort=False)["a"].max()


def _recovery(s: pd.Series, planted: pd.Series) -> tuple[float, float]:
    s = s.reindex(planted.index)
    lo = np.nanmin(s.to_numpy()) if s.notna().any() else 0.0
    s = s.fillna(lo - 1.0)
    y = planted.to_numpy().astype(bool)
    return auroc(s.to_numpy(), y), auprc(s.to_numpy(), y)


def _marker_rank(s: pd.Series, markers: Sequence[str]) -> tuple[str, float]:
    for m in markers:
        if m in s.index and pd.notna(s[m]):
            r = s.rank(ascending=False, method="min")
            return m, float(r[m])
    return "", float("nan")


def agreement(
    scores: Mapping[str, pd.Series] | pd.DataFrame,
    de_score: pd.Series,
    *,
    planted: pd.Series | None = None,
    k: int = 20,
    markers: Sequence[str] = ("MDM2",),
    n_cells: pd.Series | None = None,
    min_cells: int = 30,
) -> pd.DataFrame:
    """Compare each gene score with DE (Spearman, top-k overlap) and with planted genes.

    Parameters
    ----------
    scores
        Gene scores by name (Series indexed by gene, or DataFrame columns).
    de_score
        DE score per gene (e.g. `de_gene_score`).
    planted
        Boolean Series indexed by gene (``var["planted"]``) for simulated data; the gene universe
        of AUROC/AUPRC. Unscored genes rank last.
    k
        Top-k for the overlap.
    markers
        Genes whose rank is reported (first one present).
    n_cells, min_cells
        Cells each gene was seen in: the top ``k`` of a score (overlap with DE) and the marker's rank
        are taken over genes seen in at least ``min_cells`` cells, so that a mean over a few cells
        cannot enter the top list (`geneattn.stats.shrinkage.MIN_CELLS`; ``topk_min_cells`` column).

    Returns
    -------
    DataFrame with columns `AGREEMENT_COLUMNS`, one row per score.
    """
    items = scores.items() if isinstance(scores, pd.DataFrame) else scores.items()
    rows = []
    for name, s in items:
        s = pd.Series(s, dtype=float)
        s = s[~s.index.duplicated()]
        rho, p = spearman(s, de_score)
        common = s.dropna()
        if n_cells is not None:
            common = common[n_cells.reindex(common.index).fillna(0).to_numpy() >= min_cells]
        ov = topk_overlap(common, de_score.dropna(), k)
        au = ap = float("nan")
        n_pl = 0
        if planted is not None:
            au, ap = _recovery(s, planted.astype(bool))
            n_pl = int(planted.astype(bool).sum())
        mk, mr = _marker_rank(common, markers)
        rows.append(
            {
                "score": str(name),
                "n_genes": int(s.notna().sum()),
                "spearman_vs_de": rho,
                "spearman_p": p,
                "k": ov["k"],
                "topk_overlap_de": ov["overlap"],
                "topk_expected": ov["expected"],
                "hypergeom_p": ov["pval"],
                "auroc_planted": au,
                "auprc_planted": ap,
                "n_planted": n_pl,
                "marker": mk,
                "marker_rank": mr,
                "topk_min_cells": min_cells if n_cells is not None else 1,
            }
        )
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
