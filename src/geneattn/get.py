"""Tidy accessors (scanpy's ``sc.get`` idiom): DataFrames from an annotated AnnData, or from results.

AnnData first: `de_df`, `gene_attention_df` and `expression_by_class_df` read what the study wrote into
``cells.h5ad`` (``uns["de"]``, ``varm["gene_attention"]``). The results-directory readers (`table`,
`attention_by_gene_df`, `gene_scores_df`, `head_change_df`, `top_genes_df`, `head_summary_df`,
`metrics`) take a `Results` or its path; the report reads every number through them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ._results import OTHER, MissingResult, Results
from .errors import InputError

__all__ = [
    "de_df",
    "gene_attention_df",
    "expression_by_class_df",
    "gene_attention",
    "ranked_genes",
    "attention_change",
    "table",
    "attention_by_gene_df",
    "gene_scores_df",
    "head_summary_df",
    "head_change_df",
    "top_genes_df",
    "metrics",
    "config",
    "stages_df",
    "plan",
    "skipped",
]

#: the columns of ``attention_by_gene`` that identify a gene score (`gene_scores_df` adds the score's)
GENE_SCORE_COLUMNS = ("model", "layer", "head", "ensembl_id", "gene", "label")

ResultsLike = Results | str | os.PathLike[str]


def _results(results: ResultsLike) -> Results:
    return results if isinstance(results, Results) else Results(results)


# ------------------------------------------------------------------------------------------ AnnData
def de_df(adata: AnnData, *, key: str = "de", group: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Differential expression stored by `geneattn.stats.rank_genes` in ``adata.uns[key]``.

    Columns ``group, reference, gene, ensembl_id, score, logfoldchange, pval, pval_adj, rank``.
    """
    from .stats.de import de_df as _de

    return _de(adata, key, group=group)


def gene_attention_df(
    adata: AnnData,
    *,
    key: str = "gene_attention",
    model: str | None = None,
    layer: int | None = None,
    head: int | None = None,
) -> pd.DataFrame:
    """Per-gene attention written by `geneattn.attention.gene_attention` (``varm[key]``), tidy.

    Columns ``gene, column, model, layer, head, fold_mean`` (genes where the model never saw the gene
    are left out).
    """
    if key not in adata.varm or key not in adata.uns:
        msg = f"AnnData has no varm[{key!r}] (see geneattn.attention.gene_attention)"
        raise InputError(msg)
    cols = [str(c) for c in adata.uns[key]["columns"]]
    wide = pd.DataFrame(np.asarray(adata.varm[key]), index=adata.var_names.astype(str), columns=cols)
    df = (
        wide.rename_axis("gene").reset_index().melt(id_vars="gene", var_name="column", value_name="fold_mean")
    )
    parts = df["column"].str.extract(r"^(?P<model>.+)_L(?P<layer>\d+)H(?P<head>\d+)$")
    df = pd.concat([df, parts], axis=1).astype({"layer": int, "head": int}).dropna(subset=["fold_mean"])
    keep = np.ones(len(df), dtype=bool)
    for name, value in (("model", model), ("layer", layer), ("head", head)):
        if value is not None:
            keep &= (df[name] == value).to_numpy()
    return df[keep].reset_index(drop=True)


