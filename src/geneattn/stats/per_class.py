"""Highlighted genes per class: detection, rank position and attention rank, with run- and well-level intervals.

A gene's position and detection differ by class (MDM2: median position 492 at dose 0.1 where 41 % of
cells express it, 16 at dose 10 where all do), so a pooled "mean position" describes no cell and is
not reported here. Per class and gene:

* ``detection`` (= ``in_input_share``: fraction of the class's cells whose *input* holds the gene)
  and ``median_position`` (0 = top-ranked token) among those cells, with percentile intervals from
  resampling the class's wells (the unit: cells of one well share culture and depth). These are
  properties of the cells, the same for every model.
* When the per-cell expression is given (``expressed``): ``expressed_share`` (cells expressing the
  gene before truncation), ``cut_share`` (expressed but beyond the model's input: the cell was cut
  before the gene's rank) and ``cut_share_of_expressing`` (``cut_share / expressed_share``), with
  well-bootstrap intervals. A gene's median position is then conditional on having survived the cut:
  MDM2 at low dose is expressed in ~40 % of cells but in the 254-gene input of ~4 %.
* ``mean_fold`` (mean over expressing cells of the per-token fold, ``exp`` of the head column's log
  fold) and ``rank`` (1 = most attended among the genes expressed in at least ``min_cells`` of the
  class's cells), for the pretrained model and each fine-tuned run. The interval of the fine-tuned
  rank is the **range (min–max) over the real-label runs**: with 2-3 runs a t-interval is
  meaningless, and the range is exactly what the runs showed. Permuted-label runs give the range
  expected without task information.

Inputs are token stores of the same cells (`TokenStore` or anything with its ``offsets``,
``token_ids`` and ``logfold`` arrays, e.g. a `types.SimpleNamespace` of plain arrays).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["TokenArrays", "position_by_class", "attention_rank_by_class", "highlighted_by_class"]


class TokenArrays(Protocol):
    """What the functions read from a token store (`geneattn.stats.confounds.TokenStore` has it)."""

    offsets: np.ndarray  # [n_cells + 1]
    token_ids: np.ndarray  # [n_tokens]
    logfold: np.ndarray  # [n_tokens, n_layers, n_heads]


def _lengths(store: TokenArrays) -> np.ndarray:
    return np.diff(np.asarray(store.offsets, dtype=np.int64))


def _per_cell(store: TokenArrays, values: Sequence | np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values).astype(str)
    if len(v) != len(store.offsets) - 1:
        msg = f"{name} has {len(v)} entries for {len(store.offsets) - 1} cells"
        raise InputError(msg)
    return v


def _class_order(labels: np.ndarray) -> list[str]:
    uniq = sorted(set(labels.tolist()))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def _column(store: TokenArrays, head: tuple[str | int, str | int]) -> np.ndarray:
    """Per-token fold of one head, or ``exp`` of the mean log fold over a layer's / all heads."""
    lf = np.asarray(store.logfold)
    lf = lf[:, :, None] if lf.ndim == 2 else lf
    layer, h = (str(x) for x in head)
    if layer == "mean":
        col = lf.reshape(len(lf), -1).mean(axis=1, dtype=np.float64)
    elif h == "mean":
        col = lf[:, int(layer), :].mean(axis=1, dtype=np.float64)
    else:
        col = lf[:, int(layer), int(h)].astype(np.float64)
    return np.exp(col)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Lower weighted median of sorted ``x [n]`` under weights ``w [B, n]`` (NaN where all weights are 0)."""
    cw = np.cumsum(w, axis=1)
    total = cw[:, -1:]
    idx = np.argmax(cw >= total / 2, axis=1)
    return np.where(total[:, 0] > 0, x[np.minimum(idx, len(x) - 1)], np.nan)


def _share_rows(
    name: str, per_well: np.ndarray, n_cells_well: np.ndarray, counts: np.ndarray
) -> dict[str, float]:
    """``name``, ``name_low``, ``name_high``: a share of the class's cells and its well-bootstrap percentiles."""
    boot = (counts @ per_well) / (counts @ n_cells_well)
    lo, hi = np.nanquantile(boot, [0.025, 0.975])
    return {name: float(per_well.sum() / n_cells_well.sum()), f"{name}_low": lo, f"{name}_high": hi}


