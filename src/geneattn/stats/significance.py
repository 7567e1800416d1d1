"""Significance of attention differences (methods §7.3–7.4).

Pretrained vs fine-tuned (paired, same cells), between classes, multiple testing, and bootstrap
bands for the percentage-change-by-rank curves.

The unit of analysis is the cell (paired tests) or the well/replicate (between-class tests: per-cell
residuals are averaged per unit first); token-level values from one cell are never treated as
independent.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from .confounds import TokenStore, iter_columns, length_bins, position_residual

__all__ = [
    "holm",
    "bh",
    "sign_flip_test",
    "paired_gene_test",
    "paired_head_test",
    "class_test",
    "null_calibration",
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


def _gene_names(tok: np.ndarray, gene_map: pd.Series | dict | None) -> np.ndarray:
    if gene_map is None:
        return tok.astype(str)
    m = pd.Series(gene_map)
    m = m[~m.index.duplicated()]
    return pd.Series(tok).map(m).fillna(pd.Series(tok).astype(str)).astype(str).to_numpy()


def _wilcoxon(d: np.ndarray) -> tuple[float, float]:
    if len(d) == 0 or np.all(d == 0):
        return float("nan"), 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.wilcoxon(d, zero_method="wilcox")
    return float(r.statistic), float(r.pvalue)


def _select(store: TokenStore, heads: Sequence[tuple[str, str]] | None):
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
    """Per gene: does the fine-tuned model attend to it more than the pretrained one in the same cells.

    ``d(c, g) = logfold_other(c, g) − logfold_ref(c, g)`` (identical token sequences, so rank and
    ``n_c`` cancel); Wilcoxon signed-rank (`scipy.stats.wilcoxon`) or sign-flip permutation of the
    mean across cells; BH-FDR across genes within each layer/head.

    Returns
    -------
    Significance table rows (`SIGNIFICANCE_COLUMNS`), ``test="paired_gene"``, ``effect`` = median d,
    ``pct_change = 100 (exp(median d) − 1)``.
    """
    if not ref.same_cells(other):
        msg = "paired test needs token stores of the same cells in the same order (extract both models together)"
        raise InputError(msg)
    tok, groups = _gene_groups(ref.token_ids, min_cells)
    genes = _gene_names(tok, gene_map)
    other_cols = {(la, h): lf for la, h, lf in _select(other, heads)}
    out = []
    for layer, head, lf_ref in _select(ref, heads):
        d_all = other_cols[(layer, head)] - lf_ref
        stat, pv, med, n = (np.empty(len(groups)) for _ in range(4))
        for i, idx in enumerate(groups):
            d = d_all[idx]
            n[i], med[i] = len(d), np.median(d)
            if method == "wilcoxon":
                stat[i], pv[i] = _wilcoxon(d)
            else:
                stat[i], pv[i] = sign_flip_test(d, n_resamples=n_resamples, seed=seed + i)
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
                    "method": "wilcoxon" if method == "wilcoxon" else "signflip",
                    "n": n.astype(int),
                    "effect": med,
                    "pct_change": 100 * (np.exp(med) - 1),
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
    """Per head: paired Wilcoxon signed-rank across cells of a per-cell head statistic (``cell_head``).

    ``d(c) = log(x_other(c)) − log(x_ref(c))`` (ratios, positive statistics); Holm across all
    heads of a metric. ``pct_change = 100 (Σ x_other / Σ x_ref − 1)`` (ratio of means over cells).
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
            st, pv = _wilcoxon(d)
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
                    "effect": float(np.median(d)) if len(d) else np.nan,
                    "pct_change": 100 * (y.sum() / x.sum() - 1) if x.sum() else np.nan,
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


def _numeric(labels: np.ndarray) -> np.ndarray | None:
    try:
        return np.asarray(labels, dtype=float)
    except (TypeError, ValueError):
        return None


def _kw_h(ranks: np.ndarray, codes: np.ndarray, n_k: np.ndarray) -> np.ndarray:
    """Kruskal–Wallis H (no tie correction) for label codes ``[..., n]`` on fixed ranks ``[n]``."""
    n = len(ranks)
    h = np.zeros(codes.shape[:-1])
    for k, nk in enumerate(n_k):
        h += ((ranks * (codes == k)).sum(-1)) ** 2 / nk
    return 12 / (n * (n + 1)) * h - 3 * (n + 1)


