"""Reading a tokenizer input: cells, genes and the count matrix, in chunks of rows.

An ``.h5ad`` path is opened read-only with h5py and only ``obs``, ``var`` and the chosen count
matrix are read, the matrix chunk by chunk (anndata's backed mode would read every layer
whole). An AnnData, in memory or backed, is read where it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError, one_line
from ..io import count_matrix, strip_ensembl_version, validate_float16
from ..io._sparse import check_indices, check_indptr, validate_sparse, validate_sparse_group

if TYPE_CHECKING:  # pragma: no cover
    import h5py
    from anndata import AnnData
    from anndata.abc import CSCDataset, CSRDataset

    #: where counts can be: in memory, an h5py dataset (dense) or group (sparse), an anndata sparse dataset
    Matrix = np.ndarray | sp.spmatrix | sp.sparray | h5py.Dataset | h5py.Group | CSRDataset | CSCDataset

__all__ = [
    "Counts",
    "open_input",
    "row_chunks",
    "gene_ids",
    "obs_n_counts",
    "checked_n_counts",
    "filter_pass",
    "check_values",
]

logger = logging.getLogger(__name__)


def _noop() -> None:
    return None


@dataclass
class Counts:
    """One input of the tokenizer: its cells, its genes and where its counts are.

    Attributes
    ----------
    obs
        Cell annotations (index: cell names).
    var
        The genes of the count matrix (``adata.raw.var`` for ``layer="raw"``).
    matrix
        The counts: an h5py group (CSR) or dataset (dense) of an opened file, or a matrix in memory.
    layer
        Where the counts are: ``None`` for ``X``, a layer name, or ``"raw"``.
    close
        Closes the file opened for a path input (does nothing for an AnnData).
    alternatives
        The input's other matrices that may hold counts: its layers, and ``"raw"``.
    """

    obs: pd.DataFrame
    var: pd.DataFrame
    matrix: Matrix
    layer: str | None = None
    close: Callable[[], None] = _noop
    alternatives: tuple[str, ...] = ()

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return len(self.obs)

    @property
    def n_vars(self) -> int:
        """Number of genes."""
        return len(self.var)

    @property
    def what(self) -> str:
        """The matrix, as named in messages: ``"X"`` or ``"layer 'counts'"``."""
        return "X" if self.layer is None else f"layer {self.layer!r}"

    def hint(self) -> str:
        """``"; raw counts may be in --layer counts"`` for the input's other matrices (or ``""``)."""
        other = [f"--layer {a}" for a in self.alternatives if a != self.layer]
        return f"; raw counts may be in {' or '.join(other)}" if other else ""


def open_input(data: AnnData | str | os.PathLike[str], *, layer: str | None = None) -> Counts:
    """The cells, genes and count matrix of an AnnData or an ``.h5ad`` path (opened read-only).

    Parameters
    ----------
    data
        An AnnData (in memory or backed) or an ``.h5ad`` path; close a path's with `Counts.close`.
    layer
        ``None`` for ``X``, a key of ``layers`` (e.g. ``"counts"``), or ``"raw"``.

    Raises
    ------
    InputError
        Not an AnnData or a readable ``.h5ad`` file, or no such matrix.
    """
    import anndata

    if isinstance(data, anndata.AnnData):
        return _from_anndata(data, layer)
    if not isinstance(data, str | os.PathLike):
        msg = f"expected an AnnData or an .h5ad path, got {type(data).__name__}"
        raise InputError(msg)
    path = Path(data)
    if not path.is_file():
        msg = f"input file not found: {path}"
        raise InputError(msg)
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as e:  # noqa: BLE001 - any reader failure means an unreadable file
        raise _unreadable(path, e) from e
    try:
        return _from_file(f, path, layer)
    except BaseException:
        f.close()
        raise


def _unreadable(path: Path, e: BaseException) -> InputError:
    return InputError(f"cannot read {path} as .h5ad ({type(e).__name__}: {one_line(e)})")


def _from_anndata(adata: AnnData, layer: str | None) -> Counts:
    var = adata.raw.var if layer == "raw" and adata.raw is not None else adata.var
    alternatives = (*adata.layers, *(["raw"] if adata.raw is not None else []))
    key = {None: "X", "raw": "raw/X"}.get(layer)
    if adata.isbacked and not adata.is_view and key is not None:  # read the file's arrays directly
        if key not in adata.file:
            msg = "the AnnData has no X matrix" if layer is None else "adata.raw is empty"
            raise InputError(f"{msg}; pass the layer that holds the raw counts (CLI --layer)")
        return Counts(adata.obs, var, adata.file[key], layer, alternatives=alternatives)
    return Counts(adata.obs, var, count_matrix(adata, layer), layer, alternatives=alternatives)


