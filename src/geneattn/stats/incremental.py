"""Does a gene score add anything over expression level? Incremental value against the planted truth.

Every test asks whether, across genes, a score separates planted from unplanted genes beyond what
the gene-level covariates (`baselines.gene_covariates`: mean, detection, variance, HVG residual)
already do — and with which units.

* `stratified_auroc` (`geneattn.stats._recovery`): covariate-adjusted AUROC (Janes & Pepe): each
  planted gene compared only with unplanted genes of its own expression stratum.
* `nested_lrt`: logistic regression ``planted ~ f(covariates) [+ stratum]`` against ``... + score``;
  likelihood-ratio χ² with df = number of score columns. ``f`` is a natural cubic spline of each
  covariate (5 df, `geneattn.stats._flexible`): with linear z-scored covariates, plain transforms of
  the covariates (detection, variance) "added information" (the negative controls failed). The score
  enters as rank-based normal scores, so a few extreme genes cannot lever the fit. With ``clusters``
  (programme blocks and matched sets, `geneattn.stats._flexible.gene_clusters`) a cluster-robust
  Wald test of the score coefficient is added: genes of one programme are not independent.
  Under (quasi-)separation the log-likelihood converges to its supremum (monotone Newton fit), so
  the LR stays defined; ``separation`` flags it.
* `delta_auroc`: cross-validated (stratified K-fold over genes, seeded) AUROC of the two logistic
  models from out-of-fold predictions, and a percentile bootstrap CI of the difference over
  clusters (programme blocks, matched sets) or genes. DeLong's test is not used (nested models).
* `incremental_table`: all of the above per method; methods in `NEGATIVE_CONTROLS` are flagged
  ``control``: they must come out null. Per programme and across runs: `geneattn.stats.incremental_sets`.

Scores are "higher = more important" (pass ``|score|`` for signed attributions). A method is judged
over the genes it scores: NaN scores are dropped, not filled, and ``n_genes`` says how many remain.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import special, stats

from ..errors import InputError
from ._flexible import cluster_wald, flexible_design
from ._recovery import expression_strata, recovery_by_effect_size, stratified_auroc
from .agreement import auroc
from .baselines import LABEL_USE

__all__ = [
    "stratified_auroc",
    "nested_lrt",
    "delta_auroc",
    "incremental_table",
    "recovery_by_effect_size",
    "expression_strata",
    "INCREMENTAL_COLUMNS",
    "NEGATIVE_CONTROLS",
]

logger = logging.getLogger(__name__)

INCREMENTAL_COLUMNS = [
    "method",
    "uses_labels",
    "n_genes",
    "n_planted",
    "auroc",
    "stratified_auroc",
    "lr_chi2",
    "lr_df",
    "lr_pvalue",
    "coef_score",
    "wald_pvalue",
    "n_clusters",
    "pvalue",
    "control",
    "unit",
    "separation",
    "auroc_covariates",
    "auroc_full",
    "delta_auroc",
    "delta_lo",
    "delta_hi",
]
#: scores that are functions of the covariates or label-free: they must come out null
NEGATIVE_CONTROLS = (
    "detection",
    "variance",
    "mean_rank",
    "mean_expression",
    "hvg_residual",
    "covariate_plus_noise",
)
_ETA_SEPARATION = 20.0  # |linear predictor| beyond which a gene is fitted as p = 0 or 1 (1e-9)


def _loglik(X: np.ndarray, y: np.ndarray, beta: np.ndarray) -> float:
    eta = X @ beta
    return float(np.sum(y * eta - np.logaddexp(0.0, eta)))


def _logit_fit(
    X: np.ndarray, y: np.ndarray, *, max_iter: int = 200, tol: float = 1e-10
) -> tuple[np.ndarray, float, bool]:
    """Maximum-likelihood logistic regression by Newton steps with step halving (ll never falls).

    Returns ``(beta, loglik, converged)``. The step solves ``H δ = g`` by least squares, so
    collinear columns (a score equal to a covariate) give the minimum-norm step instead of failing.
    """
    beta = np.zeros(X.shape[1])
    ll = _loglik(X, y, beta)
    for _ in range(max_iter):
        p = special.expit(X @ beta)
        grad = X.T @ (y - p)
        hess = X.T @ (X * (p * (1.0 - p))[:, None])
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]
        t, new_ll = 1.0, -np.inf
        while t > 1e-10:
            new_ll = _loglik(X, y, beta + t * step)
            if new_ll >= ll:
                break
            t /= 2.0
        if new_ll < ll:  # no ascent direction left
            return beta, ll, True
        beta, gain, ll = beta + t * step, new_ll - ll, new_ll
        if gain < tol:
            return beta, ll, True
    return beta, ll, False


def _design(frame: pd.DataFrame) -> np.ndarray:
    """Intercept + z-scored columns (constant columns are kept as zeros: they add nothing)."""
    x = frame.to_numpy(dtype=float)
    sd = x.std(axis=0)
    z = np.divide(x - x.mean(axis=0), sd, out=np.zeros_like(x), where=sd > 0)
    return np.column_stack([np.ones(len(x)), z])


def _frames(
    truth: pd.Series, covariates: pd.DataFrame, score: pd.Series | pd.DataFrame
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """``(y, covariates, scores)`` over the genes with all three (frames keep the gene index)."""
    sc = score.to_frame("score") if isinstance(score, pd.Series) else score
    if not isinstance(covariates, pd.DataFrame) or not isinstance(truth, pd.Series):
        msg = "truth must be a Series and covariates a DataFrame, both indexed by gene"
        raise InputError(msg)
    overlap = [c for c in sc.columns if c in covariates.columns]
    sc = sc.add_prefix("score:") if overlap else sc
    df = pd.concat([truth.rename("__truth__").astype(bool), covariates, sc], axis=1, join="inner").dropna()
    if df["__truth__"].nunique() < 2:
        msg = "the genes with a score, covariates and truth must include planted and unplanted genes"
        raise InputError(msg)
    return df["__truth__"].to_numpy(dtype=float), df[covariates.columns], df[sc.columns]


def _designs(
    cov: pd.DataFrame, sc: pd.DataFrame, strata: pd.Series | None, spline_df: int
) -> tuple[np.ndarray, np.ndarray]:
    """Null design (intercept, covariate splines, strata) and the full design (+ z-scored scores)."""
    g = None if strata is None else strata.reindex(cov.index).fillna(-1).to_numpy()
    x0 = flexible_design(cov, None if g is None else pd.Series(g, index=cov.index), df=spline_df)
    return x0, np.column_stack([x0, _design(_normal_scores(sc))[:, 1:]])


def _normal_scores(sc: pd.DataFrame) -> pd.DataFrame:
    """Each score column as its mid-rank fraction in (0, 1): bounded, so a few extreme genes cannot lever the fit.

    (A rank-based *normal* transform has steep tails: applied to a transform of a covariate it is a
    function of the covariate that the splines cannot follow in the tails, and the negative controls
    then "add information".)
    """
    return (sc.rank(method="average") - 0.5) / len(sc)


def nested_lrt(
    truth: pd.Series,
    covariates: pd.DataFrame,
    score: pd.Series | pd.DataFrame,
    *,
    strata: pd.Series | None = None,
    clusters: pd.Series | None = None,
    spline_df: int = 5,
) -> dict[str, float | int | bool]:
    """Likelihood-ratio test of ``planted ~ f(covariates) [+ stratum]`` against ``... + score``.

    Parameters
    ----------
    truth
        Boolean per gene (e.g. ``var["planted"]``).
    covariates
        Gene covariates (columns of `baselines.gene_covariates`, e.g. `baselines.FIELD_COVARIATES`).
    score
        The score(s) tested for incremental value; genes missing anywhere are dropped.
    strata
        Optional stratum per gene (e.g. the simulator's matched-set stratum): indicator columns.
    clusters
        Optional resampling unit per gene (`gene_clusters`): adds a cluster-robust Wald test of the
        (first) score coefficient.
    spline_df
        Natural-spline df per covariate (`flexible_design`); 1 = the linear-logit design.

    Returns
    -------
    dict
        ``lr_chi2, lr_df, lr_pvalue, ll_null, ll_full, coef_score`` (per SD of the score, first score
        column), ``wald_pvalue, n_clusters`` (NaN / 0 without clusters), ``n_genes, n_planted,
        separation`` (some gene fitted with p within 1e-9 of 0 or 1: coefficients are not finite
        MLEs, the LR still is) and ``converged``.
    """
    y, cov, sc = _frames(truth, covariates, score)
    x0, x1 = _designs(cov, sc, strata, spline_df)
    b0, ll0, c0 = _memo((x0, y), lambda: _logit_fit(x0, y))
    b1, ll1, c1 = _logit_fit(x1, y)
    lr = max(2.0 * (ll1 - ll0), 0.0)
    df = sc.shape[1]
    sep = bool(np.abs(x1 @ b1).max() > _ETA_SEPARATION or np.abs(x0 @ b0).max() > _ETA_SEPARATION)
    wald_p, n_cl = float("nan"), 0
    if clusters is not None:
        cl = clusters.reindex(cov.index).fillna(pd.Series(cov.index.astype(str), index=cov.index))
        _, wald_p, n_cl = cluster_wald(x1, y, b1, x0.shape[1], cl.to_numpy())
    return {
        "lr_chi2": lr,
        "lr_df": df,
        "lr_pvalue": float(stats.chi2.sf(lr, df)),
        "ll_null": ll0,
        "ll_full": ll1,
        "coef_score": float(b1[x0.shape[1]]),
        "wald_pvalue": wald_p,
        "n_clusters": n_cl,
        "n_genes": len(y),
        "n_planted": int(y.sum()),
        "separation": sep,
        "converged": bool(c0 and c1),
    }


def _folds(y: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified fold id per gene: positives and negatives dealt round robin after a shuffle."""
    fold = np.empty(len(y), dtype=np.int64)
    for cls in (0.0, 1.0):
        idx = rng.permutation(np.flatnonzero(y == cls))
        fold[idx] = np.arange(len(idx)) % n_folds
    return fold


_NULL_FITS: dict[bytes, object] = {}  # null-model fits shared by the methods of one `incremental_table`


def _memo(key_parts: tuple[np.ndarray, ...], fn: object) -> object:
    """``fn()`` cached on the bytes of ``key_parts`` while `incremental_table` runs (else computed)."""
    if _NULL_FITS.get(b"on") is None:
        return fn()
    key = hashlib.blake2b(
        b"".join(np.ascontiguousarray(a).tobytes() for a in key_parts), digest_size=16
    ).digest()
    if key not in _NULL_FITS:
        _NULL_FITS[key] = fn()
    return _NULL_FITS[key]


def _oof(x: np.ndarray, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold linear predictors of the logistic model."""
    out = np.empty(len(y))
    for f in np.unique(fold):
        test = fold == f
        beta, _, _ = _logit_fit(x[~test], y[~test])
        out[test] = x[test] @ beta
    return out


def _boot_auroc(score: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of ``score`` on each bootstrap resample, given as multiplicity weights ``[B, n]`` (exact, ties ½)."""
    order = np.argsort(score, kind="mergesort")
    s, yy, w = score[order], y[order].astype(bool), weights[:, order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1]  # tie groups
    neg = np.add.reduceat(w * ~yy, starts, axis=1)
    pos = np.add.reduceat(w * yy, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def _cluster_weights(clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Gene multiplicity weights ``[n_boot, n]``: clusters resampled with replacement (genes ride along)."""
    codes = pd.factorize(clusters)[0]
    g = int(codes.max()) + 1
    w = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot)
    return w[:, codes]


def delta_auroc(
    truth: pd.Series,
    covariates: pd.DataFrame,
    score: pd.Series | pd.DataFrame,
    *,
    strata: pd.Series | None = None,
    clusters: pd.Series | None = None,
    spline_df: int = 5,
    n_folds: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, float | int]:
    """Cross-validated AUROC gain of adding ``score`` to the covariates, with a cluster-bootstrap CI.

    Parameters
    ----------
    truth, covariates, score, strata, spline_df
        As in `nested_lrt`.
    clusters
        Resampling unit per gene (`gene_clusters`: programme blocks, matched sets); ``None``: genes.
        The out-of-fold predictions are held fixed and the clusters are resampled.
    n_folds
        Stratified folds over genes.
    n_boot
        Bootstrap resamples (percentile interval).
    seed
        Seeds the folds and the resamples.
    alpha
        1 − confidence level.

    Returns
    -------
    dict
        ``auroc_covariates, auroc_full, delta_auroc, delta_lo, delta_hi, n_genes, n_planted``.
    """
    y, cov, sc = _frames(truth, covariates, score)
    if n_folds < 2 or min(y.sum(), (1 - y).sum()) < n_folds:
        msg = f"need n_folds >= 2 and at least n_folds planted and unplanted genes, got {n_folds}"
        raise InputError(msg)
    rng = np.random.default_rng(seed)
    fold = _folds(y, n_folds, rng)
    x0, x1 = _designs(cov, sc, strata, spline_df)
    p0, p1 = _memo((x0, y, fold), lambda: _oof(x0, y, fold)), _oof(x1, y, fold)
    a0, a1 = auroc(p0, y), auroc(p1, y)
    units = np.arange(len(y)) if clusters is None else clusters.reindex(cov.index).astype(str).to_numpy()
    weights = _cluster_weights(units, n_boot, rng)
    d = _boot_auroc(p1, y, weights) - _boot_auroc(p0, y, weights)
    lo, hi = np.nanquantile(d, [alpha / 2, 1 - alpha / 2]) if n_boot else (np.nan, np.nan)
    return {
        "auroc_covariates": a0,
        "auroc_full": a1,
        "delta_auroc": a1 - a0,
        "delta_lo": float(lo),
        "delta_hi": float(hi),
        "n_genes": len(y),
        "n_planted": int(y.sum()),
    }


def _method_row(
    method: str, score: pd.Series, truth: pd.Series, covariates: pd.DataFrame, *, strata: pd.Series,
    clusters: pd.Series | None, model_strata: pd.Series | None, spline_df: int, n_boot: int, seed: int,
    n_folds: int,
) -> dict:  # fmt: skip
    s = score[~score.index.duplicated()].astype(float).dropna()
    genes = s.index.intersection(truth.index).intersection(covariates.dropna().index)
    y, s = truth.reindex(genes).astype(bool), s.reindex(genes)
    row = {"method": method, "uses_labels": LABEL_USE.get(method, (pd.NA,))[0],
           "control": method in NEGATIVE_CONTROLS, "unit": "gene" if clusters is None else "programme block",
           "auroc": auroc(s.to_numpy(), y.to_numpy()),
           "stratified_auroc": stratified_auroc(s, y, strata.reindex(genes))}  # fmt: skip
    kw = {"strata": model_strata, "spline_df": spline_df}
    lrt = nested_lrt(y, covariates.loc[genes], s, clusters=clusters, **kw)
    row |= {k: lrt[k] for k in ("lr_chi2", "lr_df", "lr_pvalue", "coef_score", "wald_pvalue", "n_clusters",
                                "separation", "n_genes", "n_planted")}  # fmt: skip
    row["pvalue"] = lrt["wald_pvalue"] if clusters is not None else lrt["lr_pvalue"]
    d = delta_auroc(
        y, covariates.loc[genes], s, clusters=clusters, n_folds=n_folds, n_boot=n_boot, seed=seed, **kw
    )
    return row | {k: d[k] for k in ("auroc_covariates", "auroc_full", "delta_auroc", "delta_lo", "delta_hi")}


def incremental_table(
    scores: Mapping[str, pd.Series],
    truth: pd.Series,
    covariates: pd.DataFrame,
    *,
    strata: pd.Series,
    clusters: pd.Series | None = None,
    model_strata: pd.Series | None = None,
    spline_df: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
    n_folds: int = 5,
) -> pd.DataFrame:
    """Per method: raw and stratified AUROC, nested LR and cluster Wald tests, ΔAUROC (CI) over covariates.

    Parameters
    ----------
    scores
        ``method -> Series`` (gene → score, higher = more important; NaN = not scored). Methods named
        in `NEGATIVE_CONTROLS` are flagged ``control`` (they must come out null).
    truth
        Boolean per gene (``var["planted"]``).
    covariates
        Gene covariates the score must beat (e.g. ``gene_covariates(adata)[list(FIELD_COVARIATES)]``),
        entered as natural splines with ``spline_df`` df each.
    strata
        Expression stratum per gene for the stratified AUROC.
    clusters
        Resampling unit per gene (`gene_clusters`); ``None``: genes are the units.
    model_strata
        Optional stratum per gene entered in the logistic models as indicators (``var["stratum"]``).
    spline_df, n_boot, seed, n_folds
        As in `delta_auroc`.

    Returns
    -------
    pandas.DataFrame
        `INCREMENTAL_COLUMNS`, one row per method, each over the genes that method scores
        (``n_genes``). ``pvalue`` is the cluster-robust Wald p when clusters are given, else the LR p.
    """
    _NULL_FITS.clear()
    _NULL_FITS[b"on"] = True
    try:
        rows = [_logged(_method_row(method, score, truth, covariates, strata=strata, clusters=clusters,
                                    model_strata=model_strata, spline_df=spline_df, n_boot=n_boot, seed=seed,
                                    n_folds=n_folds)) for method, score in scores.items()]  # fmt: skip
    finally:
        _NULL_FITS.clear()
    return pd.DataFrame(rows, columns=INCREMENTAL_COLUMNS)


def _logged(row: dict) -> dict:
    logger.info(
        "incremental value of %s: p %.3g, ΔAUROC %.3f", row["method"], row["pvalue"], row["delta_auroc"]
    )
    return row
