"""Agreement with differential expression (the study's Fig. 5).

Expression of the most attended genes across classes, and DE score vs attention per gene.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._classes import sort_classes
from ._util import BASE, HIGHLIGHT, empty, new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


__all__ = ["expression_by_class", "de_vs_attention"]


def expression_by_class(
    table: pd.DataFrame, *, genes: Sequence[str] | None = None, ax: Axes | None = None
) -> Axes:
    """Heatmap of mean log-normalised expression (z-scored per gene) of genes across classes.

    Parameters
    ----------
    table
        Tidy ``gene, label, mean_expr`` (e.g. `geneattn.get.expression_by_class_df`).
    genes
        Genes in display order (default: the table's order).
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["gene", "label", "mean_expr"], "expression by class")
    with style():
        genes = list(dict.fromkeys(genes if genes is not None else table["gene"].astype(str)))
        ax = new_ax(ax, (4.2, 0.22 * len(genes) + 1.4))
        if table.empty or not genes:
            return empty(ax, "no expression data")
        wide = table.pivot_table(index="gene", columns="label", values="mean_expr", aggfunc="mean")
        wide = wide.reindex(index=[g for g in genes if g in wide.index], columns=sort_classes(wide.columns))
        z = wide.sub(wide.mean(axis=1), axis=0).div(wide.std(axis=1).replace(0, 1), axis=0)
        im = ax.imshow(z.to_numpy(), cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
        ax.figure.colorbar(im, ax=ax, label="expression (z-score)", shrink=0.8)
        ax.set_xticks(range(z.shape[1]), [str(c) for c in z.columns], rotation=45, ha="right")
        ax.set_yticks(range(z.shape[0]), z.index.astype(str))
        ax.set_xlabel("class")
        ax.set_title("expression of the most attended genes")
    return ax


def de_vs_attention(
    table: pd.DataFrame,
    *,
    x: str = "de_score",
    y: str = "attention",
    highlight: Sequence[str] = (),
    n_label: int = 8,
    ax: Axes | None = None,
) -> Axes:
    """Scatter of a gene's DE score against its attention score; planted genes (if known) coloured.

    Parameters
    ----------
    table
        One row per gene: ``gene, <x>, <y>`` (+ optional ``planted`` bool), e.g. the stats stage's
        ``de_vs_attention`` table (``geneattn.get.table(results, "de_vs_attention")``), where the DE
        score is computed; the plot computes nothing.
    x, y
        Columns on the axes.
    highlight
        Genes marked and labelled in red.
    n_label
        Also label the top genes by ``y``.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["gene", x, y], "DE vs attention")
    with style():
        ax = new_ax(ax, (4.8, 4.2))
        df = table.dropna(subset=[x, y])
        if df.empty:
            return empty(ax, "no genes with both scores")
        if "planted" in df and df["planted"].astype(bool).any():
            p = df["planted"].astype(bool).to_numpy()
            ax.scatter(
                df[x][~p], df[y][~p], s=6, color="0.65", label="background", linewidths=0, rasterized=True
            )
            ax.scatter(df[x][p], df[y][p], s=10, color=BASE, label="planted (true DE)", linewidths=0)
            ax.legend(fontsize=7, frameon=False)
        else:
            ax.scatter(df[x], df[y], s=6, color=BASE, linewidths=0, rasterized=True)
        hl = {h.upper() for h in highlight}
        lab = set(df.nlargest(n_label, y)["gene"].astype(str))
        for r in df.itertuples(index=False):
            g = str(r.gene)
            if g.upper() in hl or g in lab:
                c = HIGHLIGHT if g.upper() in hl else "0.2"
                if g.upper() in hl:
                    ax.scatter([getattr(r, x)], [getattr(r, y)], s=30, color=HIGHLIGHT, zorder=3)
                ax.annotate(
                    g,
                    (getattr(r, x), getattr(r, y)),
                    fontsize=7,
                    color=c,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        rho = df[[x, y]].rank().corr().iloc[0, 1]
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(y.replace("_", " "))
        ax.set_title(
            f"DE vs attention per gene (Spearman {rho:.2f})"
            if np.isfinite(rho)
            else "DE vs attention per gene"
        )
    return ax
