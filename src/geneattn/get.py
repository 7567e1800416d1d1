"""Tidy accessors: DataFrames (and the metrics dict) from a results directory or an AnnData."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError

__all__ = [
    "de_df",
    "gene_attention_df",
    "head_summary_df",
    "head_change_df",
    "top_genes_df",
    "expression_by_class_df",
    "gene_scores_df",
    "metrics",
    "table",
]


def _is_adata(src: Any) -> bool:
    return hasattr(src, "obs") and hasattr(src, "var")


def table(results_dir: str | os.PathLike[str], name: str) -> pd.DataFrame:
    """``tables/<name>.parquet`` (or ``attention/<name>.parquet``) of a results directory."""
    root = Path(results_dir)
    for p in (root / "tables" / f"{name}.parquet", root / "attention" / f"{name}.parquet"):
        if p.is_file():
            return pd.read_parquet(p)
    msg = f"no table {name!r} in {root} (run `geneattn run` first, or the stage that writes it)"
    raise InputError(msg)


def de_df(
    src: Any, *, method: str | None = "wilcoxon", group: str | Sequence[str] | None = None
) -> pd.DataFrame:
    """Differential expression: ``group, reference, gene, ensembl_id, score, logfoldchange, pval, pval_adj, rank``.

    ``src`` is a results directory (``tables/de.parquet``; ``method`` selects wilcoxon / wilcoxon_ref /
    pseudobulk, None keeps all) or an AnnData with ``uns["de"]``.
    """
    if _is_adata(src):
        from .stats.de import de_df as _de

        return _de(src, "de", group=group)
    df = table(src, "de")
    if method is not None and "method" in df:
        df = df[df["method"] == method]
    if group is not None:
        df = df[df["group"].astype(str).isin([group] if isinstance(group, str) else list(group))]
    return df.reset_index(drop=True)


def gene_attention_df(
    src: Any,
    *,
    model: str | None = None,
    label: str | None = "__all__",
    layer: int | None = None,
    head: int | None = None,
) -> pd.DataFrame:
    """Per-gene attention (`attention_by_gene` rows), filtered by model, class, layer and head.

    From an AnnData (``varm["gene_attention"]``, fold means): ``gene, column, model, layer, head, fold_mean``.
    """
    if _is_adata(src):
        if "gene_attention" not in src.varm:
            msg = "AnnData has no varm['gene_attention'] (see geneattn.attention.annotate_adata)"
            raise InputError(msg)
        cols = [str(c) for c in src.uns["gene_attention"]["columns"]]
        wide = pd.DataFrame(
            np.asarray(src.varm["gene_attention"]), index=src.var_names.astype(str), columns=cols
        )
        df = (
            wide.rename_axis("gene")
            .reset_index()
            .melt(id_vars="gene", var_name="column", value_name="fold_mean")
        )
        parts = df["column"].str.extract(r"^(?P<model>.+)_L(?P<layer>\d+)H(?P<head>\d+)$")
        df = pd.concat([df, parts], axis=1).astype({"layer": int, "head": int}).dropna(subset=["fold_mean"])
    else:
        df = table(src, "attention_by_gene")
        if label is not None and "label" in df:
            df = df[df["label"].astype(str) == label]
    if model is not None:
        df = df[df["model"] == model]
    if layer is not None:
        df = df[df["layer"].astype(int) == layer]
    if head is not None:
        df = df[df["head"].astype(int) == head]
    return df.reset_index(drop=True)


def gene_scores_df(src: Any, *, model: str = "finetuned", by: str = "fold_mean") -> pd.DataFrame:
    """One row per gene: ``gene, attention`` (``by`` averaged over layers and heads, all cells) and ``rank``."""
    g = gene_attention_df(src, model=model)
    if g.empty:
        return pd.DataFrame(columns=["gene", "attention", "rank"])
    s = g.groupby("gene", observed=True)[by].mean().sort_values(ascending=False)
    return pd.DataFrame(
        {"gene": s.index.astype(str), "attention": s.to_numpy(), "rank": np.arange(1, len(s) + 1)}
    )


def head_summary_df(src: Any) -> pd.DataFrame:
    """Per-head norms, tidy: ``model, layer, head, metric, value`` (from ``head_norms``)."""
    df = table(src, "head_norms") if not _is_adata(src) else pd.DataFrame(src.uns["head_norms"])
    value_cols = [c for c in df.columns if c not in ("model", "layer", "head", "n_cells")]
    return df.melt(id_vars=[c for c in ("model", "layer", "head") if c in df], value_vars=value_cols,
                   var_name="metric", value_name="value")  # fmt: skip


def head_change_df(
    src: str | os.PathLike[str], *, metric: str | None = "fold", with_ci: bool = False
) -> pd.DataFrame:
    """Percentage change by head and rank bin.

    ``head_change`` (one ``metric``) or, ``with_ci``, the bootstrap ``change_ci`` table (``ci_low``/``ci_high``).
    """
    if with_ci:
        return table(src, "change_ci")
    df = table(src, "head_change")
    return df[df["metric"] == metric].reset_index(drop=True) if metric is not None and "metric" in df else df


def top_genes_df(
    src: str | os.PathLike[str], *, model: str | None = "finetuned", k: int | None = None
) -> pd.DataFrame:
    """Top attended genes (``tables/top_genes.parquet``): model, rank, gene, fold_mean, ..."""
    df = table(src, "top_genes")
    if model is not None:
        df = df[df["model"] == model]
    df = df.sort_values(["model", "rank"]) if "rank" in df else df
    return (df.groupby("model").head(k) if k is not None else df).reset_index(drop=True)


def expression_by_class_df(
    adata: Any, genes: Sequence[str], *, groupby: str = "label", layer: str | None = "lognorm"
) -> pd.DataFrame:
    """Mean expression of ``genes`` per class, tidy ``gene, label, mean_expr`` (``layer`` or ``X``)."""
    genes = [g for g in genes if g in adata.var_names]
    if not genes:
        return pd.DataFrame(columns=["gene", "label", "mean_expr"])
    sub = adata[:, genes]
    x = sub.layers[layer] if layer is not None and layer in sub.layers else sub.X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    df = pd.DataFrame(x, columns=genes)
    df["label"] = adata.obs[groupby].astype(str).to_numpy()
    return (
        df.groupby("label")
        .mean()
        .reset_index()
        .melt(id_vars="label", var_name="gene", value_name="mean_expr")
    )


def metrics(results_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``metrics.json`` of a results directory."""
    p = Path(results_dir) / "metrics.json"
    if not p.is_file():
        msg = f"no metrics.json in {results_dir}"
        raise InputError(msg)
    return json.loads(p.read_text(encoding="utf-8"))
