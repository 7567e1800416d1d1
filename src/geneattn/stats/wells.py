"""The depth confound at the level of wells: does the leading axis of attention follow depth or dose.

A well holds one dose and one depth (its cells share culture and sequencing), so the wells are the
units of the check (statistics review 2026-12-07 §5). Per model:

1. the well × gene matrix of mean attention per gene (head-mean log fold over the well's cells that
   hold the gene), on the genes present in every well;
2. its first principal component (genes centred), the share of variance it carries, and the
   Spearman correlation of the wells' PC1 scores with the well's median ``n_genes`` (genes
   expressed per cell *before* truncation) and with the dose (the class label read as a number;
   Spearman is the same for dose and log dose);
3. the same after the within-well ``n_genes`` adjustment of `geneattn.stats.adjust.length_adjust`.

What to expect when depth is controlled without erasing dose: the pretrained model's PC1 is weakly
related to depth (|ρ| < 0.3 after the adjustment) and the fine-tuned model's PC1 is the dose axis
(|ρ| with log dose ≥ 0.9), before and after.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from .adjust import TokenLayout, length_adjust

__all__ = ["well_gene_matrix", "first_component", "well_confound", "WELL_CONFOUND_COLUMNS"]

WELL_CONFOUND_COLUMNS = [
    "model",
    "adjustment",
    "n_wells",
    "n_genes_used",
    "pc1_share",
    "rho_pc1_n_genes",
    "abs_rho_pc1_n_genes",
    "rho_pc1_log_dose",
    "abs_rho_pc1_log_dose",
    "unit",
]


def well_gene_matrix(values: np.ndarray, layout: TokenLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean token value per well and gene, on the genes present in every well.

    Parameters
    ----------
    values
        ``[n_tokens]`` per-token values (e.g. head-mean log fold).
    layout
        Gene, cell and well of every token.

    Returns
    -------
    ``(matrix [n_wells, n_genes_kept], wells [n_wells], token ids [n_genes_kept])``; wells in order of
    first appearance among the cells.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (len(layout.token_ids),):
        msg = f"values need one entry per token: shape {v.shape} for {len(layout.token_ids)} tokens"
        raise InputError(msg)
    well_code, well_names = pd.factorize(np.asarray(layout.wells))
    w = well_code[np.asarray(layout.cell_of_token, dtype=np.int64)]
    ids, g = np.unique(np.asarray(layout.token_ids), return_inverse=True)
    key = w * len(ids) + g
    size = len(well_names) * len(ids)
    n = np.bincount(key, minlength=size).reshape(len(well_names), len(ids))
    s = np.bincount(key, weights=v, minlength=size).reshape(len(well_names), len(ids))
    keep = (n > 0).all(axis=0)
    return s[:, keep] / n[:, keep], np.asarray(well_names), ids[keep]


def first_component(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Scores of the rows on the first principal component (columns centred) and its share of variance."""
    m = np.asarray(matrix, dtype=np.float64)
    m = m - m.mean(axis=0, keepdims=True)
    if m.shape[0] < 2 or m.shape[1] < 1 or not np.any(m):
        return np.full(m.shape[0], np.nan), float("nan")
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    return u[:, 0] * s[0], float(s[0] ** 2 / np.sum(s**2))


def _well_values(per_cell: np.ndarray, wells: np.ndarray, order: np.ndarray, how: str) -> np.ndarray:
    """Per well (in ``order``) the median (``how="median"``) or the first value of a per-cell column."""
    s = pd.Series(per_cell).groupby(np.asarray(wells))
    return (s.median() if how == "median" else s.first()).reindex(order).to_numpy()


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(stats.spearmanr(a[ok], b[ok]).statistic)


def _dose(labels: np.ndarray) -> np.ndarray:
    """The labels as numbers (NaN for all when any label is not a number)."""
    try:
        return np.asarray(labels, dtype=str).astype(np.float64)
    except ValueError:
        return np.full(len(labels), np.nan)


def well_confound(
    values: np.ndarray, layout: TokenLayout, labels: np.ndarray, *, model: str, min_cells: int = 10
) -> pd.DataFrame:
    """PC1 of the well × gene attention matrix vs well depth and dose, before and after the adjustment.

    Parameters
    ----------
    values
        ``[n_tokens]`` head-mean log fold.
    layout
        Gene, cell, **genes expressed before truncation** (``lengths``) and well of every token.
    labels
        ``[n_cells]`` class per cell (a dose: read as a number for the dose correlation).
    model
        Name written in the ``model`` column.
    min_cells
        As in `geneattn.stats.adjust.length_adjust`.

    Returns
    -------
    DataFrame `WELL_CONFOUND_COLUMNS`, rows ``adjustment`` = ``"none"`` and ``"n_genes"``.
    """
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(layout.lengths):
        msg = f"labels has {len(labels)} entries for {len(layout.lengths)} cells"
        raise InputError(msg)
    rows = []
    for adjustment, v in (("none", values), ("n_genes", length_adjust(values, layout, min_cells=min_cells))):
        matrix, wells, ids = well_gene_matrix(v, layout)
        pc1, share = first_component(matrix)
        depth = _well_values(np.asarray(layout.lengths, dtype=np.float64), layout.wells, wells, "median")
        dose = _well_values(_dose(labels), layout.wells, wells, "first")
        r_depth, r_dose = _spearman(pc1, depth), _spearman(pc1, dose)
        rows.append({"model": model, "adjustment": adjustment, "n_wells": len(wells), "n_genes_used": len(ids),
                     "pc1_share": share, "rho_pc1_n_genes": r_depth, "abs_rho_pc1_n_genes": abs(r_depth),
                     "rho_pc1_log_dose": r_dose, "abs_rho_pc1_log_dose": abs(r_dose), "unit": "well"})  # fmt: skip
    return pd.DataFrame(rows, columns=WELL_CONFOUND_COLUMNS)
