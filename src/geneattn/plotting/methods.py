"""Method comparison: recovery of the true signal by attention and simpler gene scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ._util import BASE, HIGHLIGHT, empty, new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


__all__ = ["method_comparison"]


def method_comparison(table: pd.DataFrame, *, metric: str | None = None, ax: Axes | None = None) -> Axes:
    """Horizontal bars of a metric per method and score type, attention rows in red.

    Parameters
    ----------
    table
        ``tables/methods.parquet`` (method, score_type, auroc_planted, spearman_vs_de, ...).
    metric
        Column shown; default ``auroc_planted`` when it has values (simulated data), else ``spearman_vs_de``.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["method"], "methods")
    if metric is None:
        ok = "auroc_planted" in table and table["auroc_planted"].notna().any()
        metric = "auroc_planted" if ok else "spearman_vs_de"
    with style():
        df = table.dropna(subset=[metric]) if metric in table else table.iloc[0:0]
        ax = new_ax(ax, (5, 0.25 * max(len(df), 1) + 1.4))
        if df.empty:
            return empty(ax, f"no {metric}")
        names = df["method"].astype(str) + (
            " / " + df["score_type"].astype(str) if "score_type" in df else ""
        )
        df = df.assign(_name=names).sort_values(metric)
        colors = [HIGHLIGHT if m == "attention" else BASE for m in df["method"].astype(str)]
        ax.barh(range(len(df)), df[metric].to_numpy(float), color=colors)
        ax.set_yticks(range(len(df)), df["_name"].tolist())
        if metric.startswith("auroc"):
            ax.axvline(0.5, color="0.4", lw=0.8, ls="--")
            ax.set_xlim(0, 1)
        ax.set_xlabel(metric.replace("_", " "))
        ax.set_title("which gene score finds the real signal?")
    return ax
