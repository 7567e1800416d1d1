"""Significance of attention differences (methods §7.3–7.4).

Pretrained vs fine-tuned (paired, same cells), between classes, multiple testing, and bootstrap
bands for the percentage-change-by-rank curves.

**What the paired tests can say.** `paired_gene_test` and `paired_head_test` compare two *fixed*
networks on the same cells, with cells as units. They are descriptive: they test "over these cells,
the two weight sets give different attention", which any weight update makes true, including a
fine-tune on permuted labels. They say nothing about what fine-tuning on the task changed; for that
the unit must be the training run (`geneattn.stats.nulls`). Their ``effect`` and ``pct_change``
are computed from the statistic they test (the Hodges–Lehmann pseudo-median of the log ratio for the
signed-rank test, the mean for the sign-flip test), so the two never disagree in sign.

The between-class test lives in `geneattn.stats.between_class`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..attention.store import TokenStore
from ..errors import InputError
from .confounds import iter_columns

__all__ = [
    "holm",
    "bh",
    "hodges_lehmann",
    "sign_flip_test",
    "paired_gene_test",
    "paired_head_test",
    "bootstrap_change_by_rank",
    "SIGNIFICANCE_COLUMNS",
]

SIGNIFICANCE_COLUMNS = [
    "test",
    "model_ref",
    "model_other",
    "layer",
    "head",
    "token_id",
    "gene",
    "metric",
    "method",
    "n",
    "effect",
    "pct_change",
    "statistic",
    "pval",
    "pval_adj",
    "adjust",
]

#: Largest sample for which `hodges_lehmann` forms all Walsh averages (above: exact selection, `_walsh_select`).
_WALSH_MAX = 300


def holm(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (NaNs are kept and not counted).

    ``p_adj(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))`` over the sorted p-values.
    """
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="mergesort")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