def _gene_class_rows(
    pos: np.ndarray,
    tok_cell_well: np.ndarray,
    n_cells_well: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    expressed_well: np.ndarray | None = None,
) -> dict[str, float]:
    """Detection and median position of one gene in one class, and their well-bootstrap percentiles.

    ``pos``: positions of the gene's tokens in the class's cells, ``tok_cell_well``: their well index
    (0..W-1), ``n_cells_well [W]``: cells per well, ``expressed_well [W]``: cells per well expressing
    the gene before truncation (None: unknown).
    """
    n_w = len(n_cells_well)
    order = np.argsort(pos, kind="mergesort")
    x, wk = pos[order].astype(float), tok_cell_well[order]
    counts = rng.multinomial(n_w, np.full(n_w, 1 / n_w), size=n_boot).astype(float)  # [B, W]
    in_well = np.bincount(wk, minlength=n_w).astype(float)
    det = _share_rows("detection", in_well, n_cells_well, counts)
    med = _weighted_median(x, counts[:, wk]) if len(x) else np.full(n_boot, np.nan)
    p_lo, p_hi = np.nanquantile(med, [0.025, 0.975]) if np.isfinite(med).any() else (np.nan, np.nan)
    row = {"n_expressing": len(x), **det, "in_input_share": det["detection"],
           "median_position": float(np.median(x)) if len(x) else np.nan, "position_low": p_lo,
           "position_high": p_hi}  # fmt: skip
    if expressed_well is not None:
        row.update(_share_rows("expressed_share", expressed_well, n_cells_well, counts))
        row.update(_share_rows("cut_share", np.maximum(expressed_well - in_well, 0), n_cells_well, counts))
        e = row["expressed_share"]
        row["cut_share_of_expressing"] = row["cut_share"] / e if e > 0 else np.nan
    return row


