"""Confusion matrices of the fine-tuned classifier (fine classes and coarse groups)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from ._util import empty, new_ax, style

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


__all__ = ["confusion"]


def confusion(
    cm: Mapping[str, object] | None,
    *,
    title: str = "confusion matrix",
    normalize: bool = True,
    ax: Axes | None = None,
) -> Axes:
    """Confusion matrix heatmap (rows: true class, columns: predicted), row-normalised by default.

    Parameters
    ----------
    cm
        ``{"labels": [...], "matrix": [[...]]}`` (``metrics["confusion"]`` of `geneattn.models.finetune`).
    title
        Axes title.
    normalize
        Show row fractions (counts written in each cell either way).
    ax
        Axes to draw into.

    Returns
    -------
    The Axes.
    """
    with style():
        labels = list((cm or {}).get("labels") or [])
        ax = new_ax(ax, (0.55 * len(labels) + 2.4, 0.5 * len(labels) + 1.8))
        if not labels:
            return empty(ax, "no confusion matrix")
        m = np.asarray(cm["matrix"], dtype=float)
        frac = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalize else m
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1 if normalize else None)
        for (i, j), v in np.ndenumerate(m):
            ax.text(
                j,
                i,
                f"{int(v)}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if frac[i, j] > 0.6 else "black",
            )
        ax.set_xticks(range(len(labels)), [str(x) for x in labels], rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), [str(x) for x in labels])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    return ax