def _file_matrix(f: h5py.File, layer: str | None) -> h5py.Group | h5py.Dataset:
    key = {None: "X", "raw": "raw/X"}.get(layer, f"layers/{layer}")
    if key in f:
        return f[key]
    layers = sorted(f["layers"]) if "layers" in f else []
    options = [f"{k!r}" for k in layers] + (["'raw'"] if "raw/X" in f else [])
    found = f"; counts may be in --layer {' or '.join(options)}" if options else ""
    if layer is None:
        msg = f"the file has no X matrix{found}"
    elif layer == "raw":
        msg = f"layer='raw' was requested but the file has no adata.raw{found}"
    else:
        msg = f"layer {layer!r} not found; available layers: {layers} (or None for X, 'raw' for .raw)"
    raise InputError(msg)


def _from_file(f: h5py.File, path: Path, layer: str | None) -> Counts:
    import anndata

    if "encoding-type" not in f.attrs:  # written by anndata < 0.7: let anndata read it
        f.close()
        try:
            adata = anndata.read_h5ad(path, backed="r")
        except Exception as e:  # noqa: BLE001 - any reader failure means an unreadable file
            raise _unreadable(path, e) from e
        counts = _from_anndata(adata, layer)
        counts.close = adata.file.close
        return counts
    try:
        obs = anndata.io.read_elem(f["obs"])
        var = anndata.io.read_elem(f["raw/var" if layer == "raw" and "raw/var" in f else "var"])
    except Exception as e:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise _unreadable(path, e) from e
    matrix = _file_matrix(f, layer)
    shape = tuple(matrix.attrs["shape"]) if "shape" in matrix.attrs else tuple(matrix.shape)
    if shape != (len(obs), len(var)):
        msg = (
            f"{path} is inconsistent: its counts are {shape[0]} x {shape[1]} but obs has {len(obs)} "
            f"and var {len(var)} rows; the file is corrupt: re-download it or write it again"
        )
        raise InputError(msg)
    alternatives = (*(f["layers"] if "layers" in f else ()), *(["raw"] if "raw/X" in f else []))
    return Counts(obs, var, matrix, layer, f.close, alternatives)


def _csr(block: np.ndarray | sp.spmatrix | sp.sparray, start: int, what: str) -> sp.csr_matrix:
    """A chunk as CSR; float16 (which scipy cannot hold) checked to be exact and widened to float32."""
    if block.dtype == np.float16:
        validate_float16(np.asarray(block), what=f"{what} (rows from {start})")
        block = block.astype(np.float32)
    return block if isinstance(block, sp.csr_matrix) else sp.csr_matrix(block)


