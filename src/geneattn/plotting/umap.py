"""UMAP of the cells coloured by class or by genes expressed (the study's Fig. 2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._classes import sort_classes
from ._util import new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


__all__ = ["umap"]


def umap(
    table: pd.DataFrame, *, color: str = "label", ax: Axes | None = None, s: float | None = None
) -> Axes:
    """Scatter of ``umap1`` vs ``umap2`` coloured by a categorical (``label``) or numeric (``n_genes``) column.

    Parameters
    ----------
    table
        ``tables/umap.parquet``: ``cell_id, umap1, umap2, label`` (+ optional ``n_genes``).
    color
        Column to colour by.
    ax
        Axes to draw into (a new figure when None).
    s
        Marker size (default by number of cells).

    Returns
    -------
    The Axes.
    """
    require(table, ["umap1", "umap2", color], "umap")
    with style():
        ax = new_ax(ax, (5, 4.2))
        s = s if s is not None else float(np.clip(4000 / max(len(table), 1), 2, 20))
        values = table[color]
        if pd.api.types.is_numeric_dtype(values) and color != "label":
            sc = ax.scatter(
                table["umap1"], table["umap2"], c=values, s=s, cmap="viridis", linewidths=0, rasterized=True
            )
            ax.figure.colorbar(sc, ax=ax, label=color.replace("_", " "), shrink=0.8)
        else:
            import matplotlib as mpl

            labels = sort_classes(values.astype(str))
            cmap = mpl.colormaps["viridis" if len(labels) > 10 else "tab10"]
            for i, lab in enumerate(labels):
                m = values.astype(str).to_numpy() == lab
                c = cmap(i / max(len(labels) - 1, 1)) if len(labels) > 10 else cmap(i)
                ax.scatter(
                    table["umap1"][m],
                    table["umap2"][m],
                    s=s,
                    color=c,
                    label=lab,
                    linewidths=0,
                    rasterized=True,
                )
            ax.legend(title=color, markerscale=2, fontsize=7, frameon=False, loc="best")
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"cells coloured by {color.replace('_', ' ')}")
    return ax
