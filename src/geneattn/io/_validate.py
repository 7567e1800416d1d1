"""Checks that a matrix holds raw counts, and that an AnnData satisfies the canonical contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from ..errors import InputError
from ._sparse import validate_sparse

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    from anndata.abc import CSCDataset, CSRDataset

    Matrix = np.ndarray | sp.spmatrix | sp.sparray | h5py.Dataset | CSRDataset | CSCDataset

__all__ = ["validate_counts", "validate_canonical", "validate_float16", "count_matrix", "INTEGER_TOL"]

#: values within this distance of an integer count as integers (float round-off in written files)
INTEGER_TOL = 1e-3
#: float16 holds every integer up to 2048 exactly; above it only every second one
FLOAT16_EXACT = 2048


def validate_float16(values: np.ndarray, *, what: str = "X") -> None:
    """Check that float16 counts are exact: all values at most 2048 (above, float16 skips integers).

    Parameters
    ----------
    values
        Stored values (any dtype; only float16 is checked).
    what
        The matrix, as named in the message.

    Raises
    ------
    InputError
        float16 values above 2048: the counts were rounded when the file was written.
    """
    if values.dtype != np.float16 or values.size == 0:
        return
    top = float(np.nanmax(np.abs(values))) if not np.isnan(values).all() else 0.0
    if top > FLOAT16_EXACT:
        msg = (
            f"{what} holds float16 counts up to {top:.0f}, but float16 cannot store every count above "
            f"{FLOAT16_EXACT} (they were rounded when the file was written); write the counts as "
            "integers or float32 from the original data"
        )
        raise InputError(msg)


def _layer_hint(adata: AnnData) -> str:
    options = [f"layer={k!r}" for k in adata.layers] + (["layer='raw'"] if adata.raw is not None else [])
    if not options:
        return " and no layers or .raw: write the raw counts into X"
    return f"; counts may be in {' or '.join(options)} (CLI --layer)"


def count_matrix(adata: AnnData, layer: str | None = None) -> Matrix:
    """The matrix that holds the counts: ``X``, ``adata.layers[layer]`` or ``adata.raw.X`` (``"raw"``).

    Raises
    ------
    InputError
        The requested matrix does not exist (an AnnData without ``X``, a missing layer, no ``.raw``).
    """
    if layer is None:
        if adata.X is None:
            msg = f"the AnnData has no X matrix{_layer_hint(adata)}"
            raise InputError(msg)
        return adata.X
    if layer == "raw":
        if adata.raw is None:
            msg = "layer='raw' was requested but adata.raw is empty; pass layer=None to use X"
            raise InputError(msg)
        return adata.raw.X
    if layer not in adata.layers:
        msg = f"layer {layer!r} not found; available layers: {sorted(adata.layers)} (or None for X, 'raw' for .raw)"
        raise InputError(msg)
    return adata.layers[layer]


def _chunks(X: Matrix, chunk_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (values, row sums) per block of rows; sparse blocks yield their stored values only."""
    if sp.issparse(X):
        # in memory: the stored values in slices (bounded temporaries); row sums for the diagnosis
        data = np.asarray(X.data)
        is_csr = sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array)
        sums = np.asarray(X.sum(axis=1)).ravel() if is_csr else None
        step = max(chunk_size, 1) * 1000
        for start in range(0, max(len(data), 1), step):
            yield data[start : start + step], sums
        return
    n = X.shape[0]
    for start in range(0, n, chunk_size):
        block = X[start : start + chunk_size]  # backed datasets read only these rows
        if sp.issparse(block):
            yield np.asarray(block.data), np.asarray(block.sum(axis=1)).ravel()
        else:
            block = np.asarray(block)
            yield block.ravel(), block.sum(axis=1)


def _where_counts(adata: AnnData | None, layer: str | None) -> str:
    if adata is None:
        return ""
    hints = []
    if "counts" in adata.layers and layer != "counts":
        hints.append("layer='counts' (CLI --layer counts)")
    if adata.raw is not None and layer != "raw":
        hints.append("layer='raw' (adata.raw)")
    return f"; raw counts may be in {' or '.join(hints)}" if hints else ""


def _diagnose(values: np.ndarray, sums: np.ndarray | None) -> str:
    """Say what non-integer data most likely is."""
    vmin, vmax = float(values.min()), float(values.max())
    if vmin < 0:
        return f"the matrix looks scaled (z-scores: negative values down to {vmin:.3g})"
    if sums is not None and len(sums) > 1 and np.median(sums) > 0:
        spread = float(np.std(sums) / np.mean(sums))
        if spread < 1e-3:
            return f"the matrix looks normalised to a fixed total per cell ({np.median(sums):.4g})"
    if vmax < 30:
        return f"the matrix looks log-normalised (non-integer values, max {vmax:.3g})"
    return f"the matrix holds non-integer values (e.g. {values[np.abs(values - np.round(values)) > INTEGER_TOL][0]:.4g})"