def _csr_group_chunks(
    counts: Counts, group: h5py.Group, chunk_size: int
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Chunks of a CSR group read straight from its arrays (anndata's slicing has per-call overhead)."""
    data, indices, indptr_ds = group["data"], group["indices"], group["indptr"]
    if indptr_ds.shape != (counts.n_obs + 1,) or indices.shape != data.shape:
        validate_sparse_group(group, what=counts.what)  # names the inconsistency
    nnz = int(data.shape[0])
    for start in range(0, counts.n_obs, chunk_size):
        indptr = np.asarray(indptr_ds[start : start + chunk_size + 1], dtype=np.int64)
        last = start + chunk_size >= counts.n_obs
        check_indptr(indptr, n_major=None, nnz=nnz if last else None, what=counts.what,
                     first=0 if start == 0 else int(indptr[0]))  # fmt: skip
        lo, hi = int(indptr[0]), int(indptr[-1])
        if hi > nnz:
            check_indptr(indptr[-1:], n_major=None, nnz=nnz, what=counts.what, first=hi)
        check_indices(indices[lo:hi], counts.n_vars, what=counts.what)
        values = data[lo:hi]
        if values.dtype == np.float16:
            validate_float16(values, what=f"{counts.what} (rows from {start})")
            values = values.astype(np.float32)
        shape = (indptr.size - 1, counts.n_vars)
        yield start, sp.csr_matrix((values, indices[lo:hi], indptr - lo), shape=shape, copy=False)


def row_chunks(counts: Counts, chunk_size: int) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Yield ``(first_row, CSR chunk)`` over all cells; files are read chunk by chunk."""
    import h5py

    m = counts.matrix
    if isinstance(m, h5py.Group):
        if dict(m.attrs).get("encoding-type") == "csr_matrix":
            yield from _csr_group_chunks(counts, m, chunk_size)
            return
        import anndata

        logger.info("%s is not stored as CSR: reading it whole", counts.what)
        validate_sparse_group(m, what=counts.what)
        m = anndata.io.read_elem(m)
    validate_sparse(m, what=counts.what)
    if sp.issparse(m) and m.format != "csr":
        m = sp.csr_matrix(m)  # one conversion; row slicing of CSC is slow
    for start in range(0, counts.n_obs, chunk_size):
        yield start, _csr(m[start : start + chunk_size], start, counts.what)  # h5py reads only these rows


def gene_ids(var: pd.DataFrame, gene_id_key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Gene ids without Ensembl versions (object array; missing ids None) and symbols (var_names) when distinct.

    Versions are removed by `geneattn.io.strip_ensembl_version`, as ``geneattn run`` does.
    """
    names = np.asarray(var.index, dtype=object)
    if gene_id_key is None:
        return strip_ensembl_version(names), None
    if gene_id_key not in var.columns:
        msg = (
            f"var has no column {gene_id_key!r} with gene ids (columns: {list(var.columns)}); "
            "pass gene_id_key=None to use var_names"
        )
        raise InputError(msg)
    ids = np.array([v if isinstance(v, str) else None for v in var[gene_id_key].astype(object)], dtype=object)
    symbols = None if np.array_equal(names, ids) else names
    return strip_ensembl_version(ids), symbols


def obs_n_counts(obs: pd.DataFrame, key: str) -> np.ndarray | None:
    """``obs[key]`` as a numeric numpy array (dtype kept), or None if absent."""
    if key not in obs.columns:
        return None
    values = obs[key].to_numpy()
    if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            msg = f"obs[{key!r}] must be numeric (total counts per cell)"
            raise InputError(msg) from None
    return values


def checked_n_counts(obs: pd.DataFrame, key: str) -> np.ndarray | None:
    """``obs[key]`` checked to be positive, or None (with a warning) when absent."""
    n = obs_n_counts(obs, key)
    if n is None:
        logger.warning(
            "obs has no %r column: using row sums of X as total counts (Geneformer requires it)", key
        )
        return None
    if not np.all(np.isfinite(n)) or np.any(n <= 0):
        bad = int((~np.isfinite(n) | (n <= 0)).sum())
        msg = f"obs[{key!r}] has {bad} non-positive or missing values; total counts must be > 0"
        raise InputError(msg)
    return n


def filter_pass(obs: pd.DataFrame, key: str) -> np.ndarray:
    """Cells to tokenize: ``obs[key] == 1`` (all cells when there is no such column)."""
    if key not in obs.columns:
        logger.info("obs has no %r column: tokenizing all cells", key)
        return np.ones(len(obs), dtype=bool)
    values = obs[key].to_numpy()
    return np.asarray(values == 1, dtype=bool)  # Geneformer keeps cells with `i == 1`


def check_values(x: sp.csr_matrix, start: int, *, what: str = "X", hint: str = "") -> None:
    """InputError unless the chunk holds raw counts (finite, non-negative integers).

    ``what`` names the matrix and ``hint`` where else counts may be (`Counts.hint`).
    """
    v = x.data
    if v.size == 0 or np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.bool_):
        if v.size and np.issubdtype(v.dtype, np.signedinteger) and v.min() < 0:
            msg = f"{what} has negative values (rows from {start}); tokenize raw integer UMI counts{hint}"
            raise InputError(msg)
        return
    if not np.issubdtype(v.dtype, np.floating):
        msg = f"{what} has dtype {v.dtype}; tokenize raw integer UMI counts{hint}"
        raise InputError(msg)
    if not np.isfinite(v).all():
        msg = f"{what} has NaN or infinite values (rows from {start}); tokenize raw integer UMI counts{hint}"
        raise InputError(msg)
    if v.min() < 0:
        msg = f"{what} has negative values (rows from {start}): scaled data? tokenize raw integer UMI counts{hint}"
        raise InputError(msg)
    if (np.abs(v - np.round(v)) > 1e-3).any():
        msg = (
            f"{what} has non-integer values (rows from {start}, max {float(v.max()):.3g}): log-normalised data? "
            f"tokenize raw integer UMI counts{hint or ' (e.g. a counts layer or adata.raw: --layer)'}"
        )
        raise InputError(msg)
