"""Rank-value encoding on CSR arrays (pure numpy), bit-identical to Geneformer's tokenizer.

Geneformer divides a sparse matrix by dense arrays; scipy evaluates that as multiplication by
the reciprocal. To reproduce the order of tied genes we redo exactly that arithmetic with the
same dtypes (spec §1.5): ``v = ((x * (1/n)) * 10_000) * (1/median)`` where ``1/n`` has the dtype
of ``n_counts`` (float32 in float32, so the first two products are float32) and ``1/median`` is
float64. Each cell is then ranked with ``np.argsort(-v_cell)`` (default, unstable kind) on its
own slice, since the order of equal values depends on the array being sorted.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TARGET_SUM", "scaled_values", "rank_cells", "add_special_tokens", "encode"]

TARGET_SUM = 10_000


def scaled_values(
    data: np.ndarray,
    indptr: np.ndarray,
    n_counts: np.ndarray,
    recip_medians: np.ndarray,
    *,
    target_sum: int = TARGET_SUM,
) -> np.ndarray:
    """Median-scaled normalised values of CSR data, with Geneformer's (scipy's) arithmetic.

    Parameters
    ----------
    data
        CSR values (counts), ``[nnz]``, any numeric dtype.
    indptr
        CSR row pointer, ``[n_cells + 1]``.
    n_counts
        Total counts per cell, ``[n_cells]``; its dtype decides the precision of ``1/n``.
    recip_medians
        ``np.divide(1, median)`` of each nonzero's gene, ``[nnz]`` (float64).
    target_sum
        Counts per cell after normalisation.

    Returns
    -------
    ``v`` per nonzero, ``[nnz]`` (float64 for float32 input).
    """
    recip_n = np.divide(1, np.asarray(n_counts))  # scipy: self.multiply(np.divide(1, other))
    v = np.multiply(data, np.repeat(recip_n, np.diff(indptr)))
    np.multiply(v, target_sum, out=v)  # python int: keeps v's dtype, as scipy's _mul_scalar
    return np.multiply(v, recip_medians)


def rank_cells(
    values: np.ndarray,
    tokens: np.ndarray,
    indptr: np.ndarray,
    *,
    max_genes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Order each cell's tokens by descending value and keep the first ``max_genes``.

    Parameters
    ----------
    values
        Value per nonzero, ``[nnz]``, cells' nonzeros in column order.
    tokens
        Token id per nonzero, ``[nnz]``.
    indptr
        CSR row pointer, ``[n_cells + 1]``.
    max_genes
        Truncation length (highest-ranked genes are kept).

    Returns
    -------
    flat
        All cells' ranked tokens concatenated, ``[sum(lengths)]``.
    offsets
        ``[n_cells + 1]``; cell ``i`` is ``flat[offsets[i]:offsets[i + 1]]``.
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    n_cells = indptr.size - 1
    keep = np.minimum(np.diff(indptr), max_genes)
    offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(keep, out=offsets[1:])
    neg = -values
    flat = np.empty(int(offsets[-1]), dtype=tokens.dtype)
    starts, ends, outs, ks = indptr[:-1].tolist(), indptr[1:].tolist(), offsets[:-1].tolist(), keep.tolist()
    argsort = np.argsort
    # argsort each cell's own slice: the order of tied values depends on the array sorted
    for s, e, o, k in zip(starts, ends, outs, ks, strict=True):
        if k:
            flat[o : o + k] = tokens[s:e][argsort(neg[s:e])[:k]]
    return flat, offsets


def add_special_tokens(
    flat: np.ndarray, offsets: np.ndarray, *, cls_id: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Put ``cls_id`` before and ``eos_id`` after every cell's tokens (vectorised)."""
    lengths = np.diff(offsets) + 2
    new_offsets = np.zeros_like(offsets)
    np.cumsum(lengths, out=new_offsets[1:])
    out = np.empty(int(new_offsets[-1]), dtype=flat.dtype)
    body = np.ones(out.size, dtype=bool)
    body[new_offsets[:-1]] = False
    body[new_offsets[1:] - 1] = False
    out[new_offsets[:-1]] = cls_id
    out[new_offsets[1:] - 1] = eos_id
    out[body] = flat
    return out, new_offsets


def encode(
    data: np.ndarray,
    indptr: np.ndarray,
    gene_index: np.ndarray,
    *,
    n_counts: np.ndarray,
    tokens: np.ndarray,
    recip_medians: np.ndarray,
    model_input_size: int,
    cls_id: int | None = None,
    eos_id: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rank-value encode cells given as CSR over vocabulary genes.

    Parameters
    ----------
    data, indptr, gene_index
        CSR over vocabulary genes (``gene_index`` are column indices, sorted within each row).
    n_counts
        Total counts per cell.
    tokens, recip_medians
        Per vocabulary column: token id and ``np.divide(1, median)``.
    model_input_size
        Maximum output length, special tokens included.
    cls_id, eos_id
        Special tokens to add (both or neither).

    Returns
    -------
    flat, offsets
        Tokens of all cells concatenated and the ``[n_cells + 1]`` offsets.
    """
    special = cls_id is not None and eos_id is not None
    max_genes = model_input_size - 2 if special else model_input_size
    values = scaled_values(data, indptr, n_counts, recip_medians[gene_index])
    flat, offsets = rank_cells(values, tokens[gene_index], indptr, max_genes=max_genes)
    if special:
        flat, offsets = add_special_tokens(flat, offsets, cls_id=int(cls_id), eos_id=int(eos_id))
    return flat, offsets
