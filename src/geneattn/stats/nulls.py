"""Run-level null: what fine-tuning on the real labels changes beyond fine-tuning on permuted labels.

The unit of replication is the **training run**. Each run is a fine-tune from the same pretrained
model, either on the real dose labels (``kind="real"``, other seeds) or on labels permuted between
wells (``kind="permuted"``: each well keeps its cells and gets another well's label). For every unit
(a gene, a head, a rank bin, ...) the caller measures the run's change vs the pretrained model on one
fixed set of held-out cells; the task-attributable change is the real-label change compared with the
permuted-label changes. Paired tests of two fixed networks over cells (`significance`) cannot
answer this: any weight update rejects their null.

With a handful of runs an exact permutation of run labels cannot reach FDR-level p-values (2 + 2
runs: p >= 1/6 one-sided, 1/3 two-sided; 3 + 3: 1/20, 1/10), so `task_attributable` borrows
strength across the units of a family: a moderated two-sample t-test (limma empirical Bayes, Smyth
2004) on the per-run values, one family per call, BH within the family. Two things keep it
calibrated with so few runs (shown on simulated studies in ``tests/stats/test_stats_nulls.py``):

* **Run normalisation.** Runs drift by their own amount along one shared pattern (how far the
  optimiser moved this seed), which correlates all units of a run. Left in, it makes every unit's
  real-vs-permuted difference share one draw, and the units' variances share one noise draw that the
  moderated t trusts as if it came from every unit: with 2 + 2 runs about one null study in five
  had a BH discovery. Each run is therefore first expressed relative to the permuted runs' mean
  change, minus its own robust shift and scale of it (two numbers per run, from all units).
* **A conservative prior df.** With 1-2 residual df per unit the moment estimate of the prior df
  ``d0`` is noisy, and an over-estimate over-shrinks the noisiest units' variances; its lower
  confidence bound is used instead.

With 3 + 3 runs or more one further run-to-run factor of any pattern (a surrogate variable from the
within-kind residuals) enters every unit's regression as a covariate, at the cost of one residual df.
Set-level contrasts per run (the primary analysis) are tested in `geneattn.stats.contrasts`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import special, stats

from ..errors import InputError
from ._flexible import natural_spline_basis
from .significance import bh

__all__ = ["squeeze_var", "task_attributable", "counts", "KINDS", "NULL_NAME"]

logger = logging.getLogger(__name__)

KINDS = ("real", "permuted")
#: The name of the null, for the keys of reported counts.
NULL_NAME = "permuted_label_runs"
#: Fewest units from which a run's normalisation or the run-to-run factor is estimated.
MIN_FACTOR_UNITS = 10
#: largest spline df of the variance trend (limma-trend); fewer with few units
TREND_DF = 3


def _trigamma_inverse(x: float) -> float:
    """``y`` with ``trigamma(y) = x`` (Newton's method of limma's ``trigammaInverse``)."""
    if x > 1e7:
        return 1 / np.sqrt(x)
    if x < 1e-6:
        return 1 / x
    y = 0.5 + 1 / x
    for _ in range(50):
        tri = special.polygamma(1, y)
        dif = tri * (1 - tri / x) / special.polygamma(2, y)
        y += dif
        if -dif / y < 1e-8:
            break
    return float(y)


def _fit_f_dist(
    s2: np.ndarray, df: np.ndarray, level: float | None, covariate: np.ndarray | None = None
) -> tuple[np.ndarray | float, float]:
    """Prior ``(s0², d0)`` of the scaled inverse chi-square model of the variances (limma ``fitFDist``).

    ``level``: instead of the moment estimate of the spread of the prior log-variances, its upper
    one-sided confidence bound at that level (normal approximation to the sample variance), so ``d0``
    is a lower confidence bound: an over-estimated ``d0`` over-shrinks the variances of the noisiest
    units and inflates false positives, an under-estimated one only costs power.

    ``covariate`` (limma-trend): the prior's log-variance is a natural cubic spline of it (`TREND_DF`
    df, fewer with few units) instead of a constant, fitted by least squares to the
    digamma-corrected log variances; ``s0²`` is then one value per unit and ``d0`` comes from the
    spread around the trend (residual df of the fit).
    """
    x = np.maximum(s2, 0.0)
    m = float(np.median(x))
    if m == 0:
        logger.warning("more than half of the residual variances are exactly zero: moderation unreliable")
        m = 1.0
    x = np.maximum(x, 1e-5 * m)
    e = np.log(x) - special.digamma(df / 2) + np.log(df / 2)
    design = _trend_design(covariate, len(e))
    coef, *_ = np.linalg.lstsq(design, e, rcond=None)
    emean = design @ coef
    n, p = design.shape
    c = e - emean
    evar = float(np.sum(c**2) / (n - p) - np.mean(special.polygamma(1, df / 2)))
    if level is not None:
        evar += stats.norm.ppf(level) * np.sqrt(max(np.mean(c**4) - np.mean(c**2) ** 2, 0.0) / n)
    log_s0 = emean if covariate is not None else float(emean[0])
    if evar > 0:
        d0 = 2 * _trigamma_inverse(evar)
        return np.exp(log_s0 + special.digamma(d0 / 2) - np.log(d0 / 2)), d0
    return np.exp(log_s0), float("inf")


def _trend_design(covariate: np.ndarray | None, n: int) -> np.ndarray:
    """Intercept (no trend), or intercept + natural spline of the covariate (df grows with the units, as limma)."""
    if covariate is None:
        return np.ones((n, 1))
    df = min(TREND_DF, 1 + (n >= 3) + (n >= 6) + (n >= 30))
    return np.column_stack([np.ones(n), natural_spline_basis(np.asarray(covariate, dtype=float), df)])


def squeeze_var(
    s2: np.ndarray, df: np.ndarray, *, level: float | None = None, covariate: np.ndarray | None = None
) -> tuple[np.ndarray, float, np.ndarray | float]:
    """Empirical-Bayes posterior variances (limma ``squeezeVar``, Smyth 2004; not robust).

    The sample variances ``s2`` (``df`` residual degrees of freedom each) are modelled as scaled
    chi-square draws around variances from a scaled inverse chi-square prior ``(s0², d0)``, fitted by
    moments of ``log s2`` over the units with ``df > 0``. Posterior ``(d0 s0² + df s2) / (d0 + df)``;
    units with ``df = 0`` get ``s0²``.

    Parameters
    ----------
    s2
        Residual variance per unit (anything where ``df = 0``).
    df
        Residual degrees of freedom per unit.
    level
        ``None``: limma's moment estimate of ``d0``. A level (e.g. 0.95): a lower confidence bound of
        ``d0`` instead (conservative; see `_fit_f_dist`).
    covariate
        Per unit, a covariate of the prior variance (limma-trend; e.g. log cells seen): the prior
        ``s0²`` follows a spline of it. ``None``: one prior for all units.

    Returns
    -------
    ``(s2_post, d0, s0²)``; ``s0²`` is per unit with a ``covariate``; ``d0 = inf`` when the
    variances are no more dispersed than chi-square noise (every unit then gets ``s0²``).
    """
    s2, df = np.asarray(s2, dtype=float), np.asarray(df, dtype=float)
    ok = np.isfinite(s2) & (df > 0)
    if ok.sum() < 2:
        msg = f"moderation needs residual variances of at least 2 units, got {int(ok.sum())}"
        raise InputError(msg)
    if covariate is not None:
        covariate = np.asarray(covariate, dtype=float)
        if covariate.shape != s2.shape or not np.isfinite(covariate).all():
            msg = "the variance covariate needs one finite value per unit"
            raise InputError(msg)
        s0_ok, d0 = _fit_f_dist(s2[ok], df[ok], level, covariate[ok])
        order = np.argsort(covariate[ok])  # units without a variance take the trend at their covariate
        s0 = np.exp(np.interp(covariate, covariate[ok][order], np.log(s0_ok)[order]))
        s0[ok] = s0_ok
    else:
        s0, d0 = _fit_f_dist(s2[ok], df[ok], level)
    x = np.where(ok, s2, 0.0)
    post = np.broadcast_to(s0, s2.shape).astype(float) if np.isinf(d0) else (d0 * s0 + df * x) / (d0 + df)
    return post, d0, s0


def _run_matrix(deltas: pd.DataFrame, unit: str) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """``(values [n_runs, n_units] with NaN where missing, is_real [n_runs], unit index)``."""
    need = {"run", "kind", unit, "value"}
    if not need <= set(deltas.columns):
        msg = f"deltas needs columns {sorted(need)}, has {list(deltas.columns)}"
        raise InputError(msg)
    pairs = deltas[["run", "kind"]].astype({"kind": str}).drop_duplicates()
    bad = sorted(set(pairs.loc[pairs["run"].duplicated(keep=False) | ~pairs["kind"].isin(KINDS), "run"]))
    if bad:
        msg = f"each run needs one kind in {KINDS}; runs {bad[:5]} have several or others"
        raise InputError(msg)
    kinds = pairs.set_index("run")["kind"]
    if deltas.duplicated(["run", unit]).any():
        msg = f"deltas has several rows for one (run, {unit}); give one value per run and unit"
        raise InputError(msg)
    wide = deltas.pivot(index="run", columns=unit, values="value").sort_index()
    y = wide.to_numpy(dtype=float)
    y[~np.isfinite(y)] = np.nan
    real = kinds.reindex(wide.index).to_numpy() == "real"
    return y, real, wide.columns


def _factor_scores(y: np.ndarray, real: np.ndarray, n_factors: int) -> np.ndarray:
    """Scores ``[n_runs, n_factors]`` of the main run-to-run factors.

    Loadings: leading right singular vectors of the within-kind residuals of the units seen in every
    run (free of any real-vs-permuted difference). Scores: every run's centred values projected on
    them, so a factor's chance difference between kinds is carried into the design.
    """
    yc = y[:, np.isfinite(y).all(axis=0)]
    if yc.shape[1] < MIN_FACTOR_UNITS:
        msg = (
            f"the run-to-run factor needs at least {MIN_FACTOR_UNITS} units seen in every run, "
            f"got {yc.shape[1]}; use n_factors=0"
        )
        raise InputError(msg)
    resid = yc.copy()
    for k in (real, ~real):
        resid[k] -= resid[k].mean(axis=0)
    _, _, vt = np.linalg.svd(resid, full_matrices=False)
    return (yc - yc.mean(axis=0)) @ vt[:n_factors].T


def _fit_units(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-unit least squares on design ``x`` (column 1 = real-vs-permuted) over the unit's observed runs.

    Returns ``(coef, unscaled variance, s2, df)`` per unit (NaN where the unit's design is not of full
    rank); units sharing a missingness pattern are fitted together.
    """
    n_units, p = y.shape[1], x.shape[1]
    coef, v, s2, df = (np.full(n_units, np.nan) for _ in range(4))
    obs = np.isfinite(y)
    patterns, which = np.unique(obs.T, axis=0, return_inverse=True)
    for k, pat in enumerate(patterns):
        xp, cols = x[pat], np.flatnonzero(which.ravel() == k)
        if np.linalg.matrix_rank(xp) < p:
            continue
        xtx_inv = np.linalg.inv(xp.T @ xp)
        yp = y[np.ix_(pat, cols)]
        b = xtx_inv @ xp.T @ yp  # [p, units]
        rss = ((yp - xp @ b) ** 2).sum(axis=0)
        d = len(xp) - p
        coef[cols], v[cols], df[cols] = b[1], xtx_inv[1, 1], d
        s2[cols] = rss / d if d > 0 else np.nan
    return coef, v, s2, df


