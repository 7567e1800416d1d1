"""The most attended genes, with user-named genes highlighted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ._util import BASE, HIGHLIGHT, empty, new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


__all__ = ["top_genes"]


def top_genes(
    table: pd.DataFrame,
    *,
    k: int = 20,
    by: str = "fold_mean",
    model: str | None = "finetuned",
    highlight: Sequence[str] = (),
    ax: Axes | None = None,
) -> Axes:
    """Horizontal bars of the ``k`` genes with the largest ``by`` (rank 1 on top).

    Parameters
    ----------
    table
        ``tables/top_genes.parquet`` (`geneattn.attention.top_genes`: model, rank, gene, ``by``) or
        any table with ``gene`` and ``by`` (ranked here).
    k
        Number of genes shown.
    by
        Score column.
    model
        Keep rows of this model when the table has a ``model`` column.
    highlight
        Gene names drawn in red (e.g. MDM2); their rank is written next to the bar.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["gene", by], "top genes")
    with style():
        ax = new_ax(ax, (5, 0.22 * k + 1.2))
        df = table
        if model is not None and "model" in df and (df["model"] == model).any():
            df = df[df["model"] == model]
        df = df.sort_values("rank") if "rank" in df else df.sort_values(by, ascending=False)
        df = df.drop_duplicates("gene").head(k)
        if df.empty:
            return empty(ax, "no genes")
        hl = {h.upper() for h in highlight}
        genes = df["gene"].astype(str).tolist()
        colors = [HIGHLIGHT if g.upper() in hl else BASE for g in genes]
        y = range(len(genes))[::-1]
        ax.barh(list(y), df[by].to_numpy(), color=colors)
        ax.set_yticks(list(y), genes)
        for tick, c in zip(ax.get_yticklabels(), colors, strict=True):
            tick.set_color(c)
            tick.set_fontweight("bold" if c == HIGHLIGHT else "normal")
        ax.set_xlabel(by.replace("_", " "))
        ax.set_title(f"top {len(genes)} attended genes" + (f" ({model})" if model else ""))
    return ax
