"""Between-class tests of attention with wells or replicates as units, and their calibration.

`class_test` averages each gene's per-cell (residual) attention per unit (well/replicate, or cell
when there are none) and tests across classes (Kruskal-Wallis, Mann-Whitney for two classes,
Spearman with a numeric class as the effect), with label-permutation p-values for small designs;
`null_calibration` checks it with many independent well-level shuffles of the class labels.
Token-level values from one cell are never treated as independent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from ..attention.store import TokenStore, length_bins
from ..errors import InputError
from .confounds import position_residual
from .significance import SIGNIFICANCE_COLUMNS, bh, gene_names, select_columns

__all__ = ["class_test", "null_calibration"]


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


@dataclass
class _Ranked:
    """Unit means of the tested genes ``[G, U]`` (NaN where a gene is absent from a unit), ranked per gene."""

    values: np.ndarray
    ranks: np.ndarray  # midranks among the gene's units
    n: np.ndarray  # units per gene
    tie: np.ndarray  # sum over tie groups of t^3 - t
    flat: np.ndarray  # all of a gene's unit means are equal

    @classmethod
    def of(cls, values: np.ndarray) -> _Ranked:
        ranks = stats.rankdata(values, axis=1, nan_policy="omit")
        s = np.sort(values, axis=1)
        tie = np.zeros(len(values))
        for g in np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1)):
            _, t = np.unique(s[g][np.isfinite(s[g])], return_counts=True)
            tie[g] = float(np.sum(t**3 - t))
        n = np.isfinite(values).sum(1)
        with np.errstate(invalid="ignore"):
            flat = (np.nanmax(values, axis=1) == np.nanmin(values, axis=1)) | (n < 2)
        return cls(values, ranks, n, tie, flat)


@dataclass
class _Nulls:
    """Seeded null distributions shared by all genes, heads and shuffles of a call (keyed by design)."""

    seed: int
    n_perm: int
    kw: dict[tuple, np.ndarray]
    mw: dict[tuple[int, int], np.ndarray]
    max_units: int = 100  # permutation nulls only for designs of at most this many units

    def kw_null(self, ranks: np.ndarray, sizes: tuple[int, ...], *, tied: bool) -> np.ndarray:
        """Sorted permutation null of H for these ranks and class sizes (``n_perm`` relabellings)."""
        key = (len(ranks), sizes, tuple((2 * np.sort(ranks)).astype(int)) if tied else ())
        if key not in self.kw:
            rng = np.random.default_rng([self.seed, len(ranks), *sizes, *key[2]])
            codes = np.repeat(np.arange(len(sizes)), sizes)
            perm = codes[np.argsort(rng.random((self.n_perm, len(codes))), axis=1)]
            self.kw[key] = np.sort(_kw_h(np.sort(ranks), perm, np.asarray(sizes)))
        return self.kw[key]

    def mw_sf(self, n1: int, n2: int) -> np.ndarray:
        """``P(U >= u)``, ``u = 0 .. n1 n2``, of the exact Mann–Whitney U distribution (no ties)."""
        if (n1, n2) not in self.mw:
            m, big = min(n1, n2), max(n1, n2)
            poly = np.zeros(m * big + 1)
            poly[0] = 1.0  # Gaussian binomial [n1 + n2 choose m]_q: prod_i (1 - q^(big+i)) / (1 - q^i)
            for i in range(1, m + 1):
                poly[big + i :] -= poly[: len(poly) - big - i].copy()
                for u in range(i, len(poly)):
                    poly[u] += poly[u - i]
            pmf = poly / poly.sum()
            self.mw[(n1, n2)] = np.cumsum(pmf[::-1])[::-1]
        return self.mw[(n1, n2)]


_METHODS = np.array(["", "mannwhitneyu", "kruskal", "kruskal_permutation"], dtype=object)


def _mann_whitney(
    rk: _Ranked, n_k: np.ndarray, r_k: np.ndarray, idx: np.ndarray, nulls: _Nulls
) -> tuple[np.ndarray, np.ndarray]:
    """``(U1, p)`` of genes ``idx`` seen in exactly two classes; `scipy.stats.mannwhitneyu` 'auto' rules.

    Exact when a class has at most 8 units and there are no ties, else normal with continuity and
    tie corrections; two-sided. ``U1`` is that of the first class present (sorted labels).
    """
    first = np.argmax(n_k[idx] > 0, axis=1)
    second = n_k.shape[1] - 1 - np.argmax((n_k[idx] > 0)[:, ::-1], axis=1)
    rows = np.arange(len(idx))
    n1, n2 = n_k[idx][rows, first], n_k[idx][rows, second]
    u1 = r_k[idx][rows, first] - n1 * (n1 + 1) / 2
    u = np.maximum(u1, n1 * n2 - u1)
    n, tie = n1 + n2, rk.tie[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n2 / 2 - 0.5) / np.sqrt(n1 * n2 / 12 * ((n + 1) - tie / (n * (n - 1))))
    p = 2 * special.ndtr(-z)
    for j in np.flatnonzero((np.minimum(n1, n2) <= 8) & (tie == 0)):
        p[j] = 2 * nulls.mw_sf(int(n1[j]), int(n2[j]))[int(round(u[j]))]
    return u1, np.clip(p, 0.0, 1.0)


def _between_p(
    rk: _Ranked, codes: np.ndarray, n_classes: int, *, min_asymptotic: int, nulls: _Nulls
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(statistic, pvalue, method index)`` per gene for unit class codes ``codes [U]``, vectorised.

    Two classes present: Mann–Whitney. More: Kruskal–Wallis, asymptotic with tie correction, or a
    permutation null of H when the smallest class has fewer than ``min_asymptotic`` units, the gene
    has at most ``nulls.max_units`` units and ``nulls.n_perm > 0``. Genes seen in one class: NaN; all
    unit means equal: p = 1.
    """
    onehot = np.eye(n_classes)[codes]
    n_k = np.isfinite(rk.ranks).astype(float) @ onehot  # [G, K] units per class
    r_k = np.nan_to_num(rk.ranks) @ onehot  # [G, K] rank sums
    k_g, n = (n_k > 0).sum(1), rk.n.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = 12 / (n * (n + 1)) * np.where(n_k > 0, r_k**2 / n_k, 0).sum(1) - 3 * (n + 1)
        h_corr = h / (1 - rk.tie / (n**3 - n))
    stat, p = np.full(len(n), np.nan), np.full(len(n), np.nan)
    meth = np.zeros(len(n), dtype=int)
    testable = k_g >= 2
    p[testable & rk.flat] = 1.0
    live = testable & ~rk.flat
    smallest = np.where(n_k > 0, n_k, np.inf).min(1)
    perm = live & (k_g >= 3) & (smallest < min_asymptotic) & (n <= nulls.max_units) & (nulls.n_perm > 0)
    kw = live & (k_g >= 3) & ~perm
    stat[kw], meth[kw] = h_corr[kw], 2
    p[kw] = stats.chi2.sf(h_corr[kw], k_g[kw] - 1)
    mw = np.flatnonzero(live & (k_g == 2))
    stat[mw], p[mw] = _mann_whitney(rk, n_k, r_k, mw, nulls)
    meth[mw] = 1
    for g in np.flatnonzero(perm):
        ok = np.isfinite(rk.ranks[g])
        sizes = tuple(sorted(int(x) for x in n_k[g][n_k[g] > 0]))
        null = nulls.kw_null(rk.ranks[g][ok], sizes, tied=rk.tie[g] > 0)
        tol = 1e-9 * max(1.0, abs(h[g]))
        stat[g], meth[g] = h[g], 3
        p[g] = (1 + len(null) - np.searchsorted(null, h[g] - tol, side="left")) / (1 + nulls.n_perm)
    return stat, p, meth