def expression_by_class_df(
    adata: AnnData, genes: Sequence[str], *, groupby: str = "label", layer: str | None = "lognorm"
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


# ----------------------------------------------------------------- AnnData: geneattn.tl (front door)
def _require(adata: AnnData, key: str, where: str, tool: str) -> None:
    if key not in adata.uns or (where == "varm" and key not in adata.varm):
        msg = f"AnnData has no {where}[{key!r}] (see geneattn.tl.{tool})"
        raise InputError(msg)


def _heads(columns: pd.Series) -> pd.DataFrame:
    """``"<prefix>_L{l}H{h}"`` column names -> ``prefix, layer, head``."""
    parts = columns.str.extract(r"^(?P<prefix>.+)_L(?P<layer>\d+)H(?P<head>\d+)$")
    return parts.astype({"layer": int, "head": int})


def _long(adata: AnnData, mat: np.ndarray, columns: pd.Series, prefix: str, value: str) -> pd.DataFrame:
    """A genes x ``"<prefix>_L{l}H{h}"`` matrix as rows ``gene, ensembl_id, <prefix>, layer, head, <value>``.

    NaN entries (genes never seen) are left out.
    """
    heads = _heads(columns)
    gi, ci = np.nonzero(~np.isnan(mat))
    ens = adata.var["ensembl_id"] if "ensembl_id" in adata.var else adata.var_names
    return pd.DataFrame({
        "gene": adata.var_names.to_numpy(dtype=str)[gi], "ensembl_id": np.asarray(ens, dtype=str)[gi],
        prefix: heads["prefix"].to_numpy()[ci], "layer": heads["layer"].to_numpy()[ci],
        "head": heads["head"].to_numpy()[ci], value: mat[gi, ci],
    })  # fmt: skip


def gene_attention(
    adata: AnnData,
    *,
    key: str = "gene_attention",
    group: str | None = None,
    model: str | None = None,
) -> pd.DataFrame:
    """Per-gene attention written by `geneattn.tl.gene_attention`, tidy.

    Columns ``gene, ensembl_id, group, model, layer, head, fold_mean``: group ``"__all__"`` for all
    cells, and each class of ``groupby`` when it was given; genes the model never saw are left out.
    ``group`` / ``model`` keep one class / model.
    """
    _require(adata, key, "varm", "gene_attention")
    cols = pd.Series([str(c) for c in adata.uns[key]["columns"]])
    mats = {"__all__": np.asarray(adata.varm[key])}
    if f"{key}_groups" in adata.varm:
        stack = np.asarray(adata.varm[f"{key}_groups"])  # [n_vars, n_groups, n_columns]
        mats.update({str(g): stack[:, i, :] for i, g in enumerate(adata.uns[key]["groups"])})
    if group is not None:
        if group not in mats:
            msg = f"no group {group!r} in uns[{key!r}] (groups: {list(mats)})"
            raise InputError(msg)
        mats = {group: mats[group]}
    parts = [_long(adata, mat, cols, "model", "fold_mean").assign(group=g) for g, mat in mats.items()]
    df = pd.concat(parts, ignore_index=True)[
        ["gene", "ensembl_id", "group", "model", "layer", "head", "fold_mean"]
    ]
    return (df[df["model"] == model] if model is not None else df).reset_index(drop=True)


def ranked_genes(
    adata: AnnData,
    *,
    key: str = "gene_attention",
    group: str = "__all__",
    model: str | None = None,
) -> pd.DataFrame:
    """Genes ranked by ``fold_mean`` averaged over layers and heads (`geneattn.tl.gene_attention`).

    Columns ``gene, ensembl_id, fold_mean, rank`` (1 = most attended) for one class (default all cells)
    and one model (default: the only one).
    """
    df = gene_attention(adata, key=key, group=group, model=model)
    if model is None and df["model"].nunique() > 1:
        msg = f"several models in uns[{key!r}] ({sorted(df['model'].unique())}); pass model="
        raise InputError(msg)
    g = df.groupby(["gene", "ensembl_id"], as_index=False, sort=False)["fold_mean"].mean()
    g = g.sort_values("fold_mean", ascending=False, kind="stable").reset_index(drop=True)
    return g.assign(rank=np.arange(1, len(g) + 1))


def attention_change(
    adata: AnnData,
    *,
    key: str = "attention_change",
    by: str = "head",
    metric: str | None = None,
    group: str | None = "__all__",
) -> pd.DataFrame:
    """Changes written by `geneattn.tl.attention_change`, tidy.

    ``by="head"``: ``group, layer, head, bin_start, bin_end, metric, n_tokens, ref_mean, other_mean,
    pct_change`` (``group`` None: every class). ``by="gene"``: ``gene, ensembl_id, metric, layer, head,
    pct_change`` (all cells). ``metric`` keeps one metric (``fold``, ``norm``, ...).
    """
    _require(adata, key, "varm" if by == "gene" else "uns", "attention_change")
    if by == "head":
        df = pd.DataFrame(adata.uns[key]["head_change"])
        if group is not None:
            df = df[df["group"].astype(str) == group]
    elif by == "gene":
        cols = pd.Series([str(c) for c in adata.uns[key]["columns"]])
        df = _long(adata, np.asarray(adata.varm[key]), cols, "metric", "pct_change")
    else:
        msg = f"by must be 'head' or 'gene', got {by!r}"
        raise InputError(msg)
    return (df[df["metric"] == metric] if metric is not None else df).reset_index(drop=True)


# ------------------------------------------------------------------------------------------ results
def table(results: ResultsLike, name: str) -> pd.DataFrame:
    """``tables/<name>.parquet`` (or ``attention/<name>.parquet``); its parameters in ``.attrs["params"]``."""
    return _results(results).read_table(name)


def attention_by_gene_df(
    results: ResultsLike,
    *,
    model: str | None = None,
    label: str | None = "__all__",
    layer: int | None = None,
    head: int | None = None,
) -> pd.DataFrame:
    """Rows of the ``attention_by_gene`` table, filtered by model, class, layer and head."""
    df = table(results, "attention_by_gene")
    keep = np.ones(len(df), dtype=bool)
    if label is not None and "label" in df:
        keep &= (df["label"].astype(str) == label).to_numpy()
    for name, value in (("model", model), ("layer", layer), ("head", head)):
        if value is not None:
            keep &= (
                (df[name] == value).to_numpy()
                if name == "model"
                else (df[name].astype(int) == value).to_numpy()
            )
    return df[keep].reset_index(drop=True)


def gene_scores_df(results: ResultsLike, *, model: str = OTHER, by: str = "fold_mean") -> pd.DataFrame:
    """One row per gene: ``gene, attention`` (``by`` averaged over layers and heads, all cells) and ``rank``.

    Special tokens (``<cls>``, ``<eos>``) are left out: they are no genes.
    """
    cols = [*GENE_SCORE_COLUMNS, by]
    return gene_scores_of(_results(results).read_table("attention_by_gene", columns=cols), model=model, by=by)


def gene_scores_of(abg: pd.DataFrame, *, model: str = OTHER, by: str = "fold_mean") -> pd.DataFrame:
    """`gene_scores_df` from an ``attention_by_gene`` table already in memory."""
    from .attention.compare import is_special

    g = abg[(abg["model"] == model) & (abg["label"].astype(str) == "__all__")]
    if "ensembl_id" in g:
        g = g[~is_special(g["ensembl_id"])]
    if g.empty:
        return pd.DataFrame(columns=["gene", "attention", "rank"])
    s = g.groupby("gene", observed=True)[by].mean().sort_values(ascending=False)
    return pd.DataFrame(
        {"gene": s.index.astype(str), "attention": s.to_numpy(), "rank": np.arange(1, len(s) + 1)}
    )


def head_summary_df(results: ResultsLike) -> pd.DataFrame:
    """Per-head norms, tidy: ``model, layer, head, metric, value`` (from ``head_norms``)."""
    df = table(results, "head_norms")
    value_cols = [c for c in df.columns if c not in ("model", "layer", "head", "n_cells")]
    return df.melt(id_vars=[c for c in ("model", "layer", "head") if c in df], value_vars=value_cols,
                   var_name="metric", value_name="value")  # fmt: skip


def head_change_df(
    results: ResultsLike, *, metric: str | None = "fold", with_ci: bool = False
) -> pd.DataFrame:
    """Percentage change by head and rank bin.

    ``head_change`` (one ``metric``) or, ``with_ci``, the bootstrap ``change_ci`` table (``ci_low``/``ci_high``).
    """
    if with_ci:
        return table(results, "change_ci")
    df = table(results, "head_change")
    return df[df["metric"] == metric].reset_index(drop=True) if metric is not None and "metric" in df else df


def top_genes_df(results: ResultsLike, *, model: str | None = OTHER, k: int | None = None) -> pd.DataFrame:
    """Top attended genes (``tables/top_genes.parquet``): model, rank, gene, fold_mean, ..."""
    df = table(results, "top_genes")
    if model is not None:
        df = df[df["model"] == model]
    df = df.sort_values(["model", "rank"]) if "rank" in df else df
    return (df.groupby("model").head(k) if k is not None else df).reset_index(drop=True)


def metrics(results: ResultsLike) -> dict:
    """``metrics.json`` of a results directory (`MissingResult` when absent)."""
    res = _results(results)
    if not res.metrics.is_file():
        msg = f"no metrics.json in {res.root}"
        raise MissingResult(msg)
    return res.read_json(res.metrics)


# ------------------------------------------------------------------------------------------ run record
# (the report's other inputs: the saved configuration, the stages as run, the plan, the skipped tables)
def config(results: ResultsLike) -> dict:
    """``config.toml``: the resolved configuration of the run (`MissingResult` when absent)."""
    import tomllib

    res = _results(results)
    if not res.config.is_file():
        msg = f"no config.toml in {res.root}"
        raise MissingResult(msg)
    try:
        return tomllib.loads(res.config.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        msg = f"{res.config} is not valid TOML: {e}"
        raise InputError(msg) from None


def stages_df(results: ResultsLike) -> pd.DataFrame:
    """The stages of ``manifest.json`` in run order: ``name, status, seconds, summary, hash``.

    The order is the one the engine recorded (``manifest["order"]``), stages it does not list last.
    """
    res = _results(results)
    manifest = res.read_json(res.manifest)
    stages = manifest.get("stages") or {}
    names = [n for n in manifest.get("order") or [] if n in stages]
    names += [n for n in stages if n not in names]
    cols = ["name", "status", "seconds", "summary", "hash"]
    rows = [{c: stages[n].get(c) for c in cols} | {"name": n} for n in names]
    return pd.DataFrame(rows, columns=cols)


def plan(results: ResultsLike) -> dict:
    """``plan.json``: the estimated seconds of every heavy stage (an empty dict when not planned)."""
    res = _results(results)
    return res.read_json(res.plan) if res.plan.is_file() else {}


def skipped(results: ResultsLike) -> dict[str, str]:
    """Tables the stats stage did not compute, with the reason (``metrics.json["skipped"]``)."""
    return {str(k): str(v) for k, v in (metrics(results).get("skipped") or {}).items()}
