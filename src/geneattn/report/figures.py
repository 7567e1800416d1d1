"""The study's figures from a results directory, and saving them (PNG + SVG).

Each figure reads its tables through `geneattn.get`; a figure whose input table does not exist (a
stage that was not run, e.g. no attribution baselines) is skipped with a warning, and any other
error is a bug and propagates.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .. import get
from .. import plotting as pl
from .._atomic import atomic_path
from .._results import OTHER, REF, MissingResult, Results

__all__ = ["make_figures", "save_figures", "FIGURES"]

logger = logging.getLogger(__name__)

FIGURES = (
    "umap",
    "confusion",
    "change_by_rank",
    "top_genes",
    "de_vs_attention",
    "confounds",
    "heads",
    "methods",
    "recovery",
)


class _Tables:
    """Tables of a results directory, read through `geneattn.get` on first use."""

    def __init__(self, res: Results) -> None:
        self.res, self._cache = res, {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            self._cache[name] = get.table(self.res, name)
        return self._cache[name]

    def get(self, name: str) -> Any:
        """The table, or None when the results directory does not hold it."""
        try:
            return self[name]
        except MissingResult:
            return None


def _fig_umap(t: _Tables, ctx: dict) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    u = t["umap"]
    pl.umap(u, color="label", ax=axes[0])
    if "n_genes" in u:
        pl.umap(u, color="n_genes", ax=axes[1])
    else:
        axes[1].set_visible(False)
    return fig


def _fig_confusion(t: _Tables, ctx: dict) -> Figure:
    clf = ctx["metrics"].get("classification") or {}
    groups = (clf.get("groups") or {}).get("confusion")
    fig, axes = plt.subplots(
        1, 2 if groups else 1, figsize=(8.5 if groups else 4.5, 3.8), layout="constrained", squeeze=False
    )
    pl.confusion(clf.get("confusion"), title="classes (test split)", ax=axes[0, 0])
    if groups:
        pl.confusion(groups, title="groups (test split)", ax=axes[0, 1])
    return fig


def _fig_change(t: _Tables, ctx: dict) -> Figure:
    table = t.get("change_ci")
    table = table if table is not None and not table.empty else t["head_change"]
    by_class = ctx["metrics"].get("attention", {}).get("highlight_position_by_class") or {}
    marks = {}
    for gene, pos in by_class.items():  # the lowest and highest class: where the gene sits at each end
        classes = [c for c, v in pos.items() if v is not None]
        for c in {classes[0], classes[-1]} if classes else ():
            marks[f"{gene} ({c})"] = pos[c]
    return pl.change_by_rank(table, marks=marks)


def _fig_top(t: _Tables, ctx: dict) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.22 * ctx["top_k"] + 1.4), layout="constrained")
    for ax, model in zip(axes, (OTHER, REF), strict=True):
        pl.top_genes(t["top_genes"], k=ctx["top_k"], model=model, highlight=ctx["highlight"], ax=ax)
    return fig


def _fig_de(t: _Tables, ctx: dict) -> Figure:
    df = t["de_vs_attention"]  # gene, attention, rank, de_score (+ planted): the stats stage's table
    top = df["gene"].head(ctx["top_k"]).tolist()
    fig, axes = plt.subplots(1, 2, figsize=(10, max(4.2, 0.2 * len(top) + 1.4)), layout="constrained")
    pl.expression_by_class(t["expression_by_class"], genes=top, ax=axes[0])
    pl.de_vs_attention(df, highlight=ctx["highlight"], ax=axes[1])
    return fig


def _fig_confounds(t: _Tables, ctx: dict) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    by_length = t.get("attention_by_position_length")
    if by_length is not None:
        pl.length_dependence(by_length, ax=axes[0])
    else:
        axes[0].set_visible(False)
    pl.confound_summary(t["confounds"], ax=axes[1])
    return fig


def _fig_heads(t: _Tables, ctx: dict) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), layout="constrained")
    sig = t.get("significance")
    ok = sig is not None and "test" in sig and (sig["test"] == "paired_head").any()
    pl.head_change_heatmap(sig if ok else t["head_norms"], ax=axes[0])
    pl.head_ablation(t["head_ablation"], ax=axes[1])
    return fig


def _fig_methods(t: _Tables, ctx: dict) -> Figure:
    inc = t.get("incremental")
    if inc is None or inc.empty:
        return pl.method_comparison(t["methods"]).figure
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.28 * len(inc) + 1.8), layout="constrained")
    pl.method_comparison(t["methods"], ax=axes[0])
    pl.incremental_value(inc, ax=axes[1])
    return fig


def _fig_recovery(t: _Tables, ctx: dict) -> Figure:
    return pl.recovery_by_effect_size(t["recovery"]).figure


_MAKERS: dict[str, Callable[[_Tables, dict], Figure]] = {
    "umap": _fig_umap,
    "confusion": _fig_confusion,
    "change_by_rank": _fig_change,
    "top_genes": _fig_top,
    "de_vs_attention": _fig_de,
    "confounds": _fig_confounds,
    "heads": _fig_heads,
    "methods": _fig_methods,
    "recovery": _fig_recovery,
}


def make_figures(
    results: Results | str | os.PathLike[str], *, highlight: Sequence[str], top_k: int
) -> dict[str, Figure]:
    """Every figure of the report whose input tables exist.

    A figure whose table is missing (`MissingResult`) is skipped with a warning; any other error is
    raised. Returns name -> matplotlib Figure, in the report's order.
    """
    res = results if isinstance(results, Results) else Results(results)
    t = _Tables(res)
    ctx = {"results": res, "highlight": list(highlight), "top_k": top_k, "metrics": get.metrics(res)}
    figs: dict[str, Figure] = {}
    for name, maker in _MAKERS.items():
        try:
            figs[name] = maker(t, ctx)
        except MissingResult as e:
            logger.warning("figure %s skipped: %s", name, e)
    return figs


def save_figures(
    figures: Mapping[str, Figure], out_dir: str | Path, *, close: bool = True
) -> dict[str, Path]:
    """Save each figure as ``<name>.png`` and ``<name>.svg`` (atomically); returns the PNG paths."""
    out = Path(out_dir)
    paths = {}
    for name, fig in figures.items():
        for ext in ("png", "svg"):
            with atomic_path(out / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, format=ext, bbox_inches="tight")
        paths[name] = out / f"{name}.png"
        if close:
            plt.close(fig)
    return paths
