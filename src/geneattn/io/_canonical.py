"""Canonicalise any supported AnnData to the contract of design.md ("Canonical AnnData")."""

from __future__ import annotations

import difflib
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.utils import make_index_unique

from .. import _keys as K
from ..errors import InputError, one_line
from ._ensembl import looks_ensembl, strip_ensembl_version
from ._groups import normalize_dose, parse_groups, same_class
from ._layouts import LAYOUTS, Layout, detect_layout, plate_from_well, replicate_from_well, sciplex_obs
from ._read import read_h5ad
from ._sparse import validate_sparse, validate_sparse_group
from ._validate import count_matrix, validate_counts

__all__ = ["canonicalize", "load"]

logger = logging.getLogger(__name__)

_SYMBOL_KEYS = ("gene_symbols", "gene_symbol", "feature_name", "gene_name", "symbol", "gene_short_name")


def _float_ok(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _labels(
    adata: AnnData, layout: Layout, label_key: str, perturbation: str | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Obs additions (label, and for sci-Plex: perturbation, dose, well) and the cells kept."""
    obs = adata.obs
    keep = np.ones(adata.n_obs, dtype=bool)
    extra = pd.DataFrame(index=obs.index)
    if layout.drug_key is not None:
        extra, keep = sciplex_obs(adata, layout, perturbation=perturbation)
        if label_key == K.LABEL and K.LABEL not in obs:
            if perturbation is None:
                drugs = sorted(extra["perturbation"].dropna().unique())
                msg = (
                    f"this {layout.name} sci-Plex file holds the drugs {drugs}; choose one with "
                    f"perturbation='{drugs[0] if drugs else 'Nutlin'}' (CLI --perturbation), whose dose becomes the label"
                )
                raise InputError(msg)
            extra[K.LABEL] = extra["dose"]
            return extra, keep
    elif perturbation is not None:
        key = next((k for k in ("perturbation", "drug", "condition") if k in obs), None)
        if key is None:
            msg = f"perturbation={perturbation!r} given but obs has no 'perturbation' or 'drug' column; found {list(obs.columns)}"
            raise InputError(msg)
        from ._layouts import match_value

        values = obs[key].astype("object")
        chosen = match_value(
            str(perturbation), sorted(values.dropna().astype(str).unique()), what="perturbation"
        )
        keep &= (values.astype(str) == chosen).to_numpy()
    if label_key not in obs and label_key not in extra:
        close = difflib.get_close_matches(label_key, [str(c) for c in obs.columns], n=3, cutoff=0.5)
        hint = f" Did you mean {close}?" if close else ""
        msg = f"label column {label_key!r} not found in obs.{hint} Available columns: {list(obs.columns)}"
        raise InputError(msg)
    source = extra[label_key] if label_key in extra else obs[label_key]
    extra[K.LABEL] = source.astype("object").where(source.notna(), other=None)
    return extra, keep


def _select_classes(label: pd.Series, classes: Sequence[str] | None) -> tuple[pd.Series, list[str]]:
    """Normalise dose-like labels, keep the requested classes; returns labels (None = dropped), categories."""
    present = sorted({str(v) for v in label.dropna()})
    numeric = bool(present) and all(_float_ok(v) for v in present)
    lab = label.map(lambda v: None if v is None else (normalize_dose(v) if numeric else str(v)))
    present = sorted(set(lab.dropna()), key=(lambda v: float(v)) if numeric else None)
    if classes is None:
        cats = present
        if isinstance(label.dtype, pd.CategoricalDtype) and not numeric:
            cats = [str(c) for c in label.cat.categories if str(c) in set(present)]
        return lab, cats
    if isinstance(classes, str):
        classes = [c for c in classes.split(",") if c.strip()]
    cats = []
    for c in classes:
        match = next((p for p in present if same_class(str(c).strip(), p)), None)
        if match is None:
            msg = f"class {c!r} not found in the labels; available classes: {present}"
            raise InputError(msg)
        if match not in cats:
            cats.append(match)
    return lab.where(lab.isin(cats), other=None), cats


def _gene_ids(var: pd.DataFrame, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """Symbols and version-less Ensembl ids from var (names or columns)."""
    names = var.index.astype(str).to_numpy()
    if len(names) and np.mean([looks_ensembl(n) for n in names]) > 0.5:
        ids = names
        key = next((k for k in _SYMBOL_KEYS if k in var), None)
        symbols = var[key].astype(str).to_numpy() if key else names.copy()
    else:
        symbols = names
        key = next((k for k in layout.ensembl_keys if k in var), None)
        if key is None:
            logger.warning(
                "no Ensembl id column in var (tried %s); using gene symbols as gene ids",
                list(layout.ensembl_keys),
            )
            ids = names.copy()
        else:
            col = var[key].astype("object")
            ids = np.where(col.isna() | (col.astype(str).str.strip() == ""), names, col.astype(str)).astype(
                object
            )
    ids = strip_ensembl_version(str(i).strip() for i in ids)
    return symbols.astype(object), ids


def _dedupe_ids(X: sp.csr_matrix, ids: np.ndarray, symbols: np.ndarray, duplicate_ids: str):
    """Resolve genes sharing an Ensembl id: drop all-zero copies, then error / sum / keep the first.

    Returns the new matrix and the indices of the kept genes.
    """
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if not dup.any():
        return X, np.arange(len(ids))
    totals = np.asarray(X.sum(axis=0)).ravel()
    drop = np.zeros(len(ids), dtype=bool)
    conflicts = []
    for gid in pd.unique(ids[dup]):
        idx = np.flatnonzero(ids == gid)
        live = idx[totals[idx] > 0]
        if len(live) <= 1:  # keep the copy with counts (or the first), drop empty duplicates (e.g. PAR_Y)
            keep_one = live[0] if len(live) else idx[0]
            drop[idx[idx != keep_one]] = True
        else:
            conflicts.append((gid, idx))
    n_empty = int(drop.sum())
    if n_empty:
        logger.info("dropped %d all-zero genes whose Ensembl id is duplicated", n_empty)
    if conflicts:
        if duplicate_ids == "error":
            ex = ", ".join(f"{g} ({'/'.join(symbols[i])})" for g, i in conflicts[:5])
            msg = (
                f"{len(conflicts)} Ensembl ids are duplicated across genes with counts, e.g. {ex}; pass "
                "duplicate_ids='sum' to add their counts (as Geneformer's tokenizer does) or 'first' to keep the first"
            )
            raise InputError(msg)
        for _, idx in conflicts:
            drop[idx[1:]] = True
        if duplicate_ids == "sum":
            # gene-merge matrix M (old genes x kept genes): every gene adds into its id's kept copy
            kept = np.flatnonzero(~drop)
            target = pd.Series(np.arange(len(kept)), index=ids[kept])[ids].to_numpy()
            M = sp.csr_matrix(
                (np.ones(len(ids), np.float32), (np.arange(len(ids)), target)), shape=(len(ids), len(kept))
            )
            logger.info("summed the counts of %d duplicated Ensembl ids", len(conflicts))
            return (X @ M).tocsr(), kept
        logger.info("kept the first of %d duplicated Ensembl ids", len(conflicts))
    kept = np.flatnonzero(~drop)
    return X[:, kept], kept


def _to_counts(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float32) if not sp.issparse(X) else sp.csr_matrix(X).astype(np.float32)
    np.round(X.data, out=X.data)  # validated within INTEGER_TOL of integers; store exact integers
    X.eliminate_zeros()
    X.sort_indices()
    return X


def _n_counts(obs: pd.DataFrame, layout: Layout, row_sums: np.ndarray) -> np.ndarray:
    """Keep a stated total (full-transcriptome depth, as Geneformer uses) if it covers the counts in X."""
    for key in dict.fromkeys((K.N_COUNTS, layout.counts_key)):
        if key and key in obs:
            given = pd.to_numeric(obs[key], errors="coerce").to_numpy(dtype=float)
            if np.isfinite(given).all() and (given >= row_sums - 0.5).all():
                return given
            logger.info("obs[%r] does not cover the counts in X; n_counts recomputed from X", key)
    return row_sums


def canonicalize(
    adata: AnnData,
    *,
    label_key: str = K.LABEL,
    perturbation: str | None = None,
    classes: Sequence[str] | None = None,
    groups: str | Mapping[str, Sequence[str]] | None = None,
    min_cells_per_class: int = 10,
    layout: Literal["auto", "canonical", "scperturb", "kaggle"] = "auto",
    layer: str | None = None,
    duplicate_ids: Literal["error", "sum", "first"] = "error",
) -> AnnData:
    """Bring an AnnData (in memory or backed) to geneattn's canonical form.

    Selects cells (one perturbation, the requested classes), checks the counts, harmonises gene ids
    and labels, and drops empty cells (logged; an error if all are empty).

    Parameters
    ----------
    adata
        Input data; a backed AnnData is read only for the selected cells.
    label_key
        obs column with the class to predict. For sci-Plex layouts the default ``"label"`` means the
        dose token of ``perturbation``.
    perturbation
        Keep one drug (sci-Plex ``perturbation``/``drug`` column), e.g. ``"Nutlin"``. Its vehicle is
        its dose 0; un-hashed ``control``/``NAN`` cells are always dropped.
    classes
        Keep these classes, in this order (``"10.0"`` matches ``"10"``).
    groups
        Coarse groups written to ``obs["group"]``: ``"low=0.1,0.5;high=5,10"`` or a mapping.
    min_cells_per_class
        Minimum cells per class after selection.
    layout
        ``"auto"`` (detect), ``"canonical"``, ``"scperturb"`` (scPerturb/pertpy) or ``"kaggle"``.
    layer
        Where the raw counts are: ``None`` for ``X``, a layer name (e.g. ``"counts"`` when ``X``
        holds normalised values), or ``"raw"`` for ``adata.raw``.
    duplicate_ids
        Genes that share an Ensembl id and both have counts: ``"error"``, ``"sum"`` or ``"first"``
        (all-zero duplicates, such as PAR_Y copies, are always dropped).

    Returns
    -------
    AnnData
        ``X`` CSR float32 integer counts; ``var_names`` unique symbols; ``var["ensembl_id"]``;
        ``obs["label"]`` (categorical str), ``obs["n_counts"]``, ``obs["n_genes"]``, and where available
        ``obs["group"]``, ``obs["perturbation"]``, ``obs["dose"]``, ``obs["well"]``, ``obs["plate"]``,
        ``obs["replicate"]``; ``uns["canonicalize"]["params"]``.

    Raises
    ------
    InputError
        For every user-fixable problem (missing columns, unknown classes, too few cells, bad counts, ...).
    """
    if layout == "auto":
        layout = detect_layout(adata)
    if layout not in LAYOUTS:
        msg = f"unknown layout {layout!r}; choose one of {['auto', *LAYOUTS]}"
        raise InputError(msg)
    if duplicate_ids not in ("error", "sum", "first"):
        msg = f"duplicate_ids must be 'error', 'sum' or 'first', got {duplicate_ids!r}"
        raise InputError(msg)
    lay = LAYOUTS[layout]
    if not adata.isbacked:  # a corrupt matrix must not reach scipy's slicing (C++ crashes)
        m = count_matrix(adata, layer)
        validate_sparse(m, what="X" if layer is None else f"layer {layer!r}")
    sub, obs, cats = _select(adata, lay, label_key, perturbation, classes)
    X, var = _gene_counts(sub, lay, layer, duplicate_ids)
    X, obs, nonempty = _cell_obs(X, obs, lay)
    _check_class_sizes(obs[K.LABEL], min_cells_per_class)
    if groups is not None:
        gmap = parse_groups(groups, classes=cats)
        member = {c: g for g, ms in gmap.items() for c in ms}
        obs[K.GROUP] = pd.Categorical(obs[K.LABEL].map(member).astype(str), categories=list(gmap))
    if not obs.index.is_unique:
        warnings.warn("cell names (obs_names) are not unique; made unique with suffixes", stacklevel=2)
        obs.index = make_index_unique(obs.index.astype(str))
    params = {
        "layout": layout,
        "label_key": label_key,
        "classes": cats,
        "min_cells_per_class": min_cells_per_class,
        "duplicate_ids": duplicate_ids,
        "n_input_cells": int(adata.n_obs),
        "n_empty_cells_dropped": int((~nonempty).sum()),
    }
    optional = {
        "perturbation": perturbation,
        "layer": layer,
        "groups": None if groups is None else str(groups),
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    out = AnnData(
        X=X,
        obs=obs,
        var=var,
        uns={**sub.uns, "canonicalize": {"params": params}},
        obsm={k: np.asarray(v)[nonempty] for k, v in sub.obsm.items()},
    )
    logger.info(
        "canonical AnnData: %d cells x %d genes, %d classes (%s layout)",
        out.n_obs,
        out.n_vars,
        len(cats),
        layout,
    )
    return out


def _select(
    adata: AnnData, lay: Layout, label_key: str, perturbation: str | None, classes: Sequence[str] | None
) -> tuple[AnnData, pd.DataFrame, list[str]]:
    """The selected cells in memory, their obs with the harmonised columns and label, the classes."""
    extra, keep = _labels(adata, lay, label_key, perturbation)
    label, cats = _select_classes(extra[K.LABEL], classes)
    keep &= label.notna().to_numpy()
    if not keep.any():
        msg = "no cells left after selecting the perturbation, classes and labelled cells"
        raise InputError(msg)
    with warnings.catch_warnings():  # non-unique symbols (Kaggle) are made unique later
        warnings.filterwarnings("ignore", message=".*names are not unique", category=UserWarning)
        sub = adata[keep]
        sub = sub.to_memory() if adata.isbacked else sub.copy()
    obs = sub.obs.copy()
    for col in extra.columns:
        obs[col] = extra.loc[keep, col].to_numpy()
    obs[K.LABEL] = pd.Categorical(label[keep].to_numpy(), categories=cats)
    return sub, obs, cats


def _gene_counts(
    sub: AnnData, lay: Layout, layer: str | None, duplicate_ids: str
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Checked CSR float32 counts and the var of the genes kept (unique symbols, version-less ids)."""
    validate_counts(sub, layer=layer)
    X = _to_counts(count_matrix(sub, layer))
    var = sub.raw.var if layer == "raw" else sub.var
    symbols, ids = _gene_ids(var, lay)
    X, kept = _dedupe_ids(X, ids, symbols, duplicate_ids)
    new_var = var.iloc[kept].copy()  # keep annotations (e.g. simulated ground truth)
    new_var[K.ENSEMBL_ID] = ids[kept].astype(str)
    new_var.index = make_index_unique(pd.Index(symbols[kept].astype(str)))
    new_var.index.name = None
    return X, new_var


def _cell_obs(
    X: sp.csr_matrix, obs: pd.DataFrame, lay: Layout
) -> tuple[sp.csr_matrix, pd.DataFrame, np.ndarray]:
    """Drop cells without counts; add n_counts, n_genes and (from wells) plate and replicate."""
    row_sums = np.asarray(X.sum(axis=1)).ravel()
    nonempty = row_sums > 0
    if not nonempty.any():
        msg = f"all {len(nonempty)} selected cells have zero counts; check the layer and the gene selection"
        raise InputError(msg)
    if not nonempty.all():
        logger.warning("dropped %d of %d cells with zero counts", int((~nonempty).sum()), len(nonempty))
        X, obs, row_sums = X[nonempty], obs.loc[nonempty].copy(), row_sums[nonempty]
    obs[K.N_COUNTS] = _n_counts(obs, lay, row_sums)
    obs[K.N_GENES] = np.diff(X.indptr).astype(np.int64)
    if K.WELL in obs:
        obs[K.WELL] = obs[K.WELL].astype("object")
        obs["plate"] = pd.Categorical([plate_from_well(w) for w in obs[K.WELL]])
        obs[K.REPLICATE] = pd.Categorical([replicate_from_well(w) for w in obs[K.WELL]])
        obs[K.WELL] = obs[K.WELL].astype("category")
    return X, obs, nonempty


def _check_class_sizes(label: pd.Series, min_cells: int) -> None:
    sizes = label.value_counts().reindex(label.cat.categories, fill_value=0)
    small = sizes[sizes < min_cells]
    if len(small):
        detail = ", ".join(f"{c!r}: {n}" for c, n in small.items())
        msg = (
            f"classes with fewer than {min_cells} cells ({detail}); drop them with classes=[...] "
            "or lower min_cells_per_class"
        )
        raise InputError(msg)


def load(path: str | os.PathLike[str], *, layer: str | None = None, **canonicalize_kwargs) -> AnnData:
    """Read an ``.h5ad`` file and canonicalise it (see `canonicalize` for the keywords).

    The file is opened read-only and backed, and only the selected cells are loaded into memory.

    Parameters
    ----------
    path
        The ``.h5ad`` file; it is never modified.
    layer
        Where the raw counts are: ``None`` for ``X``, a layer name such as ``"counts"`` (when
        ``X`` holds normalised values), or ``"raw"`` for ``adata.raw``.
    **canonicalize_kwargs
        Passed to `canonicalize`.

    Returns
    -------
    AnnData
        Canonical, in memory.
    """
    adata = read_h5ad(path, backed=True)
    try:
        _check_file_matrix(path, layer)
        return canonicalize(adata, layer=layer, **canonicalize_kwargs)
    except OSError as e:  # h5py failing on a corrupt chunk while reading the selected cells
        msg = f"cannot read {path}: {one_line(e)}; the file may be corrupt: re-download it or write it again"
        raise InputError(msg) from e
    finally:
        adata.file.close()


def _check_file_matrix(path: str | os.PathLike[str], layer: str | None) -> None:
    """Check the structure of the file's count matrix when it is stored sparse (`validate_sparse_group`)."""
    import h5py

    key = {None: "X", "raw": "raw/X"}.get(layer, f"layers/{layer}")
    with h5py.File(path, "r") as f:
        if key in f and isinstance(f[key], h5py.Group):
            validate_sparse_group(f[key], what=f"{path} ({key})")
