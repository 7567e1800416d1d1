"""Flexible covariate designs and cluster units for the incremental-value tests.

* `natural_spline_basis`: the natural (restricted) cubic spline basis of one covariate (Harrell's
  truncated-power form: linear beyond the outer knots), ``df`` columns, knots at fixed quantiles.
  Equivalent in span to patsy's ``cr(x, df)`` up to the intercept; written in numpy.
* `flexible_design`: intercept + a spline of every covariate + stratum indicators. A score that is a
  smooth transform of the covariates (detection from the mean, variance, ...) then adds nothing,
  where the linear-logit design let such transforms "add information".
* `gene_clusters`: the resampling unit of each gene. In the simulator (`geneattn.datasets.nutlin_sim`)
  the p53 targets share the pulse programme, the cell-cycle genes the proliferating programme, and
  their decoys the twin programmes: each programme is one cluster. Other genes cluster by matched set
  (a planted gene and its decoys); references and genes of real data are their own clusters.
* `cluster_wald`: cluster-robust (sandwich, CR1) Wald test of one logistic coefficient.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special, stats

__all__ = ["natural_spline_basis", "flexible_design", "gene_clusters", "cluster_wald", "PROGRAMME_BLOCKS"]

#: simulator programmes whose genes share one programme-level fluctuation: one cluster each
PROGRAMME_BLOCKS = ("p53_pulse", "decoy_pulse", "cell_cycle", "decoy_cycle")


def natural_spline_basis(x: np.ndarray, df: int = 5) -> np.ndarray:
    """Natural cubic spline basis ``[n, <= df]`` of ``x`` (no intercept column).

    ``df + 1`` knots at equally spaced quantiles, the boundary knots at the minimum and maximum (as
    patsy's ``cr``); the first column is ``x`` itself, the others are the restricted cubic terms
    scaled by ``(t_K − t_1)²``. Fewer distinct knots (discrete ``x``) give
    fewer columns; ``df = 1`` or a constant ``x`` gives ``x`` alone.
    """
    x = np.asarray(x, dtype=float)
    if df <= 1 or len(np.unique(x)) < 4:
        return x[:, None]
    t = np.unique(np.quantile(x, np.linspace(0.0, 1.0, df + 1)))
    if len(t) < 3:
        return x[:, None]
    k, scale = len(t), (t[-1] - t[0]) ** 2

    def cube(v: np.ndarray) -> np.ndarray:
        return np.clip(v, 0.0, None) ** 3

    cols = [x]
    for j in range(k - 2):
        term = (
            cube(x - t[j])
            - cube(x - t[k - 2]) * (t[k - 1] - t[j]) / (t[k - 1] - t[k - 2])
            + cube(x - t[k - 1]) * (t[k - 2] - t[j]) / (t[k - 1] - t[k - 2])
        )
        cols.append(term / scale)
    return np.column_stack(cols)


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std(axis=0)
    return np.divide(x - x.mean(axis=0), sd, out=np.zeros_like(x), where=sd > 0)


def flexible_design(covariates: pd.DataFrame, strata: pd.Series | None = None, *, df: int = 5) -> np.ndarray:
    """Intercept, z-scored natural-spline bases of every covariate (``df`` each) and stratum dummies.

    ``df = 1`` is the linear design (z-scored covariates). The stratum of the first level is the
    reference; strata must be aligned with ``covariates``' rows.
    """
    parts = [np.ones((len(covariates), 1))]
    for col in covariates.columns:
        parts.append(_z(natural_spline_basis(covariates[col].to_numpy(dtype=float), df)))
    if strata is not None:
        codes = pd.factorize(np.asarray(strata))[0]
        levels = np.unique(codes)
        parts.append((codes[:, None] == levels[None, 1:]).astype(float))
    return np.column_stack(parts)


def gene_clusters(var: pd.DataFrame | None, genes: pd.Index) -> pd.Series:
    """Cluster label per gene: programme block, else ``set:<matched_set>``, else the gene itself."""
    out = pd.Series(genes.astype(str), index=genes)
    if var is None:
        return out
    v = var.reindex(genes)
    if "matched_set" in v:
        ms = pd.to_numeric(v["matched_set"], errors="coerce")
        out = out.where(~(ms >= 0), "set:" + ms.astype("Int64").astype(str))
    if "program" in v:
        prog = v["program"].astype(str)
        out = out.where(~prog.isin(PROGRAMME_BLOCKS), prog)
    return out


def cluster_wald(
    x: np.ndarray, y: np.ndarray, beta: np.ndarray, column: int, clusters: np.ndarray
) -> tuple[float, float, int]:
    """``(z, p, n_clusters)``: cluster-robust Wald test of ``beta[column]`` of a logistic fit.

    Sandwich variance ``G/(G−1) · H⁻¹ (Σ_g u_g u_gᵀ) H⁻¹`` with ``u_g`` the cluster sums of the
    score contributions; p from a t distribution with ``G − 1`` df (NaN with fewer than 3 clusters).
    """
    p = special.expit(x @ beta)
    hess = x.T @ (x * (p * (1.0 - p))[:, None])
    bread = np.linalg.pinv(hess)
    codes = pd.factorize(np.asarray(clusters))[0]
    g = int(codes.max()) + 1 if len(codes) else 0
    if g < 3:
        return float("nan"), float("nan"), g
    u = np.zeros((g, x.shape[1]))
    np.add.at(u, codes, x * (y - p)[:, None])
    var = g / (g - 1) * (bread @ (u.T @ u) @ bread)[column, column]
    if not var > 0:
        return float("nan"), float("nan"), g
    z = float(beta[column] / np.sqrt(var))
    return z, float(2 * stats.t.sf(abs(z), g - 1)), g
