"""`top_genes`, `gene_attention` (per class) and `attention_change` from an annotated AnnData."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .. import get

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["top_genes", "gene_attention", "attention_change"]


def top_genes(
    adata: AnnData,
    *,
    key: str = "gene_attention",
    group: str = "__all__",
    model: str | None = None,
    n: int = 20,
    highlight: Sequence[str] = (),
    ax: Axes | None = None,
) -> Figure:
    """Bars of the ``n`` most attended genes (``fold_mean`` over layers and heads; `geneattn.get.ranked_genes`).

    ``group`` picks a class of ``groupby`` (default all cells); ``highlight`` genes are drawn in red
    with their rank. Draws into ``ax`` when given.
    """
    from ..plotting import top_genes as draw

    ranked = get.ranked_genes(adata, key=key, group=group, model=model)
    ax = draw(ranked, k=n, by="fold_mean", model=None, highlight=highlight, ax=ax)
    ax.set_title(f"top {min(n, len(ranked))} attended genes" + ("" if group == "__all__" else f" ({group})"))
    _mark_ranks(ax, ranked, highlight, n)
    return ax.figure


def _mark_ranks(ax: Axes, ranked: pd.DataFrame, highlight: Sequence[str], n: int) -> None:
    """Name highlighted genes outside the top ``n`` with their rank (e.g. ``MDM2: rank 31``)."""
    rank = dict(zip(ranked["gene"].astype(str).str.upper(), ranked["rank"], strict=True))
    notes = [f"{h}: rank {rank[h.upper()]}" for h in highlight if rank.get(h.upper(), 0) > n]
    if notes:
        ax.text(
            0.98, 0.02, "\n".join(notes), transform=ax.transAxes, ha="right", va="bottom", color="#d62728"
        )


def gene_attention(
    adata: AnnData,
    genes: Sequence[str],
    *,
    key: str = "gene_attention",
    model: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Attention each gene receives in each class (``fold_mean`` over layers and heads; 1 = uniform share).

    Needs `geneattn.tl.gene_attention` with ``groupby``. One group of bars per gene, one bar per class.
    """
    from ..errors import InputError
    from ..plotting._util import empty, new_ax, style

    df = get.gene_attention(adata, key=key, model=model)
    df = df[(df["group"] != "__all__") & df["gene"].isin(list(genes))]
    with style():
        ax = new_ax(ax, (1.2 * max(len(genes), 2) + 1.5, 3))
        if df.empty:
            if f"{key}_groups" not in adata.varm:
                msg = f"no per-class attention in varm[{key!r}_groups]: run geneattn.tl.gene_attention(groupby=...)"
                raise InputError(msg)
            return empty(ax, "none of these genes was seen").figure
        table = df.groupby(["gene", "group"], sort=False)["fold_mean"].mean().unstack("group")
        groups = [str(g) for g in adata.uns[key]["groups"] if str(g) in table.columns]
        table = table.reindex(index=[g for g in genes if g in table.index], columns=groups)
        width = 0.8 / len(groups)
        for i, g in enumerate(groups):
            ax.bar(np.arange(len(table)) + i * width, table[g].to_numpy(), width, label=g)
        ax.set_xticks(np.arange(len(table)) + 0.4 - width / 2, table.index)
        ax.axhline(1, color="0.5", lw=0.6)
        ax.set_ylabel("fold mean (1 = uniform)")
        ax.legend(title=adata.uns[key]["params"].get("groupby", "group"), fontsize=7, frameon=False)
    return ax.figure


def attention_change(
    adata: AnnData,
    *,
    key: str = "attention_change",
    metric: str = "fold",
    group: str = "__all__",
    marks: Mapping[str, float] | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Grid (layers x heads) of the percentage change by rank-position bin (`geneattn.tl.attention_change`).

    ``marks`` draws vertical lines at rank positions, e.g. ``{"MDM2": 40}``.
    """
    from ..plotting import change_by_rank

    table = get.attention_change(adata, key=key, by="head", metric=metric, group=group)
    return change_by_rank(table, metric=metric, marks=marks, fig=fig)
