"""Real PBMC cells with FACS-sorted cell-type labels: scanpy's packaged ``pbmc68k_reduced``, as counts."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from ..errors import InputError
from ._genes import symbol_to_ensembl

__all__ = ["pbmc68k"]

logger = logging.getLogger(__name__)

# recovered counts must lie within 0.05 + 0.0005 * count of an integer: all but one of the 174,400
# nonzeros lie within 0.05; the largest deviation, 0.082, is at a count of 213 (float32 storage)
_ABS_TOL = 0.05
_REL_TOL = 5e-4


def pbmc68k() -> AnnData:
    """Scanpy's ``pbmc68k_reduced`` (700 cells, 10 FACS-sorted types) as canonical raw counts.

    The file ships inside the scanpy wheel (no download). Its ``.X`` is scaled and its ``.raw`` holds
    log1p(CP10k) normalised with each cell's full-transcriptome ``n_counts``, so the integer UMI
    counts are recovered exactly as ``round(expm1(raw.X) * n_counts / 1e4)`` (checked: every value lies
    within 0.05 of an integer but one, 213.08, off by float32 storage; the check allows 0.05 + 0.05 %).

    Only 765 genes are present (about 20 % of each cell's UMIs). ``obs["n_counts"]`` keeps the
    full-transcriptome total given in the file (what Geneformer's rank-value encoding normalises
    by), so it is larger than the row sums of ``X``; ``obs["n_genes"]`` counts the genes detected
    among the 765 (the file's full-transcriptome value is kept as ``obs["n_genes_full"]``).
    ``var["ensembl_id"]`` maps symbols through geneattn's shipped GENCODE v44 table; the 65 (mostly
    outdated, e.g. ``ATP5B``, or clone-based, e.g. ``RP11-...``) symbols not found there keep the
    symbol as id (``var["ensembl_mapped"]`` is False).

    Returns
    -------
    AnnData
        Canonical AnnData, 700 x 765: ``obs``: ``label`` (= ``bulk_labels``), ``n_counts``,
        ``n_genes``, ``n_genes_full``, ``percent_mito``, ``phase``, ``louvain``; ``var``:
        ``ensembl_id``, ``ensembl_mapped``; ``obsm["X_umap"]`` and ``obsm["X_pca"]`` from the file.

    Raises
    ------
    InputError
        If the packaged file does not give integer counts (a changed scanpy dataset).
    """
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = sc.datasets.pbmc68k_reduced()
    lognorm = sp.csr_matrix(src.raw.X, dtype=np.float64)
    n_counts = src.obs["n_counts"].to_numpy(dtype=np.float64)
    counts = lognorm.copy()
    counts.data = np.expm1(counts.data)
    counts = sp.csr_matrix(sp.diags(n_counts / 1e4) @ counts)
    dev = np.abs(counts.data - np.round(counts.data))
    err = float(dev.max(initial=0.0))
    if (dev > _ABS_TOL + _REL_TOL * np.round(counts.data)).any():
        msg = f"pbmc68k_reduced: recovered counts deviate {err:.3f} from integers; the packaged file has changed"
        raise InputError(msg)
    counts.data = np.round(counts.data)
    counts = counts.astype(np.float32)
    counts.eliminate_zeros()

    symbols = src.raw.var_names.astype(str)
    table = symbol_to_ensembl()
    ids = [table.get(s, s) for s in symbols]
    var = pd.DataFrame({K.ENSEMBL_ID: ids, "ensembl_mapped": [s in table for s in symbols]}, index=symbols)
    obs = pd.DataFrame(index=src.obs_names.astype(str))
    obs[K.LABEL] = pd.Categorical(src.obs["bulk_labels"].astype(str))
    obs[K.N_COUNTS] = n_counts
    obs[K.N_GENES] = np.diff(counts.indptr).astype(np.int64)
    obs["n_genes_full"] = src.obs["n_genes"].to_numpy()
    for col in ("percent_mito", "phase", "louvain"):
        obs[col] = src.obs[col].to_numpy()
    adata = AnnData(
        X=counts,
        obs=obs,
        var=var,
        obsm={k: np.asarray(src.obsm[k]) for k in ("X_umap", "X_pca")},
        uns={"pbmc68k": {"params": {"source": "scanpy.datasets.pbmc68k_reduced", "max_rounding_error": err}}},
    )
    logger.info("pbmc68k: %d cells x %d genes, %d cell types", *adata.shape, len(obs[K.LABEL].cat.categories))
    return adata
