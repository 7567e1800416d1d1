"""A positive control for the run-level null: one gene alone carries a label assigned to wells.

The default simulated cells (`nutlin_sim`) get a second label, ``switch`` ("on"/"off"), assigned
to wells independently of dose: half of the wells of every dose are "on" (balanced within each
dose). One gene that the simulator neither plants nor expresses much (a decoy with the lowest
baseline) is then rewritten: absent from every "off" cell, and present in every "on" cell with the
count that puts it at a mid rank of the cell's rank-value encoding (by default ranks 80-200 of the
~254 genes a 256-position checkpoint keeps). A classifier on ``switch`` can only succeed by reading
that gene, so fine-tunes on the real ``switch`` labels must change attention to it and fine-tunes
on labels permuted between wells must not: the study's statistics have something they must find.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from ..errors import InputError
from .nutlin_sim import nutlin_sim

__all__ = ["switch_control", "SWITCH_KEY", "ON", "OFF"]

logger = logging.getLogger(__name__)

#: obs column of the positive-control label
SWITCH_KEY = "switch"
ON, OFF = "on", "off"
_TARGET_SUM = 10_000  # Geneformer's normalisation (`geneattn.tokenize.rank_value.TARGET_SUM`)


def _default_gene(var: pd.DataFrame) -> str:
    """The unplanted decoy with the lowest baseline (ties: the first symbol)."""
    pool = var[(~var["planted"].astype(bool)) & (var["decoy_of"].astype(str) != "")]
    return str(pool.sort_values(["base_mean"], kind="stable").index[0])


def _switch_by_well(obs: pd.DataFrame, rng: np.random.Generator) -> pd.Series:
    """Per cell ``"on"``/``"off"``: half of the wells of each dose "on" (one more "off" if odd)."""
    on: set[str] = set()
    for _, wells in obs.groupby(K.LABEL, observed=True)["well"]:
        w = np.sort(wells.astype(str).unique())
        on.update(rng.permutation(w)[: len(w) // 2].tolist())
    return pd.Series(np.where(obs["well"].astype(str).isin(on), ON, OFF), index=obs.index)


def _medians(medians: Mapping[str, float] | None) -> Mapping[str, float]:
    if medians is not None:
        return medians
    from ..models import builtin_checkpoint
    from ..tokenize import GeneVocab

    return GeneVocab.from_json(builtin_checkpoint() / "vocab.json").medians


def _switch_counts(
    X: sp.csr_matrix, recip_med: np.ndarray, col: int, ranks: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """Counts of gene ``col`` that put it at rank ``ranks[i]`` (0 = highest) in cell ``rows[i]``.

    The rank-value encoding orders a cell's genes by ``count / n_counts · 10,000 / median``. The
    count is the smallest integer (>= 1, ``n_counts`` including it) whose value exceeds the other
    genes' value at rank ``r``: the gene then lands at rank ``r`` or before (a rare gene's one count
    is worth about as much as a mid-rank gene's, so counts cannot place it more finely).
    """
    out = np.zeros(len(rows), dtype=np.float64)
    for i, (r, rank) in enumerate(zip(rows, ranks, strict=True)):
        lo, hi = X.indptr[r], X.indptr[r + 1]
        idx, cnt = X.indices[lo:hi], X.data[lo:hi].astype(np.float64)
        keep = idx != col
        v = np.sort(cnt[keep] * recip_med[idx[keep]])[::-1]  # proportional to the encoded value
        k = int(min(rank, len(v) - 1))
        target = v[k] * (1 + 1e-6) if len(v) else 0.0
        rest = cnt[keep].sum()
        # c · r_s / (rest + c) > target / rest  (every value scales with 1 / n_counts)
        if rest * recip_med[col] <= target:
            msg = f"cell {r}: no count of the switch gene reaches rank {rank}"
            raise InputError(msg)
        out[i] = max(1.0, np.floor(target * rest / (rest * recip_med[col] - target)) + 1)
    return out


def switch_control(
    *,
    seed: int = 0,
    gene: str | None = None,
    cells_per_dose: int | Mapping[str, int] | None = None,
    rank_range: tuple[int, int] = (80, 200),
    medians: Mapping[str, float] | None = None,
    **sim_kwargs: object,
) -> AnnData:
    """The simulated nutlin-3a cells relabelled "on"/"off" by well, with one gene that decides the label.

    Parameters
    ----------
    seed
        Seed of the cells (`nutlin_sim`), the wells that are "on" and the switch gene's ranks.
    gene
        Symbol of the switch gene; ``None``: the unplanted decoy with the lowest baseline (rarely
        expressed, in no programme). Must not be planted.
    cells_per_dose
        As in `nutlin_sim`.
    rank_range
        Rank positions (0 = the highest-ranked gene, before ``<cls>``) among which each "on" cell's
        target rank for the gene is drawn uniformly (clipped to the cell's expressed genes).
    medians
        Gene id (Ensembl) -> median of the vocabulary the cells will be tokenized with; ``None``:
        the shipped checkpoint's (``mini-nutlin``).
    **sim_kwargs
        Further arguments of `nutlin_sim`.

    Returns
    -------
    AnnData
        As `nutlin_sim` (``label`` stays the dose), plus ``obs["switch"]`` (categorical "off"/"on"),
        ``var["planted"]`` True only for the switch gene (the dose responders keep their
        ``direction``/``program`` annotations), and ``uns["positive_control"]``: ``gene``, ``key``,
        ``rank_range``, ``on_wells``, ``median_count_on``, ``seed``.
    """
    adata = nutlin_sim(seed=seed, cells_per_dose=cells_per_dose, **sim_kwargs)
    gene = _default_gene(adata.var) if gene is None else gene
    if gene not in adata.var_names or bool(adata.var.loc[gene, "planted"]):
        msg = f"switch gene {gene!r} must be an unplanted gene of the simulation"
        raise InputError(msg)
    med = _medians(medians)
    ids = adata.var[K.ENSEMBL_ID].astype(str)
    if ids[gene] not in med:
        msg = f"switch gene {gene!r} ({ids[gene]}) has no median in the vocabulary"
        raise InputError(msg)
    recip = np.array([1.0 / med[i] if i in med else 0.0 for i in ids])
    rng = np.random.default_rng([seed, 7])
    switch = _switch_by_well(adata.obs, rng)
    col = adata.var_names.get_loc(gene)
    X = sp.csr_matrix(adata.X, dtype=np.float32).tocoo()
    X = sp.csr_matrix((X.data[X.col != col], (X.row[X.col != col], X.col[X.col != col])), shape=X.shape)
    rows = np.flatnonzero(switch.to_numpy() == ON)
    counts = _switch_counts(X, recip, col, rng.integers(*rank_range, size=len(rows), endpoint=True), rows)
    X = X + sp.csr_matrix((counts.astype(np.float32), (rows, np.full(len(rows), col))), shape=X.shape)
    X.sort_indices()
    adata.X = X
    adata.obs[SWITCH_KEY] = pd.Categorical(switch, categories=[OFF, ON])
    adata.obs[K.N_COUNTS] = np.asarray(X.sum(axis=1)).ravel()
    adata.obs[K.N_GENES] = np.diff(X.indptr).astype(np.int64)
    adata.var["planted"] = adata.var_names == gene
    on_wells = sorted(adata.obs.loc[switch == ON, "well"].astype(str).unique())
    adata.uns["positive_control"] = {
        "gene": gene, "key": SWITCH_KEY, "rank_range": list(rank_range), "on_wells": on_wells,
        "median_count_on": float(np.median(counts)) if len(counts) else 0.0, "seed": seed,
    }  # fmt: skip
    logger.info("positive control: %s switches with %d of %d wells on (median count %.0f)",
                gene, len(on_wells), adata.obs["well"].nunique(), adata.uns["positive_control"]["median_count_on"])  # fmt: skip
    return adata
