"""The length confound: attention vs the number of genes expressed, before and after control."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._util import empty, new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


__all__ = ["length_dependence", "confound_summary"]


def length_dependence(
    table: pd.DataFrame,
    *,
    model: str | None = "finetuned",
    max_position: int | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Mean log fold attention by rank position, one line per cell-length bin (pooled over heads).

    Parameters
    ----------
    table
        ``attention/attention_by_position_length.parquet``: model, layer, head, position, length_bin, n,
        logfold_mean.
    model
        Model shown (when the table has several).
    max_position
        Clip the x axis.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["position", "length_bin", "logfold_mean"], "attention by position and length")
    with style():
        ax = new_ax(ax, (5, 3.6))
        df = table
        if model is not None and "model" in df and (df["model"] == model).any():
            df = df[df["model"] == model]
        if max_position is not None:
            df = df[df["position"] <= max_position]
        if df.empty:
            return empty(ax, "no data")
        w = df.assign(_w=df["n"] if "n" in df else 1.0)
        w = (
            w.assign(_x=w["logfold_mean"] * w["_w"])
            .groupby(["length_bin", "position"], as_index=False)[["_x", "_w"]]
            .sum()
        )
        bins = sorted(w["length_bin"].unique())
        import matplotlib as mpl

        cmap = mpl.colormaps["viridis"]
        for i, b in enumerate(bins):
            g = w[w["length_bin"] == b].sort_values("position")
            ax.plot(
                g["position"],
                g["_x"] / g["_w"],
                color=cmap(i / max(len(bins) - 1, 1)),
                lw=1,
                label=f"bin {b}",
            )
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("rank position")
        ax.set_ylabel("mean log fold attention")
        ax.set_title("attention by rank, per genes-expressed bin (short -> long)")
        if len(bins) <= 12:
            ax.legend(fontsize=6, frameon=False, ncol=2, title="length bin", title_fontsize=7)
    return ax


def confound_summary(
    table: pd.DataFrame, *, column: str = "spearman_vs_length", ax: Axes | None = None
) -> Axes:
    """Bars of a confound statistic (default: Spearman of gene score vs cell length) per score type.

    ``raw`` is attention before control; ``fold`` (x genes expressed) and ``residual`` (position- and
    length-matched) after.

    Parameters
    ----------
    table
        ``tables/confounds.parquet`` (model, layer, head, score_type, ``column``); the overall
        head mean (``layer == head == "mean"``) is shown when present.
    column
        Statistic on the y axis.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["score_type", column], "confounds")
    with style():
        ax = new_ax(ax, (4.6, 3.6))
        df = table
        if {"layer", "head"} <= set(df.columns):
            m = (df["layer"].astype(str) == "mean") & (df["head"].astype(str) == "mean")
            df = df[m] if m.any() else df
        if "model" not in df:
            df = df.assign(model="model")
        wide = df.pivot_table(index="score_type", columns="model", values=column, aggfunc="mean")
        order = [s for s in ("raw", "fold", "residual") if s in wide.index] + [
            s for s in wide.index if s not in ("raw", "fold", "residual")
        ]
        wide = wide.reindex(order)
        if wide.empty or not np.isfinite(wide.to_numpy(float)).any():
            return empty(ax, "no confound statistics")
        n = wide.shape[1]
        x = np.arange(len(wide.index))
        for j, model in enumerate(wide.columns):
            ax.bar(
                x + (j - (n - 1) / 2) * 0.8 / n, wide[model].to_numpy(float), width=0.8 / n, label=str(model)
            )
        ax.set_xticks(x, [f"{s}\n({'before' if s == 'raw' else 'after'} control)" for s in wide.index])
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_ylabel(column.replace("_", " "))
        ax.set_title("gene attention vs genes expressed per cell")
        ax.legend(fontsize=7, frameon=False)
    return ax
