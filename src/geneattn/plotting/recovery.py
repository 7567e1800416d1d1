"""Does a gene score find the planted genes beyond expression level? Incremental value and effect size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._util import BASE, HIGHLIGHT, empty, new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["incremental_value", "recovery_by_effect_size"]


def _color(method: str) -> str:
    return HIGHLIGHT if method.startswith("attention") else BASE


def incremental_value(table: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """ΔAUROC of each score over the gene covariates, with its bootstrap CI (attention in red).

    Parameters
    ----------
    table
        ``tables/incremental.parquet`` (``method, delta_auroc, delta_lo, delta_hi, auroc, stratified_auroc``).
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["method", "delta_auroc", "delta_lo", "delta_hi"], "incremental")
    with style():
        df = table.dropna(subset=["delta_auroc"]).sort_values("delta_auroc")
        ax = new_ax(ax, (5.2, 0.28 * max(len(df), 1) + 1.5))
        if df.empty:
            return empty(ax, "no ground truth")
        y = np.arange(len(df))
        err = np.vstack([df["delta_auroc"] - df["delta_lo"], df["delta_hi"] - df["delta_auroc"]]).clip(min=0)
        colors = [_color(str(m)) for m in df["method"]]
        ax.errorbar(df["delta_auroc"], y, xerr=err, fmt="none", ecolor="0.5", lw=1)
        ax.scatter(df["delta_auroc"], y, c=colors, zorder=3, s=18)
        labels = [
            f"{m}{' (labels)' if u is True else ''}"
            for m, u in zip(df["method"], df.get("uses_labels", [None] * len(df)), strict=True)
        ]
        ax.set_yticks(y, labels)
        ax.axvline(0, color="0.3", lw=0.8, ls="--")
        ax.set_xlabel("ΔAUROC over mean, detection, variance, dispersion (95% CI over genes)")
        ax.set_title("incremental value over gene-level covariates")
    return ax


def recovery_by_effect_size(
    table: pd.DataFrame, *, metric: str = "stratified_auroc", ax: Axes | None = None
) -> Axes:
    """Recovery of planted genes (AUROC within expression strata) per effect-size bin, one line per score.

    Parameters
    ----------
    table
        ``tables/recovery.parquet`` (``method, bin, lo, hi, n_planted, auroc, stratified_auroc, recall``).
    metric
        Column shown.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    with style():
        ax = new_ax(ax, (5.6, 3.6))
        if table.empty or metric not in table:
            return empty(ax, "no ground truth")
        bins = table.drop_duplicates("bin").sort_values("lo")
        x = np.arange(len(bins))
        for method, g in table.groupby("method"):
            g = g.set_index("bin").reindex(bins["bin"])
            strong = str(method).startswith("attention") or method in ("detection", "de")
            ax.plot(x, g[metric].to_numpy(float), marker="o", ms=3, lw=1.6 if strong else 0.8,
                    color=_color(str(method)) if str(method).startswith("attention") else None,
                    alpha=1 if strong else 0.5, label=str(method))  # fmt: skip
        ax.set_xticks(x, [f"{lo:g}-{hi:g}" for lo, hi in zip(bins["lo"], bins["hi"], strict=True)])
        ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
        ax.set_xlabel("planted effect size (|log2 fold change|, lowest vs highest dose)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.legend(fontsize=6, frameon=False, ncol=2, loc="upper left")
        ax.set_title("recovery of planted genes by effect size")
    return ax
