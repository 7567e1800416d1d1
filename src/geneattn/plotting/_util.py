"""Shared helpers of the plot functions: local style, axes creation, column checks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes


STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",
}
HIGHLIGHT = "#d62728"
BASE = "#4c72b0"


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Geneattn's plot style, applied locally (never global rcParams)."""
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        yield


def new_ax(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` or the axes of a new figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """InputError naming the missing columns of a table."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        msg = f"{what} table lacks column(s) {missing} (has {list(df.columns)})"
        raise InputError(msg)


def empty(ax: Axes, text: str) -> Axes:
    """Mark an axes as having no data (plots stay valid when optional inputs are missing)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