def position_by_class(
    store: TokenArrays,
    labels: Sequence | np.ndarray,
    wells: Sequence | np.ndarray,
    *,
    genes: Mapping[str, int],
    expressed: Mapping[str, Sequence | np.ndarray] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Detection and median rank position of ``genes`` per class, with 95% intervals over wells.

    Parameters
    ----------
    store
        Token store (positions follow from ``offsets``; 0 = highest-ranked token of the cell).
    labels, wells
        Class and well per cell. Wells are resampled within each class (a (class, well) pair is a unit).
    genes
        Gene name -> token id.
    expressed
        Gene name -> whether each cell expresses it before truncation (bool per cell, the store's
        order). Adds the expressed and cut shares (module docstring); genes left out get NaN.
    n_boot
        Bootstrap resamples of wells.
    seed
        Seed of the bootstrap.

    Returns
    -------
    DataFrame ``class, gene, token_id, n_cells, n_wells, n_expressing, detection, detection_low,
    detection_high, in_input_share, median_position, position_low, position_high, interval_unit``
    (positions among the cells whose input holds the gene; ``n_expressing`` counts them) and, with
    ``expressed``, ``expressed_share(_low/_high), cut_share(_low/_high), cut_share_of_expressing``.
    """
    labels, wells = _per_cell(store, labels, "labels"), _per_cell(store, wells, "wells")
    lengths = _lengths(store)
    cell = np.repeat(np.arange(len(lengths)), lengths)
    positions = np.arange(len(cell)) - np.repeat(np.asarray(store.offsets)[:-1], lengths)
    tok = np.asarray(store.token_ids)
    rng = np.random.default_rng(seed)
    rows = []
    for cls in _class_order(labels):
        in_cls = labels == cls
        wcode, wnames = pd.factorize(wells[in_cls])
        cell_well = np.full(len(labels), -1)
        cell_well[in_cls] = wcode
        n_cells_well = np.bincount(wcode, minlength=len(wnames)).astype(float)
        for name, tid in genes.items():
            sel = (tok == tid) & in_cls[cell]
            ew = None
            if name in (expressed or {}):
                e = np.asarray(expressed[name], dtype=bool)
                if len(e) != len(labels):
                    msg = f"expressed[{name!r}] has {len(e)} entries for {len(labels)} cells"
                    raise InputError(msg)
                ew = np.bincount(wcode, weights=e[in_cls].astype(float), minlength=len(wnames))
            stats_ = _gene_class_rows(positions[sel], cell_well[cell[sel]], n_cells_well, n_boot, rng, ew)
            rows.append({"class": cls, "gene": name, "token_id": int(tid), "n_cells": int(in_cls.sum()),
                         "n_wells": len(wnames), **stats_, "interval_unit": "well (bootstrap within class)"})  # fmt: skip
    return pd.DataFrame(rows)


def attention_rank_by_class(
    stores: Mapping[str, TokenArrays],
    labels: Sequence | np.ndarray,
    genes: Mapping[str, int],
    *,
    head: tuple[str | int, str | int] = ("mean", "mean"),
    min_cells: int = 10,
) -> pd.DataFrame:
    """Mean fold and attention rank of ``genes`` per class, for each model/run.

    The rank is 1 for the gene with the highest mean fold among the genes expressed in at least
    ``min_cells`` of the class's cells (NaN for a highlighted gene expressed in fewer).

    Parameters
    ----------
    stores
        Run name -> token store (same cells in the same order).
    labels
        Class per cell.
    genes
        Gene name -> token id.
    head
        ``(layer, head)``; ``"mean"`` averages the log fold over a layer's heads or over all heads.
    min_cells
        Expressing cells a gene needs in a class to be ranked.

    Returns
    -------
    DataFrame ``run, class, gene, token_id, n_cells, mean_fold, rank, n_ranked``.
    """
    first = next(iter(stores.values()))
    labels = _per_cell(first, labels, "labels")
    for name, st in stores.items():
        if not (np.array_equal(st.offsets, first.offsets) and np.array_equal(st.token_ids, first.token_ids)):
            msg = f"token store {name!r} holds other cells or tokens than the first one"
            raise InputError(msg)
    classes = _class_order(labels)
    code = pd.Categorical(labels, categories=classes).codes
    tok = np.asarray(first.token_ids, dtype=np.int64)
    n_tok = max([int(tok.max()) if len(tok) else 0, *genes.values()]) + 1
    key = np.repeat(code, _lengths(first)).astype(np.int64) * n_tok + tok
    cnt = np.bincount(key, minlength=len(classes) * n_tok).reshape(len(classes), n_tok)
    rows = []
    for run, st in stores.items():
        sums = np.bincount(key, weights=_column(st, head), minlength=len(classes) * n_tok)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums.reshape(len(classes), n_tok) / cnt
        ranked = np.where(cnt >= min_cells, mean, np.nan)
        for k, cls in enumerate(classes):
            n_ranked = int(np.isfinite(ranked[k]).sum())
            rank = pd.Series(ranked[k]).rank(ascending=False, method="average").to_numpy()
            for name, tid in genes.items():
                rows.append({"run": run, "class": cls, "gene": name, "token_id": int(tid), "n_cells": int(cnt[k, tid]),
                             "mean_fold": mean[k, tid], "rank": rank[tid], "n_ranked": n_ranked})  # fmt: skip
    return pd.DataFrame(rows)


def highlighted_by_class(
    stores: Mapping[str, TokenArrays],
    kinds: Mapping[str, str],
    labels: Sequence | np.ndarray,
    *,
    wells: Sequence | np.ndarray,
    genes: Mapping[str, int],
    expressed: Mapping[str, Sequence | np.ndarray] | None = None,
    head: tuple[str | int, str | int] = ("mean", "mean"),
    min_cells: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per class and highlighted gene: position and detection (well intervals) and attention ranks.

    Parameters
    ----------
    stores
        Run name -> token store of the same cells (held-out cells).
    kinds
        Run name -> ``"pretrained"`` (exactly one), ``"real"`` or ``"permuted"``.
    labels, wells
        Class and well per cell.
    genes
        Gene name -> token id.
    expressed
        As in `position_by_class` (expressed and cut shares).
    head, min_cells
        As in `attention_rank_by_class`.
    n_boot, seed
        As in `position_by_class`.

    Returns
    -------
    `position_by_class` columns plus ``pretrained_rank, pretrained_fold``, ``finetuned_rank`` (mean
    over real runs) with ``finetuned_rank_min``/``_max`` (range over real runs), ``rank_change``
    (finetuned − pretrained, mean) with ``rank_change_min``/``_max``, ``finetuned_fold`` (mean),
    ``permuted_rank_min``/``_max``, ``n_real_runs``, ``n_permuted_runs``, ``n_ranked``.
    """
    bad = {k for k in kinds.values()} - {"pretrained", "real", "permuted"}
    pre = [r for r, k in kinds.items() if k == "pretrained"]
    if bad or len(pre) != 1 or set(kinds) != set(stores):
        msg = "kinds must name every store once: exactly one 'pretrained', others 'real' or 'permuted'"
        raise InputError(msg)
    pos = position_by_class(stores[pre[0]], labels, wells, genes=genes, expressed=expressed, n_boot=n_boot,
                            seed=seed)  # fmt: skip
    att = attention_rank_by_class(stores, labels, genes, head=head, min_cells=min_cells)
    att["kind"] = att["run"].map(kinds)
    base = att[att.kind == "pretrained"].set_index(["class", "gene"])
    ft = att[att.kind == "real"].copy()
    ft["rank_change"] = (
        ft["rank"].to_numpy() - base.loc[list(zip(ft["class"], ft["gene"], strict=True)), "rank"].to_numpy()
    )
    g_real = ft.groupby(["class", "gene"])
    g_perm = att[att.kind == "permuted"].groupby(["class", "gene"])["rank"]
    summary = pd.DataFrame(
        {
            "pretrained_rank": base["rank"],
            "pretrained_fold": base["mean_fold"],
            "n_ranked": base["n_ranked"],
            "finetuned_rank": g_real["rank"].mean(),
            "finetuned_rank_min": g_real["rank"].min(),
            "finetuned_rank_max": g_real["rank"].max(),
            "rank_change": g_real["rank_change"].mean(),
            "rank_change_min": g_real["rank_change"].min(),
            "rank_change_max": g_real["rank_change"].max(),
            "finetuned_fold": g_real["mean_fold"].mean(),
            "permuted_rank_min": g_perm.min(),
            "permuted_rank_max": g_perm.max(),
            "n_real_runs": g_real["rank"].size(),
            "n_permuted_runs": g_perm.size(),
        }
    )
    summary[["n_real_runs", "n_permuted_runs"]] = (
        summary[["n_real_runs", "n_permuted_runs"]].fillna(0).astype(int)
    )
    return pos.merge(summary.reset_index(), on=["class", "gene"], how="left")