def bh(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (`scipy.stats.false_discovery_control`), NaN-aware."""
    p = np.asarray(p, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(np.clip(p[ok], 0, 1), method="bh")
    return out


def _walsh_select(x: np.ndarray, ks: Sequence[int]) -> list[float]:
    """The ``ks``-th smallest (0-based) Walsh averages ``(x_i + x_j) / 2, i <= j`` of sorted ``x``.

    Exact, without forming all ``n (n + 1) / 2`` averages: a sample of averages brackets the wanted
    order statistics, the averages below the bracket are counted (``searchsorted`` per i), and only
    those inside it are formed and sorted. The bracket widens until it holds them.
    """
    n = len(x)
    idx = np.arange(n)
    n_sample = int(np.clip((n * (n + 1) / 2) ** (2 / 3), 500, 20_000))  # ~ balances sample and bracket sizes
    rng = np.random.default_rng(n)
    sample = np.sort((x[rng.integers(0, n, n_sample)] + x[rng.integers(0, n, n_sample)]) / 2)
    q = np.array([k / (n * (n + 1) / 2) for k in (min(ks), max(ks))])
    for width in (3.0, 6.0, 12.0, np.inf):
        half = width * np.sqrt(0.25 / n_sample)
        lo, hi = (
            np.quantile(sample, np.clip(q + [-half, half], 0, 1)) if np.isfinite(width) else (x[0], x[-1])
        )
        start = np.maximum(np.searchsorted(x, 2 * lo - x, side="left"), idx)  # first j >= i in the bracket
        stop = np.maximum(np.searchsorted(x, 2 * hi - x, side="right"), idx)
        below = int(np.sum(start - idx))
        if below <= min(ks) and max(ks) < below + int(np.sum(stop - start)):
            break
    counts = stop - start
    i = np.repeat(idx, counts)
    j = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(start, counts)
    inside = np.sort((x[i] + x[j]) / 2)
    return [float(inside[k - below]) for k in ks]


def hodges_lehmann(d: np.ndarray) -> float:
    """Hodges–Lehmann pseudo-median: the median of the Walsh averages ``(d_i + d_j) / 2``, ``i ≤ j``.

    The location estimate that goes with the Wilcoxon signed-rank test: the number of positive Walsh
    averages is the signed-rank statistic ``T+``, so its sign is the direction the test detects.
    NaN for an empty sample.
    """
    x = np.sort(np.asarray(d, dtype=float))
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return float("nan")
    if n <= _WALSH_MAX:
        iu = np.triu_indices(n)
        return float(np.median((x[iu[0]] + x[iu[1]]) / 2))
    m = n * (n + 1) // 2
    return float(np.mean(_walsh_select(x, [(m - 1) // 2] if m % 2 else [m // 2 - 1, m // 2])))


def sign_flip_test(
    d: np.ndarray,
    *,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-sided sign-flip permutation test of a symmetric-about-zero paired difference.

    Exact (all ``2^n`` sign vectors) when ``2^n ≤ n_resamples``: ``p = #{|T*| ≥ |T|} / 2^n``;
    otherwise Monte Carlo with ``p = (1 + #{|T*| ≥ |T|}) / (1 + n_resamples)``.

    Parameters
    ----------
    d
        Paired differences (one per cell).
    statistic
        Vectorised statistic along the last axis (default mean).
    n_resamples
        Monte Carlo resamples.
    seed
        Random seed.

    Returns
    -------
    ``(statistic, pvalue)``.
    """
    d = np.asarray(d, dtype=float)
    d = d[~np.isnan(d)]
    stat = statistic or (lambda x: x.mean(axis=-1))
    n = len(d)
    if n == 0:
        return float("nan"), float("nan")
    t = float(stat(d))
    tol = 1e-12 * max(1.0, abs(t))
    if 2**n <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        null = stat(signs * d)
        return t, float(np.mean(np.abs(null) >= abs(t) - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(n_resamples, n))
    null = stat(signs * d)
    return t, float((1 + np.sum(np.abs(null) >= abs(t) - tol)) / (1 + n_resamples))


def _gene_groups(token_ids: np.ndarray, min_cells: int) -> tuple[np.ndarray, list[np.ndarray]]:
    order = np.argsort(token_ids, kind="mergesort")
    uniq, start, counts = np.unique(token_ids[order], return_index=True, return_counts=True)
    keep = counts >= min_cells
    groups = [order[s : s + c] for s, c, k in zip(start, counts, keep, strict=True) if k]
    return uniq[keep], groups


def gene_names(tok: np.ndarray, gene_map: pd.Series | dict | None) -> np.ndarray:
    if gene_map is None:
        return tok.astype(str)
    m = pd.Series(gene_map)
    m = m[~m.index.duplicated()]
    return pd.Series(tok).map(m).fillna(pd.Series(tok).astype(str)).astype(str).to_numpy()


def _wilcoxon(d: np.ndarray) -> tuple[float, float, float]:
    """``(statistic, pvalue, Hodges–Lehmann estimate)`` of the signed-rank test (zeros dropped)."""
    d = d[d != 0]
    if len(d) == 0:
        return float("nan"), 1.0, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.wilcoxon(d, zero_method="wilcox")
    return float(r.statistic), float(r.pvalue), hodges_lehmann(d)


def select_columns(store: TokenStore, heads: Sequence[tuple[str, str]] | None):
    for layer, head, lf in iter_columns(store):
        if heads is None or (layer, head) in set(heads):
            yield layer, head, lf


def paired_gene_test(
    ref: TokenStore,
    other: TokenStore,
    *,
    heads: Sequence[tuple[str, str]] | None = (("mean", "mean"),),
    method: str = "wilcoxon",
    min_cells: int = 10,
    n_resamples: int = 999,
    seed: int = 0,
    gene_map: pd.Series | dict | None = None,
    names: tuple[str, str] = ("pretrained", "finetuned"),
) -> pd.DataFrame:
    """Per gene, descriptive: do the two fixed networks give the gene different attention in these cells.

    ``d(c, g) = logfold_other(c, g) − logfold_ref(c, g)`` (identical token sequences, so rank and
    ``n_c`` cancel); Wilcoxon signed-rank (`scipy.stats.wilcoxon`) or sign-flip permutation of the
    mean across cells; BH-FDR across genes within each layer/head (one family per head column: do
    not add the counts of several columns). Cells are the units, so this is **not** a test of what
    fine-tuning on the task changed (any fine-tune rejects it); see `geneattn.stats.nulls`.

    Returns
    -------
    Significance table rows (`SIGNIFICANCE_COLUMNS`), ``test="paired_gene"``; ``effect`` is the
    estimate of the tested statistic (Hodges–Lehmann pseudo-median of d for Wilcoxon, mean of d for
    the sign-flip test) and ``pct_change = 100 (exp(effect) − 1)``.
    """
    if not ref.same_cells(other):
        msg = "paired test needs token stores of the same cells in the same order (extract both models together)"
        raise InputError(msg)
    if method not in ("wilcoxon", "signflip"):
        msg = f"method must be 'wilcoxon' or 'signflip', got {method!r}"
        raise InputError(msg)
    tok, groups = _gene_groups(ref.token_ids, min_cells)
    genes = gene_names(tok, gene_map)
    other_cols = {(la, h): lf for la, h, lf in select_columns(other, heads)}
    out = []
    for layer, head, lf_ref in select_columns(ref, heads):
        d_all = other_cols[(layer, head)] - lf_ref
        stat, pv, eff, n = (np.empty(len(groups)) for _ in range(4))
        for i, idx in enumerate(groups):
            d = d_all[idx]
            n[i] = len(d)
            if method == "wilcoxon":
                stat[i], pv[i], eff[i] = _wilcoxon(d)
            else:
                stat[i], pv[i] = sign_flip_test(d, n_resamples=n_resamples, seed=seed + i)
                eff[i] = stat[i]
        out.append(
            pd.DataFrame(
                {
                    "test": "paired_gene",
                    "model_ref": names[0],
                    "model_other": names[1],
                    "layer": layer,
                    "head": head,
                    "token_id": tok,
                    "gene": genes,
                    "metric": "logfold",
                    "method": method,
                    "n": n.astype(int),
                    "effect": eff,
                    "pct_change": 100 * np.expm1(eff),
                    "statistic": stat,
                    "pval": pv,
                    "pval_adj": bh(pv),
                    "adjust": "bh",
                }
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=SIGNIFICANCE_COLUMNS)


def paired_head_test(
    cell_head: pd.DataFrame,
    *,
    ref: str = "pretrained",
    other: str = "finetuned",
    metrics: Sequence[str] = ("head_out",),
) -> pd.DataFrame:
    """Per head, descriptive: paired Wilcoxon signed-rank across cells of a per-cell head statistic.

    ``d(c) = log(x_other(c)) − log(x_ref(c))`` (ratios, positive statistics); Holm across the heads
    of a metric (one family per metric). ``effect`` = Hodges–Lehmann pseudo-median of d, the
    estimate that goes with the signed-rank test, and ``pct_change = 100 (exp(effect) − 1)`` (the
    typical per-cell ratio), so the reported change and its test agree in sign. Cells are the units:
    this says the two fixed networks differ, not that the task changed the head (see
    `geneattn.stats.nulls`).
    """
    rows = []
    for metric in metrics:
        if metric not in cell_head:
            msg = f"cell_head table has no column {metric!r}"
            raise InputError(msg)
        wide = cell_head.pivot_table(
            index=["cell_id", "layer", "head"], columns="model", values=metric, aggfunc="mean"
        )
        if ref not in wide or other not in wide:
            msg = f"cell_head table lacks model {ref!r} or {other!r} (has {list(wide.columns)})"
            raise InputError(msg)
        wide = wide[[ref, other]].dropna()
        for (layer, head), w in wide.groupby(level=["layer", "head"], sort=True):
            x, y = w[ref].to_numpy(float), w[other].to_numpy(float)
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.log(y) - np.log(x)
            d = d[np.isfinite(d)]
            st, pv, eff = _wilcoxon(d)
            rows.append(
                {
                    "test": "paired_head",
                    "model_ref": ref,
                    "model_other": other,
                    "layer": str(layer),
                    "head": str(head),
                    "metric": metric,
                    "method": "wilcoxon",
                    "n": len(d),
                    "effect": eff,
                    "pct_change": 100 * np.expm1(eff),
                    "statistic": st,
                    "pval": pv,
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=SIGNIFICANCE_COLUMNS)
    df["pval_adj"] = df.groupby("metric")["pval"].transform(lambda p: holm(p.to_numpy()))
    df["adjust"] = "holm"
    return df


# --- between classes, wells as units ---------------------------------------------------------------


def _default_bins(max_len: int) -> np.ndarray:
    edges = [0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2048, 4096]
    e = [x for x in edges if x < max_len] + [max_len]
    return np.asarray(sorted(set(e)))


def bootstrap_change_by_rank(
    ref: TokenStore,
    other: TokenStore,
    *,
    bins: Sequence[int] | None = None,
    n_boot: int = 200,
    seed: int = 0,
    ci: float = 0.95,
    names: tuple[str, str] = ("pretrained", "finetuned"),
    mean_heads: bool = True,
) -> pd.DataFrame:
    """Percentage change of attention (fold) by rank-position bin, per head, with cell-bootstrap bands.

    Per cell and bin, the mean fold of each model; averaged over the cells with tokens in that bin
    (so long cells do not dominate); ``pct_change = 100 (mean_other / mean_ref − 1)``. Percentile
    CI from ``n_boot`` resamples of cells (multinomial weights, seeded).

    Returns
    -------
    DataFrame ``model_ref, model_other, layer, head, bin_start, bin_end, n_cells, ref_mean,
    other_mean, pct_change, ci_low, ci_high``.
    """
    if not ref.same_cells(other):
        msg = "change-by-rank needs token stores of the same cells in the same order"
        raise InputError(msg)
    pos = ref.positions
    edges = _default_bins(int(ref.lengths.max())) if bins is None else np.asarray(bins)
    b = np.searchsorted(edges, pos, side="right") - 1
    nb = len(edges) - 1
    ok = (b >= 0) & (b < nb)
    key = ref.cell_of_token[ok] * nb + b[ok]
    cnt = np.bincount(key, minlength=ref.n_cells * nb).reshape(ref.n_cells, nb)
    has = (cnt > 0).astype(float)
    w = (
        np.random.default_rng(seed)
        .multinomial(ref.n_cells, np.full(ref.n_cells, 1 / ref.n_cells), size=n_boot)
        .astype(float)
    )
    alpha = (1 - ci) / 2
    cols_o = {(la, h): lf for la, h, lf in iter_columns(other, mean_heads=mean_heads)}
    out = []
    for layer, head, lf_r in iter_columns(ref, mean_heads=mean_heads):
        means = []
        for lf in (lf_r, cols_o[(layer, head)]):
            s = np.bincount(key, weights=np.exp(lf[ok]), minlength=ref.n_cells * nb).reshape(ref.n_cells, nb)
            with np.errstate(invalid="ignore", divide="ignore"):
                cm = np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)  # per-cell mean fold [cells, bins]
            means.append(cm)
        with np.errstate(invalid="ignore", divide="ignore"):
            m_r, m_o = means[0].sum(0) / has.sum(0), means[1].sum(0) / has.sum(0)
            bw = w @ has
            boot = 100 * ((w @ means[1]) / bw / ((w @ means[0]) / bw) - 1)  # [n_boot, bins]
        lo, hi = np.nanquantile(boot, [alpha, 1 - alpha], axis=0) if n_boot else (np.full(nb, np.nan),) * 2
        out.append(
            pd.DataFrame(
                {
                    "model_ref": names[0],
                    "model_other": names[1],
                    "layer": layer,
                    "head": head,
                    "bin_start": edges[:-1],
                    "bin_end": edges[1:],
                    "n_cells": has.sum(0).astype(int),
                    "ref_mean": m_r,
                    "other_mean": m_o,
                    "pct_change": 100 * (m_o / m_r - 1),
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
        )
    return pd.concat(out, ignore_index=True)
