"""Differential expression: QC/log-normalisation, per-cell Wilcoxon (scanpy), pseudobulk, UMAP.

Per-cell tests treat cells as independent replicates; cells from one well share a library
preparation, so per-cell p-values are inflated (scanpy's own docstring warns of this). Use
`pseudobulk` (sum counts per well/replicate, test across wells) for calibrated p-values and keep
the per-cell ranking as a gene *score*.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from .._classes import sort_classes
from .._keys import ENSEMBL_ID, LABEL, REPLICATE, WELL
from ..errors import InputError

__all__ = ["normalize", "rank_genes", "de_df", "pseudobulk", "study_de", "umap", "DE_COLUMNS"]

logger = logging.getLogger(__name__)

DE_COLUMNS = [
    "group",
    "reference",
    "gene",
    "ensembl_id",
    "score",
    "logfoldchange",
    "pval",
    "pval_adj",
    "rank",
]
COUNTS_LAYER = "counts"
LOGNORM_LAYER = "lognorm"


def _counts(adata: AnnData) -> sp.csr_matrix | np.ndarray:
    return adata.layers[COUNTS_LAYER] if COUNTS_LAYER in adata.layers else adata.X


def normalize(
    adata: AnnData,
    *,
    target_sum: float = 1e4,
    layer: str = LOGNORM_LAYER,
    min_genes: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """QC metrics and log-normalisation into a layer; ``X`` (raw counts) is left untouched.

    Parameters
    ----------
    adata
        Canonical AnnData with raw counts in ``X``.
    target_sum
        Counts per cell after normalisation (``sc.pp.normalize_total``).
    layer
        Layer that receives ``log1p(normalize_total(counts))``.
    min_genes
        Cells with fewer expressed genes are flagged ``obs["qc_pass"] = False`` (not removed).
    copy
        Return a copy instead of modifying ``adata``.

    Returns
    -------
    ``None`` or a copy. Sets ``layers["counts"]`` (raw counts, if absent), ``layers[layer]``,
    ``obs["n_counts"]``, ``obs["n_genes"]``, ``obs["qc_pass"]`` and ``uns["normalize"]["params"]``.
    """
    import scanpy as sc

    adata = adata.copy() if copy else adata
    counts = _counts(adata)
    if COUNTS_LAYER not in adata.layers:
        adata.layers[COUNTS_LAYER] = counts.copy()
    data = counts.data if sp.issparse(counts) else np.asarray(counts)
    if data.size and (np.any(data < 0) or not np.all(np.isfinite(data))):
        msg = "counts must be finite and non-negative; pass raw counts in X or layers['counts']"
        raise InputError(msg)
    n_counts = np.asarray(counts.sum(axis=1)).ravel()
    n_genes = np.asarray((counts > 0).sum(axis=1)).ravel()
    adata.obs["n_counts"] = n_counts.astype(np.float64)
    adata.obs["n_genes"] = n_genes.astype(np.int64)
    adata.obs["qc_pass"] = n_genes >= min_genes
    tmp = AnnData(
        X=sp.csr_matrix(counts, dtype=np.float32) if sp.issparse(counts) else np.asarray(counts, np.float32)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.normalize_total(tmp, target_sum=target_sum)
        sc.pp.log1p(tmp)
    adata.layers[layer] = tmp.X
    adata.uns["normalize"] = {
        "params": {"target_sum": float(target_sum), "layer": layer, "min_genes": int(min_genes)}
    }
    logger.info("log-normalised counts into layers[%r]", layer)
    return adata if copy else None


def rank_genes(
    adata: AnnData,
    groupby: str = LABEL,
    *,
    method: Literal["wilcoxon", "t-test", "t-test_overestim_var", "logreg"] = "wilcoxon",
    reference: str = "rest",
    layer: str | None = LOGNORM_LAYER,
    key_added: str = "de",
    copy: bool = False,
) -> AnnData | None:
    """Per-cell differential expression of every class (wraps `scanpy.tl.rank_genes_groups`).

    Parameters
    ----------
    adata
        AnnData; log-normalised values are read from ``layers[layer]`` (computed with `normalize`
        when the layer is missing).
    groupby
        ``.obs`` column with the classes.
    method
        scanpy test; ``"wilcoxon"`` by default.
    reference
        ``"rest"`` (one-vs-rest) or a class (each other class vs it).
    layer
        Log-normalised layer (``None`` uses ``X``, which must then be log-normalised).
    key_added
        ``.uns`` key of the result.
    copy
        Return a copy.

    Returns
    -------
    ``None`` or a copy. Sets ``uns[key_added]`` (scanpy's structure) with
    ``uns[key_added]["params"]`` extended by ``layer``; read it with `de_df`. Per-cell p-values
    are inflated (cells are not independent replicates); see `pseudobulk`.
    """
    import scanpy as sc

    adata = adata.copy() if copy else adata
    if groupby not in adata.obs:
        msg = f"obs has no column {groupby!r}; available: {list(adata.obs.columns)}"
        raise InputError(msg)
    if layer is not None and layer not in adata.layers:
        normalize(adata, layer=layer)
    groups = adata.obs[groupby].astype(str)
    if groups.nunique() < 2:
        msg = f"obs[{groupby!r}] has fewer than 2 classes; differential expression needs at least 2"
        raise InputError(msg)
    if reference != "rest" and reference not in set(groups):
        msg = f"reference {reference!r} is not a class of obs[{groupby!r}] ({sorted(set(groups))})"
        raise InputError(msg)
    obs_col = groupby
    if not isinstance(adata.obs[groupby].dtype, pd.CategoricalDtype):
        obs_col = f"_{groupby}_cat"
        adata.obs[obs_col] = pd.Categorical(groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.rank_genes_groups(
            adata,
            obs_col,
            method=method,
            reference=reference,
            layer=layer,
            use_raw=False,
            key_added=key_added,
        )
    if obs_col != groupby:
        del adata.obs[obs_col]
    params = dict(adata.uns[key_added]["params"])
    params.update({"groupby": groupby, "layer": layer if layer is not None else "X"})
    adata.uns[key_added]["params"] = params
    logger.info("rank_genes: added uns[%r] (%s, reference=%s)", key_added, method, reference)
    return adata if copy else None


def de_df(adata: AnnData, key: str = "de", *, group: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Tidy table of a `rank_genes` result.

    Returns
    -------
    DataFrame with columns ``group, reference, gene, ensembl_id, score, logfoldchange, pval,
    pval_adj, rank`` (rank 1 = highest score within the group).
    """
    import scanpy as sc

    if key not in adata.uns:
        msg = f"uns has no DE result {key!r}; run stats.rank_genes(adata, key_added={key!r}) first"
        raise InputError(msg)
    df = sc.get.rank_genes_groups_df(adata, group=group, key=key)
    if "group" not in df:
        names = adata.uns[key]["names"].dtype.names
        df.insert(0, "group", group if isinstance(group, str) else names[0])
    df = df.rename(
        columns={
            "names": "gene",
            "scores": "score",
            "logfoldchanges": "logfoldchange",
            "pvals": "pval",
            "pvals_adj": "pval_adj",
        }
    )
    df["group"] = df["group"].astype(str)
    df["rank"] = df.groupby("group", sort=False).cumcount() + 1
    df["reference"] = str(adata.uns[key]["params"].get("reference", "rest"))
    ens = (
        adata.var[ENSEMBL_ID]
        if ENSEMBL_ID in adata.var
        else pd.Series(adata.var_names, index=adata.var_names)
    )
    df["ensembl_id"] = ens.reindex(df["gene"].to_numpy()).astype(str).to_numpy()
    if "logfoldchange" not in df:
        df["logfoldchange"] = np.nan
    return df[DE_COLUMNS].reset_index(drop=True)


def _unit_key(adata: AnnData, unit: str | None) -> str:
    if unit is not None:
        if unit not in adata.obs:
            msg = f"obs has no unit column {unit!r}"
            raise InputError(msg)
        return unit
    for k in (WELL, REPLICATE):
        if k in adata.obs:
            return k
    msg = "pseudobulk needs obs['well'] or obs['replicate'] (or pass unit=)"
    raise InputError(msg)


def pseudobulk(
    adata: AnnData,
    groupby: str = LABEL,
    *,
    unit: str | None = None,
    test: Literal["welch", "wilcoxon"] = "welch",
    reference: str = "rest",
    min_cells: int = 1,
) -> pd.DataFrame:
    """Pseudobulk differential expression across wells/replicates.

    Counts are summed per (class, unit), converted to ``log1p(CPM)``, and each class is tested
    against the rest (or ``reference``) across units with a per-gene Welch t-test or Wilcoxon
    rank-sum test. Units, not cells, are the replicates, so p-values are not inflated by the
    correlation of cells from one well (unlike per-cell tests).

    Parameters
    ----------
    adata
        Canonical AnnData (raw counts in ``layers["counts"]`` or ``X``).
    groupby
        Class column.
    unit
        Replicate column; default ``"well"`` then ``"replicate"``.
    test
        ``"welch"`` (`scipy.stats.ttest_ind`, unequal variances) or ``"wilcoxon"``
        (`scipy.stats.mannwhitneyu`).
    reference
        ``"rest"`` or a class.
    min_cells
        Units with fewer cells are dropped.

    Returns
    -------
    DataFrame with the `de_df` columns plus ``n_units``, ``n_units_ref``; ``logfoldchange`` is
    log2 of the ratio of mean CPM (+1). ``pval_adj`` is Benjamini–Hochberg within each group.
    """
    ukey = _unit_key(adata, unit)
    sums, ugroup = _unit_sums(adata, groupby, ukey, min_cells)
    lib = sums.sum(axis=1, keepdims=True)
    lib[lib == 0] = 1.0
    cpm = sums / lib * 1e6
    logcpm = np.log1p(cpm)
    groups = sorted(set(ugroup)) if reference == "rest" else sorted(set(ugroup) - {reference})
    ens = (
        adata.var[ENSEMBL_ID].astype(str).to_numpy()
        if ENSEMBL_ID in adata.var
        else np.asarray(adata.var_names)
    )
    out = []
    for g in groups:
        ref = ugroup != g if reference == "rest" else ugroup == reference
        a, b = logcpm[ugroup == g], logcpm[ref]
        if len(a) < 2 or len(b) < 2:
            msg = f"pseudobulk: class {g!r} or its reference has fewer than 2 units ({len(a)}, {len(b)}) of {ukey!r}"
            raise InputError(msg)
        score, pval = _unit_test(a, b, test)
        ca, cb = cpm[ugroup == g].mean(0), cpm[ref].mean(0)
        df = pd.DataFrame({"group": g, "reference": reference, "gene": np.asarray(adata.var_names), "ensembl_id": ens,
                           "score": score, "logfoldchange": np.log2((ca + 1) / (cb + 1)), "pval": pval,
                           "pval_adj": stats.false_discovery_control(pval, method="bh"), "n_units": len(a),
                           "n_units_ref": len(b)})  # fmt: skip
        df = df.sort_values("score", ascending=False, kind="stable")
        df["rank"] = np.arange(1, len(df) + 1)
        out.append(df)
    res_df = pd.concat(out, ignore_index=True)[[*DE_COLUMNS, "n_units", "n_units_ref"]]
    res_df.attrs["params"] = {"groupby": groupby, "unit": ukey, "test": test, "reference": reference,
                              "min_cells": min_cells}  # fmt: skip
    return res_df


def _unit_sums(adata: AnnData, groupby: str, ukey: str, min_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts summed per (class, unit) ``[units, genes]`` and each unit's class (units with >= min_cells)."""
    obs = pd.DataFrame(
        {"g": adata.obs[groupby].astype(str).to_numpy(), "u": adata.obs[ukey].astype(str).to_numpy()}
    )
    codes, uniq = pd.factorize(obs["g"] + "\x1f" + obs["u"])
    n_units = len(uniq)
    ind = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(n_units, len(codes)))
    sums = np.asarray((ind @ sp.csr_matrix(_counts(adata))).todense(), dtype=np.float64)
    keep = np.bincount(codes, minlength=n_units) >= min_cells
    return sums[keep], np.array([u.split("\x1f")[0] for u in uniq[keep]])


def _unit_test(a: np.ndarray, b: np.ndarray, test: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene score (Welch t, or U centred so its sign says up/down) and p-value, units as replicates."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if test == "welch":
            res = stats.ttest_ind(a, b, axis=0, equal_var=False)
        else:
            res = stats.mannwhitneyu(a, b, axis=0, alternative="two-sided")
    score = np.nan_to_num(np.asarray(res.statistic, dtype=float))
    if test == "wilcoxon":
        score = score - len(a) * len(b) / 2
    pval = np.asarray(res.pvalue, dtype=float)
    return score, np.where(np.isfinite(pval), pval, 1.0)


def study_de(adata: AnnData, *, groupby: str = LABEL, reference: str | None = None) -> pd.DataFrame:
    """The study's DE table: per-cell Wilcoxon one-vs-rest and vs the reference class, plus pseudobulk.

    Parameters
    ----------
    adata
        Raw counts in ``X``; gains ``layers["lognorm"]``, ``uns["de"]`` and ``uns["de_ref"]``.
    groupby
        obs column with the classes.
    reference
        Reference class of ``wilcoxon_ref`` (default: the first class in `sort_classes` order).

    Returns
    -------
    The tidy DE table: `DE_COLUMNS` plus ``method`` in {``wilcoxon``, ``wilcoxon_ref``, ``pseudobulk``}.
    The per-cell tests take cells as units (inflated p-values); ``pseudobulk`` (wells or replicates as
    units) is added where the obs have them.
    """
    rank_genes(adata, groupby, key_added="de")
    parts = [de_df(adata, "de").assign(method="wilcoxon")]
    ref = reference if reference is not None else sort_classes(adata.obs[groupby])[0]
    rank_genes(adata, groupby, reference=ref, key_added="de_ref")
    parts.append(de_df(adata, "de_ref").assign(method="wilcoxon_ref"))
    if WELL in adata.obs or REPLICATE in adata.obs:
        try:
            pb = pseudobulk(adata, groupby).drop(columns=["n_units", "n_units_ref"])
            parts.append(pb.assign(method="pseudobulk"))
        except InputError as e:
            logger.warning("pseudobulk DE skipped: %s", e)
    return pd.concat(parts, ignore_index=True)


def umap(
    adata: AnnData,
    *,
    seed: int = 0,
    layer: str = LOGNORM_LAYER,
    n_pcs: int = 30,
    n_neighbors: int = 15,
    copy: bool = False,
) -> AnnData | None:
    """PCA → neighbours → UMAP with scanpy (the study's Fig. 2).

    Parameters
    ----------
    adata
        AnnData; ``layers[layer]`` log-normalised (computed with `normalize` if missing).
    seed
        Random state of PCA, neighbours and UMAP.
    layer
        Input layer.
    n_pcs
        Principal components (capped by the data size).
    n_neighbors
        Neighbours of the kNN graph.
    copy
        Return a copy.

    Returns
    -------
    ``None`` or a copy. Sets ``obsm["X_pca"]``, ``obsm["X_umap"]``, ``obsp`` neighbour graphs and
    ``uns["umap"]["params"]`` (with ``seed``, ``n_pcs``, ``n_neighbors``, ``layer``).
    """
    import scanpy as sc

    adata = adata.copy() if copy else adata
    if layer not in adata.layers:
        normalize(adata, layer=layer)
    n_comps = int(max(2, min(n_pcs, adata.n_obs - 1, adata.n_vars - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.pca(adata, n_comps=n_comps, layer=layer, random_state=seed)
        sc.pp.neighbors(
            adata, n_neighbors=min(n_neighbors, adata.n_obs - 1), n_pcs=n_comps, random_state=seed
        )
        sc.tl.umap(adata, random_state=seed)
    params = dict(adata.uns.get("umap", {}).get("params", {}))
    params.update({"seed": seed, "n_pcs": n_comps, "n_neighbors": n_neighbors, "layer": layer})
    adata.uns["umap"] = {"params": params}
    logger.info("umap: added obsm['X_pca'], obsm['X_umap']")
    return adata if copy else None