def validate_counts(adata: AnnData, *, layer: str | None = None, chunk_size: int = 20_000) -> None:
    """Check that a matrix holds raw UMI counts: finite, non-negative integers, not empty.

    Backed data is read in blocks of ``chunk_size`` rows, so the whole matrix is never in memory.

    Parameters
    ----------
    adata
        In-memory or backed AnnData.
    layer
        ``None`` for ``X``, a key of ``adata.layers``, or ``"raw"`` for ``adata.raw.X``.
    chunk_size
        Rows per block for backed or dense data.

    Raises
    ------
    InputError
        Empty matrix, all-zero matrix, NaN/inf, negative values, non-integer values (with a diagnosis:
        log-normalised, scaled, or normalised to a fixed total) or a non-numeric dtype.
    """
    X = count_matrix(adata, layer)
    n_obs, n_vars = X.shape
    what = "X" if layer is None else f"layer {layer!r}"
    validate_sparse(X, what=what)
    if n_obs == 0 or n_vars == 0:
        msg = f"{what} is empty ({n_obs} cells x {n_vars} genes); pass a matrix with cells and genes"
        raise InputError(msg)
    dtype = np.dtype(X.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_) or np.issubdtype(dtype, np.complexfloating):
        msg = f"{what} has dtype {dtype}; counts must be numeric"
        raise InputError(msg)
    total = 0.0
    for values, sums in _chunks(X, chunk_size):
        if values.size == 0:
            continue
        validate_float16(values, what=what)
        bad = ~np.isfinite(values)
        if bad.any():
            n_nan = int(np.isnan(values).sum())
            msg = (
                f"{what} contains {n_nan} NaN and {int(bad.sum()) - n_nan} infinite values; "
                "geneattn needs raw integer UMI counts" + _where_counts(adata, layer)
            )
            raise InputError(msg)
        nonint = np.abs(values - np.round(values)) > INTEGER_TOL
        if (values < 0).any() or nonint.any():
            problem = _diagnose(values, sums) if nonint.any() else "it contains negative values"
            msg = (
                f"{what} is not raw counts: {problem}. geneattn needs raw integer UMI counts"
                + _where_counts(adata, layer)
            )
            raise InputError(msg)
        total += float(values.sum())
    if total == 0:
        msg = f"{what} holds only zeros; pass a matrix of raw counts"
        raise InputError(msg)


def validate_canonical(adata: AnnData) -> None:
    """Check the canonical AnnData contract (design.md) that `canonicalize` produces.

    Parameters
    ----------
    adata
        In-memory AnnData.

    Raises
    ------
    InputError
        Naming the first violated rule: X CSR float32 integer counts, unique var_names,
        ``var["ensembl_id"]`` without versions, categorical string ``obs["label"]``, ``obs["n_counts"]``
        and ``obs["n_genes"]`` consistent with X.
    """
    problems = []
    if not (sp.isspmatrix_csr(adata.X) or isinstance(adata.X, sp.csr_array)) or adata.X.dtype != np.float32:
        problems.append(
            f"X must be CSR float32 (is {type(adata.X).__name__} {getattr(adata.X, 'dtype', '?')})"
        )
    else:
        validate_counts(adata)
    if not adata.var_names.is_unique:
        problems.append("var_names (gene symbols) must be unique")
    if K.ENSEMBL_ID not in adata.var:
        problems.append(f"var[{K.ENSEMBL_ID!r}] is missing")
    elif adata.var[K.ENSEMBL_ID].astype(str).str.match(r"^ENS\w*\d+\.\d+$").any():
        problems.append(f"var[{K.ENSEMBL_ID!r}] still carries version suffixes")
    label = adata.obs.get(K.LABEL)
    if label is None or not isinstance(label.dtype, pd.CategoricalDtype):
        problems.append(f"obs[{K.LABEL!r}] must be categorical")
    elif not all(isinstance(c, str) for c in label.cat.categories) or label.isna().any():
        problems.append(f"obs[{K.LABEL!r}] must hold strings without missing values")
    for key in (K.N_COUNTS, K.N_GENES):
        if key not in adata.obs:
            problems.append(f"obs[{key!r}] is missing")
    if not problems and (sp.isspmatrix_csr(adata.X) or isinstance(adata.X, sp.csr_array)):
        if not np.array_equal(adata.obs[K.N_GENES].to_numpy(), np.diff(adata.X.indptr)):
            problems.append(f"obs[{K.N_GENES!r}] must equal the number of nonzero genes per cell")
    if problems:
        msg = "not a canonical AnnData: " + "; ".join(problems) + " (use geneattn.io.canonicalize)"
        raise InputError(msg)
