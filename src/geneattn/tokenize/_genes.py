"""Gene-id mapping and collapsing (spec §1.3): which input column feeds which vocabulary column.

The plan is computed once per input from ``var`` and applied to every chunk of rows by
`remap_chunk`, which is vectorised over the CSR arrays.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import InputError
from .vocab import GeneVocab

__all__ = ["GenePlan", "plan_genes", "remap_chunk"]

logger = logging.getLogger(__name__)


@dataclass
class GenePlan:
    """How input columns become vocabulary columns.

    Attributes
    ----------
    colmap
        ``[n_vars]`` int64: output column of each input column, ``-1`` if dropped.
    gene_ids
        ``[n_out]`` collapsed gene id of each output column.
    tokens
        ``[n_out]`` int32 token ids.
    recip_medians
        ``[n_out]`` float64 ``np.divide(1, median)``.
    path
        ``"fast"`` (nothing summed), ``"collapse"`` (duplicates summed, moved to the end) or
        ``"none"`` (``collapse_gene_ids=False``: raw ids looked up directly).
    n_summed_groups
        Number of collapsed ids that sum several columns.
    """

    colmap: np.ndarray
    gene_ids: np.ndarray
    tokens: np.ndarray
    recip_medians: np.ndarray
    path: str
    n_summed_groups: int = 0

    @property
    def monotonic(self) -> bool:
        """True when the kept columns keep their relative order and none is summed."""
        return self.path != "collapse"


def plan_genes(ids: np.ndarray, vocab: GeneVocab, *, collapse_gene_ids: bool = True) -> GenePlan:
    """Map raw gene ids onto the vocabulary exactly as Geneformer's tokenizer does.

    Parameters
    ----------
    ids
        Raw gene ids per input column (``None`` for missing ids).
    vocab
        The vocabulary (its `GeneVocab.mapping`, or the identity when ``None``).
    collapse_gene_ids
        Map ids through the mapping and sum duplicates (Geneformer's default). ``False`` looks
        raw ids up in the token dictionary and requires the matched ids to be unique.

    Returns
    -------
    The plan.
    """
    genes = vocab.gene_set
    ids = list(ids)
    if not collapse_gene_ids:
        collapsed = [g if g in genes else None for g in ids]
        dup = [g for g, c in Counter(g for g in collapsed if g is not None).items() if c > 1]
        if dup:
            msg = (
                f"{len(dup)} gene ids occur more than once (e.g. {dup[0]}); "
                "use collapse_gene_ids=True to sum duplicates"
            )
            raise InputError(msg)
        return _plan_in_order(collapsed, vocab, "none")
    mapping = vocab.effective_mapping
    # uniqueness test on raw (not upper-cased) ids that are mapping keys, as upstream
    in_map = [g for g in ids if g is not None and g in mapping]
    unique = len(set(in_map)) == len({mapping[g] for g in in_map})
    collapsed = [mapping.get(g.upper()) if g is not None else None for g in ids]
    if unique:
        plan = _plan_in_order(collapsed, vocab, "fast")
        n_rep = plan.gene_ids.size - np.unique(plan.gene_ids).size
        if n_rep:
            logger.warning(
                "%d columns map to a gene already present but are kept unsummed (Geneformer's rule "
                "when no two distinct mapped ids collide); their token can occur twice in a cell",
                n_rep,
            )
        return plan
    # collapse path: non-duplicated columns in order, then one summed column per duplicated id
    counts = Counter(g for g in collapsed if g is not None)
    dups = [g for g, c in counts.items() if c > 1]  # insertion order = first appearance
    dup_set = set(dups)
    colmap = np.full(len(ids), -1, dtype=np.int64)
    out_ids: list[str] = []
    for j, g in enumerate(collapsed):
        if g is not None and g not in dup_set:
            colmap[j] = len(out_ids)
            out_ids.append(g)
    base = len(out_ids)
    dup_index = {g: base + k for k, g in enumerate(dups)}
    out_ids.extend(dups)
    for j, g in enumerate(collapsed):
        if g in dup_set:
            colmap[j] = dup_index[g]
    logger.info("gene ids collapsed: %d ids summed over duplicate columns", len(dups))
    return _finish(colmap, out_ids, vocab, "collapse", len(dups))


def _plan_in_order(collapsed: list[str | None], vocab: GeneVocab, path: str) -> GenePlan:
    colmap = np.full(len(collapsed), -1, dtype=np.int64)
    out_ids: list[str] = []
    for j, g in enumerate(collapsed):
        if g is not None:
            colmap[j] = len(out_ids)
            out_ids.append(g)
    return _finish(colmap, out_ids, vocab, path, 0)


def _finish(colmap: np.ndarray, out_ids: list[str], vocab: GeneVocab, path: str, n_groups: int) -> GenePlan:
    colmap = colmap.astype(np.int32) if colmap.size < 2**31 else colmap
    if not out_ids:
        msg = (
            "no gene id maps to the vocabulary: check that the gene id column holds Ensembl ids "
            "(or symbols known to the mapping dictionary) and that the dictionaries match"
        )
        raise InputError(msg)
    tokens = np.array([vocab.token_ids[g] for g in out_ids], dtype=np.int32)
    medians = np.array([vocab.medians[g] for g in out_ids], dtype=np.float64)
    return GenePlan(
        colmap=colmap,
        gene_ids=np.array(out_ids, dtype=object),
        tokens=tokens,
        recip_medians=np.divide(1, medians),
        path=path,
        n_summed_groups=n_groups,
    )


def remap_chunk(x: sp.csr_matrix, plan: GenePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Restrict a CSR chunk to vocabulary columns (summing collapsed duplicates).

    Parameters
    ----------
    x
        Cells x input genes, CSR.
    plan
        From `plan_genes`.

    Returns
    -------
    data, indices, indptr
        CSR arrays over vocabulary columns, indices sorted within rows, no stored zeros.
    """
    new = plan.colmap[x.indices]
    keep = new >= 0
    if x.data.size:
        keep &= x.data != 0  # stored zeros are not expressed genes
    if np.count_nonzero(keep) == keep.size:  # common case: nothing to drop
        data, indptr = x.data, np.asarray(x.indptr, dtype=np.int64)
    else:
        kept_before = np.zeros(keep.size + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        indptr = kept_before[np.asarray(x.indptr, dtype=np.int64)]  # kept nonzeros before each row
        data, new = x.data[keep], new[keep]
    if plan.monotonic and x.has_sorted_indices:
        return data, new, indptr
    out = sp.csr_matrix((data, new, indptr), shape=(x.shape[0], plan.tokens.size))
    out.sum_duplicates()  # sorts indices within rows and sums collapsed duplicates
    out.eliminate_zeros()
    return out.data, out.indices, np.asarray(out.indptr, dtype=np.int64)