def _class_p(
    vals: np.ndarray, labs: np.ndarray, *, n_perm: int, min_asymptotic: int, rng: np.random.Generator
) -> tuple[float, float, float, str]:
    classes, codes, n_k = np.unique(labs, return_inverse=True, return_counts=True)
    if len(classes) < 2 or np.ptp(vals) == 0:
        return float("nan"), 1.0, float("nan"), ""
    num = _numeric(labs)
    eff = float(stats.spearmanr(vals, num).statistic) if num is not None and np.ptp(num) > 0 else float("nan")
    if n_perm > 0 and n_k.min() < min_asymptotic:
        # small groups: the chi-square approximation is poor -> label permutation of the H statistic
        ranks = stats.rankdata(vals)
        h = float(_kw_h(ranks, codes, n_k))
        perm = codes[np.argsort(rng.random((n_perm, len(codes))), axis=1)]
        null = _kw_h(ranks, perm, n_k)
        p = (1 + np.sum(null >= h - 1e-9 * max(1.0, abs(h)))) / (1 + n_perm)
        return h, float(p), eff, "kruskal_permutation"
    samples = [vals[codes == k] for k in range(len(classes))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(samples) == 2:
            r = stats.mannwhitneyu(samples[0], samples[1], alternative="two-sided")
            return float(r.statistic), float(r.pvalue), eff, "mannwhitneyu"
        r = stats.kruskal(*samples)
    return float(r.statistic), float(r.pvalue), eff, "kruskal"


def class_test(
    store: TokenStore,
    labels: Sequence | np.ndarray,
    *,
    units: Sequence | np.ndarray | None = None,
    heads: Sequence[tuple[str, str]] | None = (("mean", "mean"),),
    min_units: int = 3,
    n_length_bins: int = 10,
    gene_map: pd.Series | dict | None = None,
    model: str = "finetuned",
    n_perm: int = 999,
    min_asymptotic: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Between classes on position-matched residual attention, per gene.

    Residuals (methods §7.2) are computed per token, averaged per (unit, class) when ``units`` are
    given (wells/replicates; else the cell is the unit), and compared across classes with
    Mann–Whitney (2 classes) or Kruskal–Wallis (>2); BH across genes per layer/head. ``effect`` is
    the Spearman correlation of the unit means with the class label when labels are numeric (dose).

    Parameters
    ----------
    store
        Token store.
    labels
        Class per cell (store order).
    units
        Well/replicate per cell, or ``None``.
    heads
        ``(layer, head)`` string pairs to test.
    min_units
        Genes observed in fewer units are skipped.
    n_length_bins
        Length bins of the position expectation.
    gene_map
        token id → gene symbol.
    model
        Model name recorded in ``model_other``.
    n_perm
        Label permutations used instead of the asymptotic test when a class has fewer than
        ``min_asymptotic`` units (Kruskal–Wallis H; 0 disables). Permutation p-values are at least
        ``1 / (1 + n_perm)``, which limits what survives BH across many genes.
    min_asymptotic
        Smallest class size (units) for the asymptotic Mann–Whitney / Kruskal–Wallis p-value.
    seed
        Seed of the permutations.

    Returns
    -------
    Significance rows, ``test="between_class"``; ``method`` says which p-value was used.
    """
    labels = np.asarray(labels).astype(str)
    if len(labels) != store.n_cells:
        msg = f"labels has {len(labels)} entries for {store.n_cells} cells"
        raise InputError(msg)
    u = labels if units is None else np.char.add(np.char.add(labels, "\x1f"), np.asarray(units).astype(str))
    ucode, uniq_u = pd.factorize(u)
    tok_unit = np.repeat(ucode, store.lengths)
    unit_label = np.array([s.split("\x1f")[0] for s in uniq_u]) if units is not None else np.asarray(uniq_u)
    if units is None:  # cells are the units
        tok_unit = np.repeat(np.arange(store.n_cells), store.lengths)
        unit_label = labels
    pos, tbin = store.positions, np.repeat(length_bins(store.lengths, n_length_bins), store.lengths)
    n_units = len(unit_label)
    # (gene, unit) groups of tokens
    key = store.token_ids.astype(np.int64) * n_units + tok_unit
    gu, inv = np.unique(key, return_inverse=True)
    gu_gene, gu_unit = gu // n_units, gu % n_units
    cnt = np.bincount(inv)
    gstart = np.r_[0, np.flatnonzero(np.diff(gu_gene)) + 1, len(gu)]
    tok = gu_gene[gstart[:-1]]
    genes = _gene_names(tok, gene_map)
    out = []
    for layer, head, lf in _select(store, heads):
        res = position_residual(lf, pos, tbin)
        umean = np.bincount(inv, weights=res) / cnt  # mean residual per (gene, unit)
        st, pv, eff, nn = (np.full(len(tok), np.nan) for _ in range(4))
        meth = np.full(len(tok), "", dtype=object)
        rng = np.random.default_rng(seed)
        for i in range(len(tok)):
            s = slice(gstart[i], gstart[i + 1])
            nn[i] = gstart[i + 1] - gstart[i]
            if nn[i] >= min_units:
                st[i], pv[i], eff[i], meth[i] = _class_p(
                    umean[s], unit_label[gu_unit[s]], n_perm=n_perm, min_asymptotic=min_asymptotic, rng=rng
                )
        out.append(
            pd.DataFrame(
                {
                    "test": "between_class",
                    "model_ref": "",
                    "model_other": model,
                    "layer": layer,
                    "head": head,
                    "token_id": tok,
                    "gene": genes,
                    "metric": "residual",
                    "method": meth,
                    "n": nn.astype(int),
                    "effect": eff,
                    "pct_change": np.nan,
                    "statistic": st,
                    "pval": pv,
                    "pval_adj": bh(pv),
                    "adjust": "bh",
                }
            )
        )
    df = pd.concat(out, ignore_index=True)
    return df[df["n"] >= min_units].reset_index(drop=True)


def null_calibration(
    store: TokenStore,
    labels: Sequence | np.ndarray,
    *,
    units: Sequence | np.ndarray | None = None,
    seed: int = 0,
    heads: Sequence[tuple[str, str]] | None = (("mean", "mean"),),
    min_units: int = 3,
    n_perm: int = 999,
    ks_min_units: int = 10,
) -> dict[str, float]:
    """Between-class test with the class labels shuffled (across units when given, else cells).

    Genes seen in few units have very discrete (valid but conservative) permutation p-values, which a
    KS test against U(0, 1) rejects although the test is valid; the KS test therefore uses the
    genes seen in at least ``ks_min_units`` units.

    Returns
    -------
    dict: ``n_tests``, ``frac_below_0.05`` and ``n_fdr_0.05`` (BH discoveries at 5%, expected 0)
    over all tested genes; ``ks_pvalue`` and ``n_ks`` over genes with ``n >= ks_min_units``.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).astype(str)
    if units is None:
        shuffled = rng.permutation(labels)
    else:
        # a unit is a (class, well) pair, as in `class_test`; shuffle the classes of whole units
        units = np.char.add(np.char.add(labels, "\x1f"), np.asarray(units).astype(str))
        key = pd.Series(labels).groupby(units).first()
        perm = pd.Series(rng.permutation(key.to_numpy()), index=key.index)
        shuffled = perm.reindex(units).to_numpy()
    df = class_test(
        store, shuffled, units=units, heads=heads, min_units=min_units, n_perm=n_perm, seed=seed + 1
    )
    df = df[df["pval"].notna()]
    p = df["pval"].to_numpy()
    p_ks = df.loc[df["n"] >= ks_min_units, "pval"].to_numpy()
    return {
        "n_tests": len(p),
        "n_ks": len(p_ks),
        "ks_pvalue": float(stats.kstest(p_ks, "uniform").pvalue) if len(p_ks) else float("nan"),
        "frac_below_0.05": float(np.mean(p < 0.05)) if len(p) else float("nan"),
        "n_fdr_0.05": int(np.sum(bh(p) < 0.05)) if len(p) else 0,
    }


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
