"""Gene-level baselines the field reports next to attention, and which scores use the labels.

`gene_covariates` computes, from raw counts only (no labels), the trivial gene scores that an
attention score has to beat (arXiv 2602.17532; statistics review 2026-12 §3.2):

* ``mean_count``: mean raw UMI count per cell.
* ``log_mean``: ``log(mean_count + 0.5 / n_cells)`` (half a count over the whole data set as pseudo
  count, so never-detected genes stay finite).
* ``detection``: share of cells with a nonzero count (1 − dropout rate).
* ``logit_detection``: ``log((k + 0.5) / (n − k + 0.5))`` with ``k`` detecting cells of ``n``.
* ``variance``: variance (ddof 1) over cells of the log-normalised expression
  ``log1p(count / n_counts · target_sum)``.
* ``log_variance``: ``log(variance)``, zero variances floored at half the smallest positive one.
* ``hvg_residual``: HVG dispersion residual: ``log`` variance of the normalised counts
  ``count / n_counts · target_sum`` minus its least-squares quadratic trend in ``log`` mean of
  the normalised counts, fitted over the genes with nonzero variance (the mean–variance trend that
  Seurat's ``vst`` and scanpy's ``seurat_v3`` remove with loess; a quadratic is smooth enough for the
  few thousand genes here and has no span to tune). Genes with zero variance get 0 (on the trend).

Every column is "higher = more of it"; none uses the labels. `uses_labels` is the method table's
register of which gene scores do: DE is the label-using oracle.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ..errors import InputError

__all__ = [
    "gene_covariates",
    "uses_labels",
    "COVARIATE_COLUMNS",
    "LEVEL_COVARIATES",
    "FIELD_COVARIATES",
    "LABEL_USE",
]

logger = logging.getLogger(__name__)

COVARIATE_COLUMNS = [
    "mean_count",
    "log_mean",
    "detection",
    "logit_detection",
    "variance",
    "log_variance",
    "hvg_residual",
]
#: expression level only: what "attention is expression level" is tested against
LEVEL_COVARIATES = ("log_mean", "logit_detection")
#: the field's trivial baselines together (level + variability)
FIELD_COVARIATES = ("log_mean", "logit_detection", "log_variance", "hvg_residual")

#: name -> (uses labels, how); names follow the methods table of `stats.run` and the covariates above
LABEL_USE: dict[str, tuple[bool, str]] = {
    "mean_count": (False, "raw counts"),
    "log_mean": (False, "raw counts"),
    "detection": (False, "raw counts"),
    "logit_detection": (False, "raw counts"),
    "variance": (False, "log-normalised counts"),
    "log_variance": (False, "log-normalised counts"),
    "hvg_residual": (False, "normalised counts"),
    "mean_rank": (False, "token ranks"),
    "attention_pretrained": (False, "masked-LM weights; no labels"),
    "attention": (True, "fine-tuned weights were trained on the training cells' labels"),
    **{
        f"attention_{kind}": (True, "fine-tuned weights were trained on the training cells' labels")
        for kind in ("raw", "fold", "residual", "adjusted", "norm")
    },  # fmt: skip
    "mean_expression": (False, "raw counts"),
    "rollout": (True, "fine-tuned weights"),
    "grad_input": (True, "fine-tuned weights; gradient of the true label's logit"),
    "integrated_gradients": (True, "fine-tuned weights; gradient of the true label's logit"),
    "deletion_prob": (True, "fine-tuned weights; probability of the true label"),
    "deletion_cosine": (True, "fine-tuned weights"),
    "de": (True, "oracle: contrasts the cells' dose labels directly"),
}


def uses_labels(methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Which gene scores use the class labels (for the method table).

    Parameters
    ----------
    methods
        Score names (the methods table's ``method`` column or `COVARIATE_COLUMNS`); ``None`` for
        every registered score. ``attention`` means the fine-tuned model's attention,
        ``attention_pretrained`` the masked-LM model's.

    Returns
    -------
    pandas.DataFrame
        Index ``method``; columns ``uses_labels`` (bool) and ``how`` (one line: through what).
    """
    names = list(LABEL_USE) if methods is None else list(methods)
    unknown = [m for m in names if m not in LABEL_USE]
    if unknown:
        msg = f"no label-use entry for {unknown}; known scores: {sorted(LABEL_USE)}"
        raise InputError(msg)
    return pd.DataFrame(
        [LABEL_USE[m] for m in names], index=pd.Index(names, name="method"), columns=["uses_labels", "how"]
    )


