"""The study's figures from a results directory, and saving them (PNG + SVG)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .._atomic import atomic_path
from ..errors import InputError

__all__ = ["make_figures", "save_figures", "FIGURES"]

logger = logging.getLogger(__name__)

FIGURES = (
    "umap",
    "confusion",
    "change_by_rank",
    "top_genes",
    "de_vs_attention",
    "confounds",
    "head_norms",
    "methods",
)


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for d in (root / "attention", root / "tables"):
        for p in sorted(d.glob("*.parquet")) if d.is_dir() else []:
            out[p.stem] = pd.read_parquet(p)
    return out


def _fig_umap(t: dict, ctx: dict) -> Any:
    import matplotlib.pyplot as plt

    from .. import plotting as pl

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    u = t["umap"]
    pl.umap(u, color="label", ax=axes[0])
    if "n_genes" in u:
        pl.umap(u, color="n_genes", ax=axes[1])
    else:
        axes[1].set_visible(False)
    return fig


def _fig_confusion(t: dict, ctx: dict) -> Any:
    import matplotlib.pyplot as plt

    from .. import plotting as pl

    clf = ctx["metrics"].get("classification") or {}
    groups = (clf.get("groups") or {}).get("confusion")
    fig, axes = plt.subplots(
        1, 2 if groups else 1, figsize=(8.5 if groups else 4.5, 3.8), layout="constrained", squeeze=False
    )
    pl.confusion(clf.get("confusion"), title="classes (test split)", ax=axes[0, 0])
    if groups:
        pl.confusion(groups, title="groups (test split)", ax=axes[0, 1])
    return fig


def _fig_change(t: dict, ctx: dict) -> Any:
    from .. import plotting as pl

    table = t.get("change_ci")
    table = table if table is not None and not table.empty else t["head_change"]
    pos = ctx["metrics"].get("attention", {}).get("highlight_mean_position") or {}
    return pl.change_by_rank(table, marks={k: v for k, v in pos.items() if v is not None})


def _fig_top(t: dict, ctx: dict) -> Any:
    import matplotlib.pyplot as plt

    from .. import plotting as pl

    fig, axes = plt.subplots(1, 2, figsize=(9, 0.22 * ctx["top_k"] + 1.4), layout="constrained")
    for ax, model in zip(axes, ("finetuned", "pretrained"), strict=True):
        pl.top_genes(t["top_genes"], k=ctx["top_k"], model=model, highlight=ctx["highlight"], ax=ax)
    return fig


def _fig_de(t: dict, ctx: dict) -> Any:
    import anndata as ad
    import matplotlib.pyplot as plt

    from .. import get
    from .. import plotting as pl
    from ..stats.agreement import de_gene_score

    root = ctx["root"]
    scores = get.gene_scores_df(root)
    de = t["de"]
    de = de[de["method"] == "wilcoxon"] if "method" in de and (de["method"] == "wilcoxon").any() else de
    de_s = de_gene_score(de)
    df = scores.assign(de_score=scores["gene"].map(de_s))
    adata = ad.read_h5ad(root / "cells.h5ad")
    if "planted" in adata.var:
        df["planted"] = df["gene"].map(adata.var["planted"].astype(bool)).fillna(False).astype(bool)
    top = scores["gene"].head(ctx["top_k"]).tolist()
    fig, axes = plt.subplots(1, 2, figsize=(10, max(4.2, 0.2 * len(top) + 1.4)), layout="constrained")
    pl.expression_by_class(get.expression_by_class_df(adata, top), genes=top, ax=axes[0])
    pl.de_vs_attention(df, highlight=ctx["highlight"], ax=axes[1])
    return fig


def _fig_confounds(t: dict, ctx: dict) -> Any:
    import matplotlib.pyplot as plt

    from .. import plotting as pl

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    if "attention_by_position_length" in t:
        pl.length_dependence(t["attention_by_position_length"], ax=axes[0])
    else:
        axes[0].set_visible(False)
    pl.confound_summary(t["confounds"], ax=axes[1])
    return fig


def _fig_heads(t: dict, ctx: dict) -> Any:
    from .. import plotting as pl

    sig = t.get("significance")
    ok = sig is not None and "test" in sig and (sig["test"] == "paired_head").any()
    return pl.head_change_heatmap(sig if ok else t["head_norms"]).figure


def _fig_methods(t: dict, ctx: dict) -> Any:
    from .. import plotting as pl

    return pl.method_comparison(t["methods"]).figure


_MAKERS: dict[str, Callable[[dict, dict], Any]] = {
    "umap": _fig_umap,
    "confusion": _fig_confusion,
    "change_by_rank": _fig_change,
    "top_genes": _fig_top,
    "de_vs_attention": _fig_de,
    "confounds": _fig_confounds,
    "head_norms": _fig_heads,
    "methods": _fig_methods,
}


def make_figures(
    results_dir: str | Path, *, highlight: Sequence[str] = ("MDM2",), top_k: int = 20
) -> dict[str, Any]:
    """Every figure whose tables exist (a missing table skips its figure with a warning).

    Returns name -> matplotlib Figure, in the report's order.
    """
    root = Path(results_dir)
    t = _tables(root)
    mp = root / "metrics.json"
    ctx = {"root": root, "highlight": list(highlight), "top_k": top_k,
           "metrics": json.loads(mp.read_text()) if mp.is_file() else {}}  # fmt: skip
    figs: dict[str, Any] = {}
    for name, maker in _MAKERS.items():
        try:
            figs[name] = maker(t, ctx)
        except (KeyError, FileNotFoundError, InputError) as e:
            logger.warning("figure %s skipped: missing input (%s)", name, e)
    return figs


def save_figures(figures: Mapping[str, Any], out_dir: str | Path, *, close: bool = True) -> dict[str, Path]:
    """Save each figure as ``<name>.png`` and ``<name>.svg`` (atomically); returns the PNG paths."""
    import matplotlib.pyplot as plt

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
