"""Attention adjusted for genes expressed per cell (length) and well, without conditioning on rank.

Wells differ in sequencing depth, so in the number of genes a cell expresses (``n_c``, counted
before the input is cut to the model's size: `TokenLayout.lengths`), and attention depends on length in a gene-specific way (statistics review 2026-12
§4: PC1 of the well × gene residual matrix has ρ −0.96 with the well's median length). Dose classes
differ in length partly by chance well depth, so the length effect leaks into class comparisons.

**Estimator.** For each gene *g*, over the tokens of *g* (one per expressing cell *c*, value
``v_gc``, e.g. the head-mean log fold), with ``x_c = log n_c``:

1. the *within-well* slope ``β_g`` of ``v`` on ``x``: per-gene least squares of ``v ~ x + well``
   (well fixed effects), i.e. ``β_g = Σ (v − v̄_gw)(x − x̄_gw) / Σ (x − x̄_gw)²`` with means over g's
   tokens in each well ``w``. A well holds one dose, so this slope is estimated from length
   variation *within* wells only and cannot absorb the dose effect, which lives between wells.
   Genes with fewer than ``min_cells`` tokens, or no length variation within their wells, get the
   pooled within-well slope of all genes.
2. the adjusted token value ``v_gc − β_g (x_c − x̄)``, with ``x̄`` the mean log length over all cells:
   the value the token would have in a cell of average length. The well means are used to estimate
   ``β_g`` and are **not** subtracted, so between-well (dose) differences stay in the adjusted values.

The gene score (`adjusted_gene_scores`) is the mean adjusted value over the gene's tokens, i.e. the
gene's mean attention at the average length; per-class means of the adjusted token values
(`length_adjust`) feed the between-class tests with wells as units.

**How it differs from the position-matched residual** (`confounds.position_residual`: ``v −
E[v | rank position, length bin]``). That residual compares a gene with the other genes at the same
rank in cells of similar length. Dose acts on attention *through* rank (dose → expression → rank →
attention: MDM2 moves from median position 492 at dose 0.1 to 16 at dose 10), so conditioning on
position removes the mediated dose effect by design (over-adjustment): it answers "does g get more
attention than other genes at its rank?". The adjustment here conditions only on length (and uses
wells to estimate the length slope), so a dose effect that moves a gene's rank remains. Keep the
position residual as a separate, narrower variant. Dose also changes length slightly (responders
switch on); adjusting to the average length removes that small length-mediated part as well.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["TokenLayout", "length_adjust", "adjusted_gene_scores", "ADJUSTED_COLUMNS"]

logger = logging.getLogger(__name__)

ADJUSTED_COLUMNS = ["token_id", "n_cells", "n_wells", "mean", "slope", "pooled_slope", "adjusted"]


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Where each token sits, as plain arrays (independent of any token-store class).

    Attributes
    ----------
    token_ids
        ``[n_tokens]`` gene (token id) of each token.
    cell_of_token
        ``[n_tokens]`` index of each token's cell into ``lengths`` and ``wells``.
    lengths
        ``[n_cells]`` genes expressed per cell *before* the input was cut to the model's size
        (``obs["n_genes"]``). Not the token count: it is capped at the model's input (254 genes for
        93 % of the default study's cells), and a slope estimated from a capped length comes from the
        few uncut cells.
    wells
        ``[n_cells]`` well of each cell (any hashable labels).
    """

    token_ids: np.ndarray
    cell_of_token: np.ndarray
    lengths: np.ndarray
    wells: np.ndarray

    def __post_init__(self) -> None:
        n_tok, n_cells = len(self.token_ids), len(self.lengths)
        cells = np.asarray(self.cell_of_token)
        if len(cells) != n_tok or len(self.wells) != n_cells:
            msg = (
                f"token_ids and cell_of_token need one entry per token ({n_tok}, {len(cells)}) and "
                f"lengths, wells one per cell ({n_cells}, {len(self.wells)})"
            )
            raise InputError(msg)
        if n_tok and (cells.min() < 0 or cells.max() >= n_cells):
            msg = f"cell_of_token must index the {n_cells} cells of lengths/wells"
            raise InputError(msg)
        if np.any(np.asarray(self.lengths) < 1):
            msg = "lengths must be >= 1"
            raise InputError(msg)

    def log_length(self) -> tuple[np.ndarray, float]:
        """``log n_c`` of each token's cell and the mean ``log n`` over all cells (the reference)."""
        log_n = np.log(np.asarray(self.lengths, dtype=np.float64))
        return log_n[np.asarray(self.cell_of_token, dtype=np.int64)], float(log_n.mean())

    def well_of_token(self) -> np.ndarray:
        """Integer well index of each token's cell."""
        return pd.factorize(np.asarray(self.wells))[0][np.asarray(self.cell_of_token, dtype=np.int64)]


