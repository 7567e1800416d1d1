"""The causal head test: change of test accuracy when a head is ablated."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._util import empty, new_ax, require, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["head_ablation"]


def head_ablation(table: pd.DataFrame, *, value: str = "d_accuracy", ax: Axes | None = None) -> Axes:
    """Heatmap (layers x heads) of the change of ``value`` when each head alone is ablated.

    ``*`` marks heads whose 95% interval (bootstrap over test wells) lies below 0.

    Parameters
    ----------
    table
        ``tables/head_ablation.parquet`` or ``tables/heads.parquet`` (``ablation, layer, head, n_heads,
        d_accuracy, d_accuracy_high, ...``).
    value
        ``d_accuracy`` or ``d_loglik``.
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    require(table, ["layer", "head", "n_heads", value, f"{value}_high"], "head ablation")
    with style():
        ax = new_ax(ax, (4.6, 3.8))
        single = table[table["n_heads"] == 1]
        if single.empty:
            return empty(ax, "no ablation")
        mat = single.pivot_table(index="layer", columns="head", values=value)
        high = single.pivot_table(index="layer", columns="head", values=f"{value}_high").reindex_like(mat)
        v = float(np.nanmax(np.abs(mat.to_numpy()))) or 1.0
        im = ax.imshow(mat.to_numpy(), cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto")
        ax.figure.colorbar(im, ax=ax, label=f"{value.replace('d_', 'Δ ')} (ablated - full)", shrink=0.85)
        for (i, j), hi in np.ndenumerate(high.to_numpy()):
            if np.isfinite(hi) and hi < 0:
                ax.text(j, i, "*", ha="center", va="center", fontsize=14)
        ax.set_xticks(range(mat.shape[1]), [str(int(h)) for h in mat.columns])
        ax.set_yticks(range(mat.shape[0]), [str(int(la)) for la in mat.index])
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title("head ablation on test cells; * interval below 0")
    return ax