def _csr_counts(adata: AnnData, layer: str | None) -> sp.csr_matrix:
    if layer is not None and layer not in adata.layers:
        msg = f"layers has no {layer!r}; available: {list(adata.layers)}"
        raise InputError(msg)
    x = adata.X if layer is None else adata.layers[layer]
    x = sp.csr_matrix(x, dtype=np.float64)
    if x.data.size and (x.data.min() < 0 or not np.all(np.isfinite(x.data))):
        msg = "counts must be finite and non-negative; pass raw counts in X or name the counts layer"
        raise InputError(msg)
    if x.shape[0] < 2:
        msg = f"gene covariates need at least 2 cells, got {x.shape[0]}"
        raise InputError(msg)
    return x


def _col_mean_var(x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and variance (ddof 1) of a sparse matrix."""
    n = x.shape[0]
    mean = np.asarray(x.mean(axis=0)).ravel()
    sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
    return mean, np.maximum(sq - mean**2, 0.0) * n / (n - 1)


def _hvg_residual(norm_mean: np.ndarray, norm_var: np.ndarray) -> np.ndarray:
    out = np.zeros_like(norm_mean)
    ok = norm_var > 0
    if ok.sum() < 3:
        return out
    lm, lv = np.log(norm_mean[ok]), np.log(norm_var[ok])
    coef = np.polyfit(lm, lv, 2)
    out[ok] = lv - np.polyval(coef, lm)
    return out


def gene_covariates(adata: AnnData, *, layer: str | None = None, target_sum: float = 1e4) -> pd.DataFrame:
    """Gene-level covariates from raw counts (see the module docstring for each column).

    Parameters
    ----------
    adata
        AnnData with raw counts in ``X`` or in ``layers[layer]``; cells with zero counts are kept
        (they add zeros to every gene).
    layer
        Layer holding the raw counts (e.g. ``"counts"``); ``None`` reads ``X``.
    target_sum
        Counts per cell after normalisation (``variance`` and ``hvg_residual``).

    Returns
    -------
    pandas.DataFrame
        Index: ``adata.var_names``; columns `COVARIATE_COLUMNS`.
    """
    x = _csr_counts(adata, layer)
    n = x.shape[0]
    libsize = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target_sum, libsize, out=np.zeros_like(libsize), where=libsize > 0)
    norm = sp.diags(scale) @ x  # CP10k, cells x genes
    lognorm = norm.copy()
    lognorm.data = np.log1p(lognorm.data)
    mean = np.asarray(x.mean(axis=0)).ravel()
    k = np.diff(x.tocsc().indptr).astype(np.float64)
    _, variance = _col_mean_var(lognorm)
    norm_mean, norm_var = _col_mean_var(norm)
    pos = variance[variance > 0]
    floor = pos.min() / 2 if pos.size else 1.0
    out = pd.DataFrame(
        {
            "mean_count": mean,
            "log_mean": np.log(mean + 0.5 / n),
            "detection": k / n,
            "logit_detection": np.log((k + 0.5) / (n - k + 0.5)),
            "variance": variance,
            "log_variance": np.log(np.maximum(variance, floor)),
            "hvg_residual": _hvg_residual(norm_mean, norm_var),
        },
        index=pd.Index(adata.var_names, name="gene"),
    )
    logger.info("gene covariates of %d genes over %d cells", out.shape[0], n)
    return out
