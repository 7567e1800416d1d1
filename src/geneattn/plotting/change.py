"""Where attention moved (the study's Fig. 4 and 6).

Percentage change by rank position per layer and head, and the per-head norm change with
significance marks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._util import HIGHLIGHT, empty, new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


__all__ = ["change_by_rank", "head_change_heatmap"]


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.astype(str), errors="coerce")


def change_by_rank(
    table: pd.DataFrame,
    *,
    metric: str | None = "fold",
    marks: Mapping[str, float] | None = None,
    fig: Figure | None = None,
) -> Figure:
    """Grid (layers x heads) of the percentage change of attention by rank-position bin.

    Parameters
    ----------
    table
        ``tables/change_ci.parquet`` (``layer, head, bin_start, bin_end, pct_change`` + optional
        ``ci_low, ci_high`` bootstrap band) or ``tables/head_change.parquet`` (+ ``metric``).
        Rows whose layer/head are not integers (``"mean"``) are left out.
    metric
        Keep this ``metric`` when the table has that column.
    marks
        Vertical lines at rank positions, e.g. ``{"MDM2": 200}`` (a gene's mean rank).
    fig
        Figure to draw into (a new one when None).

    Returns
    -------
    The Figure.
    """
    import matplotlib.pyplot as plt

    require(table, ["layer", "head", "bin_start", "bin_end", "pct_change"], "change by rank")
    df = table
    if metric is not None and "metric" in df and (df["metric"] == metric).any():
        df = df[df["metric"] == metric]
    df = df.assign(_l=_numeric(df["layer"]), _h=_numeric(df["head"])).dropna(subset=["_l", "_h"])
    with style():
        layers = sorted(df["_l"].astype(int).unique()) or [0]
        heads = sorted(df["_h"].astype(int).unique()) or [0]
        if fig is None:
            fig = plt.figure(figsize=(2.1 * len(heads) + 0.8, 1.45 * len(layers) + 0.9), layout="constrained")
        axes = np.atleast_2d(fig.subplots(len(layers), len(heads), sharex=True, sharey=True, squeeze=False))
        if df.empty:
            empty(axes[0, 0], "no change table")
            return fig
        for (la, he), g in df.groupby(["_l", "_h"]):
            ax = axes[layers.index(int(la)), heads.index(int(he))]
            g = g.sort_values("bin_start")
            x = (g["bin_start"].to_numpy(float) + g["bin_end"].to_numpy(float)) / 2
            if {"ci_low", "ci_high"} <= set(g.columns):
                ax.fill_between(
                    x, g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float), alpha=0.3, color="C0", lw=0
                )
            ax.plot(x, g["pct_change"].to_numpy(float), color="C0", lw=1.2)
            ax.axhline(0, color="0.5", lw=0.6)
            for name, pos in (marks or {}).items():
                if pos is not None and np.isfinite(pos):
                    ax.axvline(pos, color=HIGHLIGHT, lw=0.8, ls="--", label=name)
        for i, la in enumerate(layers):
            axes[i, 0].set_ylabel(f"layer {la}\n% change")
        for j, he in enumerate(heads):
            axes[0, j].set_title(f"head {he}")
            axes[-1, j].set_xlabel("rank position")
        if marks:
            axes[0, -1].legend(fontsize=7, frameon=False, loc="upper right")
        fig.suptitle("attention change, fine-tuned vs pretrained, by rank position")
    return fig


def head_change_heatmap(
    table: pd.DataFrame,
    *,
    test: str = "paired_head",
    metric: str = "head_out",
    alpha: float = 0.05,
    ax: Axes | None = None,
) -> Axes:
    """Heatmap (layers x heads) of the percentage change of a per-head statistic, ``*`` where significant.

    Parameters
    ----------
    table
        ``tables/significance.parquet`` (``test, metric, layer, head, pct_change, pval_adj``) or
        ``head_norms`` (``model, layer, head, head_out_mean``: the change is computed, no marks).
    test, metric
        Rows of the significance table to show (the norm-based analysis: ``paired_head``/``head_out``).
    alpha
        Adjusted p-value threshold of the marks.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    with style():
        ax = new_ax(ax, (4.6, 3.8))
        if "head_out_mean" in table and "model" in table:
            w = table.pivot_table(index=["layer", "head"], columns="model", values="head_out_mean")
            if {"pretrained", "finetuned"} <= set(w.columns):
                df = pd.DataFrame({"pct_change": 100 * (w["finetuned"] / w["pretrained"] - 1)}).reset_index()
            else:
                df = pd.DataFrame(columns=["layer", "head", "pct_change"])
        else:
            require(table, ["layer", "head", "pct_change"], "significance")
            df = table
            if "test" in df:
                df = df[df["test"] == test]
            if "metric" in df and (df["metric"] == metric).any():
                df = df[df["metric"] == metric]
        df = df.assign(_l=_numeric(df["layer"]), _h=_numeric(df["head"])).dropna(subset=["_l", "_h"])
        if df.empty:
            return empty(ax, "no per-head test")
        mat = df.pivot_table(index="_l", columns="_h", values="pct_change", aggfunc="mean")
        v = float(np.nanmax(np.abs(mat.to_numpy()))) or 1.0
        im = ax.imshow(mat.to_numpy(), cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
        ax.figure.colorbar(im, ax=ax, label=f"% change of {metric}", shrink=0.85)
        ax.set_xticks(range(mat.shape[1]), [str(int(h)) for h in mat.columns])
        ax.set_yticks(range(mat.shape[0]), [str(int(la)) for la in mat.index])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        if "pval_adj" in df:
            p = df.pivot_table(index="_l", columns="_h", values="pval_adj", aggfunc="min").reindex_like(mat)
            for (i, j), pv in np.ndenumerate(p.to_numpy()):
                if np.isfinite(pv) and pv < alpha:
                    ax.text(j, i, "*", ha="center", va="center", fontsize=14, color="k")
        ax.set_title(
            "per-head change (fine-tuned vs pretrained)"
            + (f"; * adj. p < {alpha:g}" if "pval_adj" in df else "")
        )
    return ax
