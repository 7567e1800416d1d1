"""Structure checks of compressed sparse matrices (CSR/CSC) read from files.

scipy trusts the arrays it is given: a column index out of range or a decreasing ``indptr`` gives
wrong results, an ``IndexError`` deep in a reduction, or a crash in scipy's C++ code. A file written
by a buggy tool or damaged on disk is therefore checked before its matrix is used: ``indptr`` starts
at 0, never decreases and ends at the number of stored values, and every index lies in range.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import h5py

__all__ = ["validate_sparse", "validate_sparse_group", "check_indptr", "check_indices"]

#: stored indices checked per block when reading them from a file (bounded memory)
_BLOCK = 1 << 24
_FIX = "the file is corrupt: re-download it or write it again"


def _corrupt(what: str, problem: str) -> InputError:
    return InputError(f"{what} is not a valid sparse matrix: {problem}; {_FIX}")


def check_indptr(
    indptr: np.ndarray, *, n_major: int | None, nnz: int | None, what: str, first: int = 0
) -> None:
    """InputError unless ``indptr`` starts at ``first``, never decreases and (if given) ends at ``nnz``.

    ``n_major`` (rows of a CSR, columns of a CSC) checks the length, ``n_major + 1``; pass ``None``
    for a slice of a longer ``indptr``.
    """
    indptr = np.asarray(indptr)
    if n_major is not None and indptr.shape != (n_major + 1,):
        raise _corrupt(
            what, f"indptr has {indptr.size} entries for {n_major} rows/columns (needs {n_major + 1})"
        )
    if indptr.size == 0:
        return
    if int(indptr[0]) != first:
        raise _corrupt(what, f"indptr starts at {int(indptr[0])}, not {first}")
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        at = int(np.argmax(steps < 0))
        raise _corrupt(
            what, f"indptr decreases at position {at} ({int(indptr[at])} -> {int(indptr[at + 1])})"
        )
    if nnz is not None and int(indptr[-1]) != nnz:
        raise _corrupt(what, f"indptr ends at {int(indptr[-1])} but {nnz} values are stored")


def check_indices(indices: np.ndarray, n_minor: int, *, what: str) -> None:
    """InputError unless every stored index lies in ``[0, n_minor)``."""
    indices = np.asarray(indices)
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_minor):
        bad = int(indices.min()) if int(indices.min()) < 0 else int(indices.max())
        raise _corrupt(what, f"index {bad} out of range for {n_minor} columns/rows")


def validate_sparse(m: sp.spmatrix | sp.sparray, *, what: str = "X") -> None:
    """Check an in-memory CSR or CSC matrix (other formats have no ``indptr`` and are left alone)."""
    if not sp.issparse(m) or m.format not in ("csr", "csc"):
        return
    n_major, n_minor = m.shape if m.format == "csr" else m.shape[::-1]
    if m.indices.shape != m.data.shape:
        raise _corrupt(what, f"{m.indices.size} indices for {m.data.size} values")
    check_indptr(m.indptr, n_major=n_major, nnz=m.data.size, what=what)
    check_indices(m.indices, n_minor, what=what)


def validate_sparse_group(group: h5py.Group, *, what: str = "X") -> None:
    """Check a CSR/CSC group of an h5ad file (``data``, ``indices``, ``indptr``, ``shape``) block by block."""
    kind = dict(group.attrs).get("encoding-type")
    if kind not in ("csr_matrix", "csc_matrix") or not {"data", "indices", "indptr"} <= set(group):
        return
    shape = tuple(int(v) for v in group.attrs.get("shape", ()))
    if len(shape) != 2:
        raise _corrupt(what, f"its shape attribute is {shape}")
    n_major, n_minor = shape if kind == "csr_matrix" else shape[::-1]
    data, indices = group["data"], group["indices"]
    if indices.shape != data.shape:
        raise _corrupt(what, f"{indices.shape[0]} indices for {data.shape[0]} values")
    check_indptr(group["indptr"][:], n_major=n_major, nnz=int(data.shape[0]), what=what)
    for lo in range(0, int(indices.shape[0]), _BLOCK):
        check_indices(indices[lo : lo + _BLOCK], n_minor, what=what)