def _mean_observed(y: np.ndarray) -> np.ndarray:
    """Column means over the finite entries (NaN for a column with none)."""
    ok = np.isfinite(y)
    n = ok.sum(axis=0)
    return np.where(n > 0, np.where(ok, y, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    sw = w.sum()
    xm, ym = (w @ x) / sw, (w @ y) / sw
    sxx = w @ (x - xm) ** 2
    b = float(w @ ((x - xm) * (y - ym)) / sxx) if sxx > 0 else 0.0
    return float(ym - b * xm), b


def _robust_line(x: np.ndarray, y: np.ndarray, *, c: float = 4.685, n_iter: int = 50) -> tuple[float, float]:
    """``(a, b)`` of ``y ~ a + b x`` by Tukey-biweight IRLS from the least-squares fit.

    The scale is the MAD of the least-squares residuals, held fixed. Units with a large task effect
    are outliers of their run's fit and get weight 0, so they do not leak into the per-run shift and
    scale (least squares would move every unit by a share of them).
    """
    a, b = _weighted_line(x, y, np.ones(len(x)))
    r = y - a - b * x
    scale = 1.4826 * float(np.median(np.abs(r - np.median(r))))
    for _ in range(n_iter if scale > 0 else 0):
        w = np.clip(1 - ((y - a - b * x) / (c * scale)) ** 2, 0, None) ** 2
        a_new, b_new = _weighted_line(x, y, w)
        done = abs(a_new - a) + abs(b_new - b) <= 1e-10 * (1 + abs(a) + abs(b))
        a, b = a_new, b_new
        if done:
            break
    return a, b


def _normalize_runs(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Each run minus its robust affine fit on the null profile: ``y[r, g] - a_r - b_r m_g``.

    ``m_g`` is the unit's mean over the reference runs ``ref`` (the permuted-label runs: what
    fine-tuning without task information changes); ``(a_r, b_r)`` is the fit of run r's deviation
    ``y[r] - m`` on ``[1, m]`` over its units (`_robust_line`). This removes a run-wide shift and a
    run-specific scale of the null change (how far this seed drifted along the shared pattern):
    two numbers per run estimated from all units, so each unit keeps its residual df. A profile that
    included the real runs would carry the task effects into every real run's fit.
    """
    m = _mean_observed(y[ref])
    out = np.full_like(y, np.nan)
    for r in range(len(y)):
        ok = np.isfinite(y[r]) & np.isfinite(m)
        if ok.sum() < MIN_FACTOR_UNITS or np.ptp(m[ok]) == 0:
            msg = (
                f"run normalisation needs {MIN_FACTOR_UNITS} units with differing changes in every run; "
                "use normalize=False"
            )
            raise InputError(msg)
        a, b = _robust_line(m[ok], y[r, ok] - m[ok])
        out[r, ok] = y[r, ok] - a - b * m[ok]
    return out


def _unit_covariate(covariate: pd.Series, units: pd.Index) -> np.ndarray:
    """The variance covariate aligned to the units (every unit needs a finite value)."""
    c = pd.Series(covariate)
    c.index = c.index.astype(str)
    out = c.reindex(units.astype(str)).to_numpy(dtype=float)
    if not np.isfinite(out).all():
        msg = f"variance_covariate lacks a finite value for {int((~np.isfinite(out)).sum())} of {len(units)} units"
        raise InputError(msg)
    return out


def _moderated(
    coef: np.ndarray,
    v: np.ndarray,
    s2: np.ndarray,
    df: np.ndarray,
    *,
    moderate: bool,
    level: float | None,
    covariate: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray | float]:
    """``(se, df_total, pval, d0, s0²)`` of the tested units (``coef`` finite)."""
    if moderate:
        post, d0, s0 = squeeze_var(s2, df, level=level, covariate=covariate)
        df_total = np.minimum(d0 + df, np.nansum(df))
    else:
        post, df_total, d0, s0 = s2, df, float("nan"), float("nan")
    se = np.sqrt(post * v)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2 * stats.t.sf(np.abs(coef / se), df_total)
    return se, df_total, p, d0, s0


def task_attributable(
    deltas: pd.DataFrame,
    *,
    unit: str = "unit",
    alpha: float = 0.05,
    normalize: bool = True,
    n_factors: int | None = None,
    moderate: bool = True,
    prior_df_level: float | None = 0.95,
    variance_covariate: pd.Series | None = None,
) -> pd.DataFrame:
    """Per unit: is the change after real-label fine-tunes different from that after permuted-label ones.

    One family per call (e.g. all genes, or all heads): every unit is counted once and BH is applied
    across the family. Steps: (1) with ``normalize``, every run's values minus a per-run shift and
    scale of the permuted runs' mean change (`_normalize_runs`); (2) per unit, least squares over the
    runs that have it of ``value ~ 1 + [kind = real] (+ run factors)``; (3) the coefficient of
    ``[kind = real]`` is tested with a moderated t (limma: residual variances squeezed towards a prior fitted on all
    units of the family, ``df = d0 + df_residual`` capped at the pooled residual df).

    Parameters
    ----------
    deltas
        Long table ``run, kind ("real" | "permuted"), <unit>, value``: the run's change vs the
        pretrained model for that unit, all runs measured on the same held-out cells. Units missing
        in some runs use the runs that have them.
    unit
        Name of the unit column.
    alpha
        FDR level of ``significant``.
    normalize
        Remove each run's shift and scale of the permuted runs' mean change first (needs
        `MIN_FACTOR_UNITS` units; units seen in no permuted run are then not tested).
        Differences between kinds that are a uniform shift or rescaling of that change are then not
        attributed to units; test them as a set contrast (`geneattn.stats.contrasts`).
    n_factors
        Further run-to-run factors of any pattern as covariates (surrogate variables from the
        within-kind residuals of the units seen in every run). Each costs one residual df per unit.
        ``None``: 1 with 6 runs or more (3 + 3), else 0.
    moderate
        Squeeze the residual variances (``False``: ordinary t per unit with its own residual df).
    prior_df_level
        Use a lower confidence bound of the prior df ``d0`` at this level (``None``: limma's estimate).
        With 1-2 residual df per unit and a few hundred units the estimate is noisy, and an
        over-estimate inflates the family-wise false-positive rate.
    variance_covariate
        Per unit (index), a covariate of the prior variance (limma-trend, `squeeze_var`), fixed by
        the design and not by the runs: e.g. log of the held-out cells in which a gene is seen,
        since a mean over 5 cells varies more between runs than a mean over 200. Every tested unit
        needs a finite value. ``None``: one prior variance for the family.

    Returns
    -------
    DataFrame indexed by unit: ``n_real, n_permuted, mean_real, mean_permuted, difference`` (raw
    ``mean_real - mean_permuted``), ``effect`` (the tested coefficient, after normalisation and
    factors), ``se, t, df, pval, pval_adj`` (BH over the tested units), ``significant``.
    ``.attrs``: ``null`` (`NULL_NAME`), ``unit_of_replication``, ``method``, ``n_runs_real``,
    ``n_runs_permuted``, ``n_factors``, ``prior_df`` (d0), ``prior_var`` (s0²), ``n_tests``,
    ``n_significant``, ``alpha``.
    """
    y, real, units = _run_matrix(deltas, unit)
    n_runs = len(real)
    if n_factors is None:
        n_factors = 1 if n_runs >= 6 else 0
    if n_factors < 0 or n_runs - 2 - n_factors < 1 or real.all() or not real.any():
        msg = (
            f"{int(real.sum())} real + {int((~real).sum())} permuted runs leave no residual df with "
            f"n_factors={n_factors}: need both kinds and n_runs >= 3 + n_factors"
        )
        raise InputError(msg)
    obs = np.isfinite(y)
    m_real, m_perm = _mean_observed(y[real]), _mean_observed(y[~real])
    yn = _normalize_runs(y, ~real) if normalize else y
    x = np.column_stack([np.ones(n_runs), real.astype(float)])
    if n_factors:
        x = np.column_stack([x, _factor_scores(yn, real, n_factors)])
    coef, v, s2, df = _fit_units(yn, x)
    ok = np.isfinite(coef)
    se, dft, p = (np.full(len(units), np.nan) for _ in range(3))
    cov = None if variance_covariate is None else _unit_covariate(variance_covariate, units)
    se[ok], dft[ok], p[ok], d0, s0 = _moderated(
        coef[ok], v[ok], s2[ok], df[ok], moderate=moderate, level=prior_df_level,
        covariate=None if cov is None else cov[ok],
    )  # fmt: skip
    padj = bh(p)
    out = pd.DataFrame(
        {
            "n_real": obs[real].sum(0),
            "n_permuted": obs[~real].sum(0),
            "mean_real": m_real,
            "mean_permuted": m_perm,
            "difference": m_real - m_perm,
            "effect": coef,
            "se": se,
            "t": coef / se,
            "df": dft,
            "pval": p,
            "pval_adj": padj,
            "significant": padj < alpha,
        },
        index=pd.Index(units, name=unit),
    )
    method = (
        "moderated t (limma eBayes"
        + (", variance trend" if cov is not None else "")
        + (f", d0 at its {prior_df_level:g} lower bound)" if prior_df_level else ")")
    )
    out.attrs = {
        "null": NULL_NAME,
        "unit_of_replication": "training run",
        "method": (method if moderate else "t")
        + (", runs normalised to the permuted runs' mean change" if normalize else "")
        + f", {n_factors} run factor(s), BH",
        "n_runs_real": int(real.sum()),
        "n_runs_permuted": int((~real).sum()),
        "n_factors": n_factors,
        "prior_df": d0,
        "prior_var": float(np.median(s0)),
        "n_tests": int(ok.sum()),
        "n_significant": int(out["significant"].sum()),
        "alpha": alpha,
    }
    return out


def counts(table: pd.DataFrame, *, family: str) -> dict[str, int | str | float]:
    """``{"null", "family", "n_tests", "n_significant", ...}`` of a `task_attributable` table, for reports."""
    a = table.attrs
    return {
        "null": a.get("null", NULL_NAME),
        "family": family,
        "n_tests": int(a.get("n_tests", table["pval"].notna().sum())),
        "n_significant": int(table["significant"].sum()),
        "alpha": a.get("alpha", float("nan")),
        "n_runs_real": a.get("n_runs_real", -1),
        "n_runs_permuted": a.get("n_runs_permuted", -1),
    }
