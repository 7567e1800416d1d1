"""Pretrained vs fine-tuned: percentage change per head and rank-position bin, per gene; top genes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..errors import InputError
from ..stats.shrinkage import MIN_CELLS, eb_shrink, moderated_se2

if TYPE_CHECKING:  # pragma: no cover
    from .result import AttentionResult

__all__ = ["compare", "top_genes", "position_bins"]

_METRICS = ("fold", "norm", "recv", "logfold")


def _tables(result: AttentionResult | Mapping[str, pd.DataFrame]) -> Mapping[str, pd.DataFrame]:
    return result.tables if hasattr(result, "tables") else result


def position_bins(bins: int | Sequence[int], max_position: int) -> np.ndarray:
    """Bin start positions ``[n_bins + 1]`` (last = end, exclusive).

    ``bins`` is a bin width (``25`` -> 0-24, 25-49, ...) or explicit increasing edges (``[0, 25, 100, 2048]``).
    """
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise InputError(f"bins (a bin width) must be >= 1, got {bins}")
        edges = np.arange(0, max_position + 1, int(bins))
        return np.append(edges, max_position + 1) if edges[-1] != max_position + 1 else edges
    edges = np.asarray(list(bins), dtype=np.int64)
    if edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InputError(f"bins must be a width or >= 2 increasing edges, got {list(bins)}")
    return edges


def _check_models(df: pd.DataFrame, *names: str) -> None:
    have = sorted(df["model"].unique())
    for n in names:
        if n not in have:
            raise InputError(f"model {n!r} not in the result (models: {have})")


def compare(
    result: AttentionResult | Mapping[str, pd.DataFrame],
    *,
    reference: str = "pretrained",
    other: str = "finetuned",
    bins: int | Sequence[int] = 25,
    label: str = "__all__",
    metrics: Sequence[str] = ("fold", "norm"),
) -> dict[str, pd.DataFrame]:
    """Percentage change ``100 * (other_mean / ref_mean - 1)`` of ``other`` over ``reference``.

    Parameters
    ----------
    result
        `AttentionResult` (or its ``tables`` dict) holding both models over the same cells.
    reference, other
        Model names.
    bins
        Rank-position bins: a width (default 25: 0-24, 25-49, ...) or explicit edges.
    label
        Class to compare (default all cells).
    metrics
        Any of ``fold``, ``norm``, ``recv``, ``logfold``.

    Returns
    -------
    ``head_change``: layer, head, bin_start, bin_end (inclusive), metric, n_tokens, ref_mean, other_mean,
    pct_change -- means are token-weighted over the positions of the bin (= mean over all tokens of all
    cells falling in the bin).
    ``gene_change``: layer, head, token_id, ensembl_id, gene, metric, n_cells, ref_mean, other_mean,
    pct_change -- per gene ``<metric>_mean`` of `attention_by_gene`.
    """
    bad = set(metrics) - set(_METRICS)
    if bad:
        raise InputError(f"unknown metrics {sorted(bad)}; choose from {_METRICS}")
    t = _tables(result)
    pos = t["attention_by_position"]
    _check_models(pos, reference, other)
    pos = pos[pos["label"] == label]
    edges = position_bins(bins, int(pos["position"].max()))
    pos = pos.assign(bin=np.searchsorted(edges, pos["position"].to_numpy(), side="right") - 1)
    pos = pos[(pos["bin"] >= 0) & (pos["bin"] < len(edges) - 1)]
    parts = []
    for m in metrics:
        w = pos.assign(_wx=pos[f"{m}_mean"] * pos["n_cells"])
        g = w.groupby(["model", "layer", "head", "bin"], as_index=False)[["_wx", "n_cells"]].sum()
        g["mean"] = g["_wx"] / g["n_cells"]
        ref = g[g["model"] == reference].drop(columns=["model", "_wx"])
        oth = g[g["model"] == other].drop(columns=["model", "_wx", "n_cells"])
        j = ref.merge(oth, on=["layer", "head", "bin"], suffixes=("_ref", "_other"))
        parts.append(
            pd.DataFrame(
                {
                    "layer": j["layer"],
                    "head": j["head"],
                    "bin_start": edges[j["bin"]],
                    "bin_end": edges[j["bin"] + 1] - 1,
                    "metric": m,
                    "n_tokens": j["n_cells"],
                    "ref_mean": j["mean_ref"],
                    "other_mean": j["mean_other"],
                }
            )
        )
    head = pd.concat(parts, ignore_index=True)
    head["pct_change"] = 100 * (head["other_mean"] / head["ref_mean"] - 1)

    genes = t["attention_by_gene"]
    genes = genes[genes["label"] == label]
    keys = ["layer", "head", "token_id", "ensembl_id", "gene"]
    gparts = []
    for m in metrics:
        ref = genes.loc[genes["model"] == reference, [*keys, "n_cells", f"{m}_mean"]]
        oth = genes.loc[genes["model"] == other, [*keys, f"{m}_mean"]]
        j = ref.merge(oth, on=keys, suffixes=("_ref", "_other"))
        j = j.rename(columns={f"{m}_mean_ref": "ref_mean", f"{m}_mean_other": "other_mean"})
        gparts.append(j.assign(metric=m)[[*keys, "metric", "n_cells", "ref_mean", "other_mean"]])
    gene = pd.concat(gparts, ignore_index=True)
    gene["pct_change"] = 100 * (gene["other_mean"] / gene["ref_mean"] - 1)
    return {"head_change": head, "gene_change": gene}


def is_special(ids: pd.Series) -> np.ndarray:
    """Whether each vocabulary entry is a special token (``<pad>``, ``<cls>``, ...), not a gene."""
    s = ids.astype(str)
    return (s.str.startswith("<") & s.str.endswith(">")).to_numpy()


def top_genes(
    table: pd.DataFrame | AttentionResult,
    *,
    k: int = 20,
    by: str = "fold_mean",
    model: str | None = None,
    layer: int | None = None,
    head: int | None = None,
    label: str = "__all__",
    per_head: bool = False,
    min_cells: int = MIN_CELLS,
    genes_only: bool = True,
    shrink: bool = True,
) -> pd.DataFrame:
    """The ``k`` genes with the largest ``by`` in ``attention_by_gene``.

    Parameters
    ----------
    table
        ``attention_by_gene`` DataFrame, or an `AttentionResult`.
    k, by
        How many genes, ranked by which column (descending).
    model
        Model name (required when the table holds several).
    layer, head
        Restrict to one layer / head. Unset dimensions are averaged over (both unset: "overall", the
        mean of ``by`` over all layers and heads).
    label
        Class (default all cells).
    per_head
        Top ``k`` within every (layer, head) instead of averaging.
    min_cells
        Ignore genes seen in fewer cells (default `geneattn.stats.shrinkage.MIN_CELLS`, 30).
    genes_only
        Leave out special tokens (``<cls>``, ``<eos>``, ...): they are no genes.
    shrink
        Rank on the empirical-Bayes shrunken mean (`geneattn.stats.shrinkage.eb_shrink`; standard
        errors from the table's ``<stat>_sd`` and ``n_cells``, averaged over the heads averaged), so a
        gene seen in few cells cannot top the list on a noisy mean (the prior is fitted over the
        genes kept). Without an ``_sd`` column, genes seen in fewer than
        `geneattn.stats.shrinkage.MIN_CELLS` cells are left out whatever ``min_cells`` says.

    Returns
    -------
    Columns: model, layer, head (-1 where averaged over), rank (1 = top), token_id, ensembl_id, gene,
    n_cells, ``by`` and ``<by>_shrunken`` (NaN when not shrunk).
    """
    df = table.tables["attention_by_gene"] if hasattr(table, "tables") else table
    if by not in df.columns:
        raise InputError(f"unknown column {by!r} for top_genes")
    models = sorted(df["model"].unique())
    if model is None:
        if len(models) != 1:
            raise InputError(f"several models in the table ({models}); pass model=")
        model = models[0]
    _check_models(df, model)
    df = df[(df["model"] == model) & (df["label"] == label) & (df["n_cells"] >= min_cells)]
    if genes_only:
        df = df[~is_special(df["ensembl_id"])]
    if layer is not None:
        df = df[df["layer"] == layer]
    if head is not None:
        df = df[df["head"] == head]
    gkeys = ["token_id", "ensembl_id", "gene"]
    sd_col = f"{by.removesuffix('_mean')}_sd"
    eb = shrink and by.endswith("_mean") and sd_col in df.columns
    if shrink and not eb:
        df = df[df["n_cells"] >= max(min_cells, MIN_CELLS)]
    if eb:
        df = df.assign(_se2=moderated_se2(df[sd_col].to_numpy(float) ** 2, df["n_cells"].to_numpy(float)))
    shr = f"{by}_shrunken"
    if per_head:
        df = df.assign(**{shr: np.nan})
        if eb:
            for _, g in df.groupby(["layer", "head"]):
                df.loc[g.index, shr] = eb_shrink(g[by].to_numpy(float), g["_se2"].to_numpy())[0]
        df = df.sort_values(shr if eb else by, ascending=False, kind="stable")
        out = df.groupby(["layer", "head"], sort=True).head(k).copy()
        out["rank"] = out.groupby(["layer", "head"]).cumcount() + 1
        out = out.sort_values(["layer", "head", "rank"])
    else:
        extra = {"_se2": ("_se2", "mean")} if eb else {}
        out = df.groupby(gkeys, as_index=False).agg(n_cells=("n_cells", "max"), **{by: (by, "mean")}, **extra)
        out[shr] = eb_shrink(out[by].to_numpy(float), out["_se2"].to_numpy())[0] if eb else np.nan
        out = out.sort_values(shr if eb else by, ascending=False, kind="stable").head(k)
        out["layer"] = -1 if layer is None else layer
        out["head"] = -1 if head is None else head
        out["rank"] = np.arange(1, len(out) + 1)
    out["model"] = model
    return out[["model", "layer", "head", "rank", *gkeys, "n_cells", by, shr]].reset_index(drop=True)