def _values(values: np.ndarray, layout: TokenLayout) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if len(v) != len(layout.token_ids):
        msg = f"values need one entry per token: {len(v)} values for {len(layout.token_ids)} tokens"
        raise InputError(msg)
    if not np.all(np.isfinite(v)):
        msg = "values must be finite"
        raise InputError(msg)
    return v.reshape(len(v), -1)


def _slopes(
    v: np.ndarray, x: np.ndarray, gene: np.ndarray, well: np.ndarray, n_genes: int, min_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within-well slopes ``[n_genes, k]``, the pooled flag and tokens per gene."""
    gw = pd.factorize(gene.astype(np.int64) * (well.max(initial=0) + 1) + well)[0]  # (gene, well) group
    size = np.bincount(gw).astype(np.float64)
    dx = x - (np.bincount(gw, weights=x) / size)[gw]
    v_bar = np.stack([np.bincount(gw, weights=v[:, j]) for j in range(v.shape[1])], axis=1) / size[:, None]
    dv = v - v_bar[gw]
    sxx = np.bincount(gene, weights=dx * dx, minlength=n_genes)
    sxy = np.stack(
        [np.bincount(gene, weights=dv[:, j] * dx, minlength=n_genes) for j in range(v.shape[1])], axis=1
    )
    n_tok = np.bincount(gene, minlength=n_genes)
    pooled = sxy.sum(axis=0) / sxx.sum() if sxx.sum() > 0 else np.zeros(v.shape[1])
    own = (n_tok >= min_cells) & (sxx > 1e-12 * np.maximum(n_tok, 1))
    beta = np.where(own[:, None], sxy / np.where(own, sxx, 1.0)[:, None], pooled[None, :])
    return beta, ~own, n_tok


def length_adjust(values: np.ndarray, layout: TokenLayout, *, min_cells: int = 10) -> np.ndarray:
    """Token values adjusted to the average length: ``v − β_g (log n_c − mean log n)`` (module docstring).

    Parameters
    ----------
    values
        ``[n_tokens]`` or ``[n_tokens, ...]`` (e.g. log fold per layer and head; each column is
        adjusted separately).
    layout
        Gene, cell, cell length and well of every token.
    min_cells
        Genes with fewer tokens use the pooled within-well slope of all genes.

    Returns
    -------
    numpy.ndarray
        Adjusted values, the shape of ``values``.
    """
    v = _values(values, layout)
    x, x_ref = layout.log_length()
    gene = pd.factorize(np.asarray(layout.token_ids))[0]
    beta, _, _ = _slopes(v, x, gene, layout.well_of_token(), int(gene.max(initial=-1)) + 1, min_cells)
    return (v - beta[gene] * (x - x_ref)[:, None]).reshape(np.shape(values))


def adjusted_gene_scores(values: np.ndarray, layout: TokenLayout, *, min_cells: int = 10) -> pd.DataFrame:
    """Per-gene attention adjusted for length and well (the gene's mean attention at the average length).

    Parameters
    ----------
    values
        ``[n_tokens]`` token values (one column, e.g. the head-mean log fold).
    layout, min_cells
        As in `length_adjust`.

    Returns
    -------
    pandas.DataFrame
        `ADJUSTED_COLUMNS`, one row per token id (sorted): tokens (``n_cells``), wells with the
        gene, raw ``mean``, within-well ``slope`` per unit log length, ``pooled_slope`` (True when
        the gene had too few cells and got the pooled slope) and ``adjusted``.
    """
    if np.ndim(values) != 1:
        msg = (
            f"adjusted_gene_scores takes one value per token, got shape {np.shape(values)}; loop over columns"
        )
        raise InputError(msg)
    v = _values(values, layout)
    x, x_ref = layout.log_length()
    well = layout.well_of_token()
    ids, gene = np.unique(np.asarray(layout.token_ids), return_inverse=True)
    beta, pooled, n_tok = _slopes(v, x, gene, well, len(ids), min_cells)
    adjusted = v[:, 0] - beta[gene, 0] * (x - x_ref)
    n_wells = pd.Series(well).groupby(gene).nunique().reindex(range(len(ids)), fill_value=0).to_numpy()
    out = pd.DataFrame(
        {
            "token_id": ids,
            "n_cells": n_tok,
            "n_wells": n_wells,
            "mean": np.bincount(gene, weights=v[:, 0], minlength=len(ids)) / n_tok,
            "slope": beta[:, 0],
            "pooled_slope": pooled,
            "adjusted": np.bincount(gene, weights=adjusted, minlength=len(ids)) / n_tok,
        }
    )
    logger.info("length-adjusted scores of %d genes (%d on the pooled slope)", len(out), int(pooled.sum()))
    return out