def _spearman_rows(rk: _Ranked, x: np.ndarray) -> np.ndarray:
    """Spearman correlation per gene of its unit means with the numeric unit labels ``x [U]``."""
    obs = np.isfinite(rk.ranks)
    xr = stats.rankdata(np.where(obs, x[None, :], np.nan), axis=1, nan_policy="omit")
    a = rk.ranks - np.nanmean(rk.ranks, axis=1, keepdims=True)
    b = xr - np.nanmean(xr, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(a * b, 1) / np.sqrt(np.nansum(a**2, 1) * np.nansum(b**2, 1))


@dataclass
class _Units:
    """Genes x units of one store: which (gene, unit) pairs exist, and each unit's class."""

    tok: np.ndarray  # [G] token ids of genes seen in >= min_units units
    pair_inv: np.ndarray  # [n_tokens] index of the token's (gene, unit) pair
    pair_n: np.ndarray  # tokens per pair
    pair_row: np.ndarray  # gene row of each pair (-1: gene not tested)
    pair_unit: np.ndarray
    unit_label: np.ndarray  # [U]
    tbin: np.ndarray  # length bin of each token

    @classmethod
    def build(
        cls,
        store: TokenStore,
        labels: np.ndarray,
        units: np.ndarray | None,
        min_units: int,
        n_length_bins: int,
    ) -> _Units:
        if units is None:  # cells are the units
            tok_unit, unit_label = np.repeat(np.arange(store.n_cells), store.lengths), labels
        else:  # a unit is a (class, well) pair
            ucode, uniq = pd.factorize(np.char.add(np.char.add(labels, "\x1f"), units.astype(str)))
            tok_unit, unit_label = (
                np.repeat(ucode, store.lengths),
                np.array([s.split("\x1f")[0] for s in uniq]),
            )
        n_units = len(unit_label)
        pairs, inv = np.unique(store.token_ids.astype(np.int64) * n_units + tok_unit, return_inverse=True)
        genes, per_gene = np.unique(pairs // n_units, return_counts=True)
        tok = genes[per_gene >= min_units]
        row = np.searchsorted(tok, pairs // n_units)
        row[(row >= len(tok)) | (tok[np.minimum(row, len(tok) - 1)] != pairs // n_units)] = -1
        tbin = np.repeat(length_bins(store.lengths, n_length_bins), store.lengths)
        return cls(tok, inv, np.bincount(inv), row, pairs % n_units, unit_label, tbin)

    def ranked(self, store: TokenStore, lf: np.ndarray) -> _Ranked:
        """Mean position-matched residual per (gene, unit) of one head column, ranked per gene."""
        res = position_residual(lf, store.positions, self.tbin)
        mean = np.bincount(self.pair_inv, weights=res) / self.pair_n
        values = np.full((len(self.tok), len(self.unit_label)), np.nan)
        keep = self.pair_row >= 0
        values[self.pair_row[keep], self.pair_unit[keep]] = mean[keep]
        return _Ranked.of(values)


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
    max_permutation_units: int = 100,
    seed: int = 0,
) -> pd.DataFrame:
    """Between classes on position-matched residual attention, per gene.

    Residuals (methods §7.2) are computed per token, averaged per (unit, class) when ``units`` are
    given (wells/replicates; else the cell is the unit), and compared across classes with
    Mann–Whitney (2 classes; exact when a class has at most 8 units) or Kruskal–Wallis (>2); BH
    across genes per layer/head. ``effect`` is the Spearman correlation of the unit means with the
    class label when labels are numeric (dose). The residual conditions on rank, which lies on the
    path dose -> expression -> rank -> attention: the estimand is "more attention than other genes
    at the same rank", not "attention follows dose".

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
        Label permutations of the Kruskal–Wallis H used instead of the asymptotic test when a class has
        fewer than ``min_asymptotic`` units (0 disables). The null of a design (units per class) is
        drawn once per call, seeded, and shared by the genes with that design. Permutation p-values
        are at least ``1 / (1 + n_perm)``, which limits what survives BH across many genes.
    min_asymptotic
        Smallest class size (units) for the asymptotic Kruskal–Wallis p-value.
    max_permutation_units
        Genes seen in more units use the asymptotic p-value even when a class is small: there the
        chi-square approximation is conservative (measured: rejection 0.024-0.044 at 0.05 for
        classes of 1-4 units among 126-600, `tests/stats/test_between_class_asymptotic.py`), and a
        per-gene permutation null over hundreds of cells (cells as units) costs minutes per shuffle.
    seed
        Seed of the permutations.

    Returns
    -------
    Significance rows, ``test="between_class"``; ``method`` says which p-value was used.
    """
    labels, units_arr = _labels_units(store, labels, units)
    u = _Units.build(store, labels, units_arr, min_units, n_length_bins)
    classes, codes = np.unique(u.unit_label, return_inverse=True)
    num = _numeric(u.unit_label)
    nulls = _Nulls(seed, n_perm, {}, {}, max_permutation_units)
    genes = gene_names(u.tok, gene_map)
    out = []
    for layer, head, lf in select_columns(store, heads):
        rk = u.ranked(store, lf)
        st, pv, meth = _between_p(rk, codes, len(classes), min_asymptotic=min_asymptotic, nulls=nulls)
        eff = _spearman_rows(rk, num) if num is not None and np.ptp(num) > 0 else np.full(len(u.tok), np.nan)
        out.append(
            pd.DataFrame(
                {
                    "test": "between_class",
                    "model_ref": "",
                    "model_other": model,
                    "layer": layer,
                    "head": head,
                    "token_id": u.tok,
                    "gene": genes,
                    "metric": "residual",
                    "method": _METHODS[meth],
                    "n": rk.n.astype(int),
                    "effect": eff,
                    "pct_change": np.nan,
                    "statistic": st,
                    "pval": pv,
                    "pval_adj": bh(pv),
                    "adjust": "bh",
                }
            )
        )
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=SIGNIFICANCE_COLUMNS)


def _labels_units(
    store: TokenStore, labels: Sequence | np.ndarray, units: Sequence | np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    labels = np.asarray(labels).astype(str)
    if len(labels) != store.n_cells or (units is not None and len(units) != store.n_cells):
        msg = f"labels ({len(labels)}) and units need one entry per cell ({store.n_cells} cells)"
        raise InputError(msg)
    return labels, None if units is None else np.asarray(units).astype(str)


def null_calibration(
    store: TokenStore,
    labels: Sequence | np.ndarray,
    *,
    units: Sequence | np.ndarray | None = None,
    seed: int = 0,
    heads: Sequence[tuple[str, str]] | None = (("mean", "mean"),),
    min_units: int = 3,
    n_perm: int = 999,
    min_asymptotic: int = 5,
    max_permutation_units: int = 100,
    n_length_bins: int = 10,
    n_shuffles: int = 200,
    alpha: float = 0.05,
) -> dict[str, float | int | str]:
    """`class_test` under ``n_shuffles`` independent shuffles of the class labels between units.

    A shuffle gives every unit (well; cells when ``units`` is None) the class of another unit, so the
    units keep their cells and the classes their sizes. One shuffle applies to every gene, whose
    p-values are therefore dependent: the rejection rate of one shuffle is one draw, and its spread
    over shuffles (not its mean alone) shows whether the test is calibrated under the dependence of
    the data. The p-values of each shuffle are exactly those `class_test` gives for those labels
    (same seed). No uniformity test across genes (their p-values are not independent).

    Returns
    -------
    dict: ``n_shuffles``, ``n_tests`` (tests per shuffle, median), ``alpha``,
    ``rejection_rate_mean`` / ``_q05`` / ``_q50`` / ``_q95`` / ``_max`` (fraction of tests with
    p < alpha, over shuffles; expected mean ``alpha``), ``frac_shuffles_any_bh`` (fraction of
    shuffles with at least one BH discovery at ``alpha``; at most about ``alpha`` when the FDR is
    controlled), ``observed_rejection_rate`` and ``observed_n_bh`` (real labels), and
    ``pvalue_rejection_rate`` = ``(1 + #{shuffles with rate >= observed}) / (1 + n_shuffles)``,
    a permutation test of "more genes differ between classes than under shuffled labels".
    """
    if n_shuffles < 1:
        msg = f"n_shuffles must be >= 1, got {n_shuffles}"
        raise InputError(msg)
    labels, units_arr = _labels_units(store, labels, units)
    u = _Units.build(store, labels, units_arr, min_units, n_length_bins)
    classes, codes = np.unique(u.unit_label, return_inverse=True)
    nulls = _Nulls(seed, n_perm, {}, {}, max_permutation_units)
    ranked = [u.ranked(store, lf) for _, _, lf in select_columns(store, heads)]
    rng = np.random.default_rng(seed)

    def one(c: np.ndarray) -> tuple[float, int, int]:
        ps = [_between_p(rk, c, len(classes), min_asymptotic=min_asymptotic, nulls=nulls)[1] for rk in ranked]
        p = np.concatenate(ps)
        ok = ~np.isnan(p)
        n_bh = sum(int(np.sum(bh(q) < alpha)) for q in ps)
        return float(np.mean(p[ok] < alpha)) if ok.any() else float("nan"), n_bh, int(ok.sum())

    obs_rate, obs_bh, _ = one(codes)
    sims = np.array([one(rng.permutation(codes)) for _ in range(n_shuffles)], dtype=float)
    rate = sims[:, 0]
    q05, q50, q95 = np.nanquantile(rate, [0.05, 0.5, 0.95])
    return {
        "n_shuffles": n_shuffles,
        "n_tests": int(np.median(sims[:, 2])),
        "alpha": alpha,
        "rejection_rate_mean": float(np.nanmean(rate)),
        "rejection_rate_q05": float(q05),
        "rejection_rate_q50": float(q50),
        "rejection_rate_q95": float(q95),
        "rejection_rate_max": float(np.nanmax(rate)),
        "frac_shuffles_any_bh": float(np.mean(sims[:, 1] > 0)),
        "observed_rejection_rate": obs_rate,
        "observed_n_bh": obs_bh,
        "pvalue_rejection_rate": float((1 + np.sum(rate >= obs_rate)) / (1 + n_shuffles)),
    }
