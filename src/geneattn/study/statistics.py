"""Stage ``stats``: every statistic the report quotes, its tables and ``metrics.json``.

This is the one orchestration of the statistics: `geneattn run` runs it as a stage and `geneattn
stats DIR` calls `run_stats` on an existing results directory; both write the same tables, the same
annotations of ``cells.h5ad`` and the same ``metrics.json`` (`geneattn.study.metrics`).

Steps: agreement with DE; the confound tables; descriptive paired tests (the two fixed networks
differ) and the between-class test (wells as units); the run-level null (task-attributable genes,
heads, rank bins and pre-registered contrasts, `geneattn.study.task`); the method comparison and the
incremental value of every score over the gene covariates (`geneattn.study.methods`: natural-spline
covariates, programme blocks as units, negative controls as rows; per programme in
``incremental_programmes``; the run-level increment in ``incremental_runs``); the highlighted genes per
class; the one gene-score estimator (``gene_scores_shrunken``: empirical-Bayes shrunken, held-out cells,
ranked among genes in >= 30 cells); the head-ablation table beside each head's change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from .. import get
from .._keys import LABEL, REPLICATE, WELL
from .._results import OTHER, REF, Results
from ..attention import AttentionResult, gene_attention
from ..errors import InputError, one_line
from ..stats import agreement as ag
from ..stats import between_class as bc
from ..stats import significance as sg
from ..stats.confounds import SCORE_TYPES, confounds_table
from ..stats.contrasts import set_contrasts
from ..stats.per_class import highlighted_by_class
from ..stats.shrinkage import MIN_CELLS, store_gene_scores
from . import task
from ._stage import StageContext, stage
from .inputs import StudyInputs, load_inputs
from .methods import de_score, gene_baselines, incremental_tables, methods_table, run_increment_table
from .metrics import compute_metrics
from .tokens import read_input_summary

__all__ = ["run_stats", "agreement_table", "significance_tables", "gene_tables", "STATS_READS"]

logger = logging.getLogger(__name__)

STATS_READS = ("seed", "top_k", "n_boot", "highlight")


def agreement_table(inp: StudyInputs, de: pd.DataFrame, *, k: int, markers: tuple[str, ...]) -> pd.DataFrame:
    """Agreement of each model's attention scores (raw, fold, residual; per head) with DE and the truth.

    The gene-level baselines (model ``"baseline"``) and DE are scored the same way. Columns ``model,
    layer, head, score_type`` + `geneattn.stats.agreement.AGREEMENT_COLUMNS`.
    """
    de_s, out = de_score(de), []
    for model in inp.stores:
        for (layer, head), g in inp.gene_scores(model).groupby(["layer", "head"], sort=False):
            g = g.drop_duplicates("gene").set_index("gene")
            t = ag.agreement({st: g[st] for st in SCORE_TYPES}, de_s, planted=inp.planted, k=k, markers=markers,
                             n_cells=g["n_cells"], min_cells=MIN_CELLS)  # fmt: skip
            out.append(t.assign(model=model, layer=layer, head=head, score_type=t["score"]))
    if inp.stores:
        base = gene_baselines(inp)
        pb = de[de["method"] == "pseudobulk"]
        if not pb.empty:
            base["de_pseudobulk"] = ag.de_gene_score(pb)
        base["de_wilcoxon"] = de_s
        t = ag.agreement(base, de_s, planted=inp.planted, k=k, markers=markers)
        out.append(t.assign(model="baseline", layer="", head="", score_type=t["score"]))
    columns = ["model", "layer", "head", "score_type", *ag.AGREEMENT_COLUMNS]
    return pd.concat(out, ignore_index=True)[columns] if out else pd.DataFrame(columns=columns)


def _class_units(inp: StudyInputs, store_name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Class label and unit (well, else replicate) of each cell of a token store."""
    store = inp.stores[store_name]
    labels = inp.cell_obs(store, LABEL)
    units = inp.cell_obs(store, WELL)
    return labels, (units if units is not None else inp.cell_obs(store, REPLICATE))


def significance_tables(
    inp: StudyInputs, *, seed: int, n_boot: int, min_cells: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Descriptive paired tests, the between-class test and its calibration, the change-by-rank bands.

    Returns ``(significance, change_ci, calibration)``. The paired tests (pretrained vs fine-tuned on
    the same cells) use one head column per family: the overall head mean for genes, each head for
    the head norms.
    """
    parts, change, calib = [], pd.DataFrame(), {}
    ref, other = inp.stores.get(REF), inp.stores.get(OTHER)
    if ref is not None and other is not None:
        parts.append(sg.paired_gene_test(ref, other, heads=[("mean", "mean")], min_cells=min_cells, seed=seed,
                                         gene_map=inp.gene_map, names=(REF, OTHER)))  # fmt: skip
        change = sg.bootstrap_change_by_rank(ref, other, n_boot=n_boot, seed=seed, names=(REF, OTHER))
    ch = inp.tables.get("cell_head")
    if ch is not None and {REF, OTHER} <= set(ch["model"].astype(str)):
        parts.append(sg.paired_head_test(ch, ref=REF, other=OTHER, metrics=["head_out"]))
    target = OTHER if OTHER in inp.stores else next(iter(inp.stores), None)
    if target is not None:
        labels, units = _class_units(inp, target)
        if labels is not None and len(set(labels)) > 1:
            heads, min_units = [("mean", "mean")], (6 if units is not None else min_cells)
            store = inp.stores[target]
            parts.append(bc.class_test(store, labels, units=units, heads=heads, min_units=min_units,
                                       gene_map=inp.gene_map, model=target, seed=seed))  # fmt: skip
            calib = bc.null_calibration(
                store, labels, units=units, seed=seed, heads=heads, min_units=min_units
            )
            calib["unit"] = "well/replicate" if units is not None else "cell"
    sig = pd.concat([p for p in parts if not p.empty], ignore_index=True) if parts else pd.DataFrame()
    sig = sig.reindex(columns=sg.SIGNIFICANCE_COLUMNS)
    sig["token_id"] = sig["token_id"].astype("Int64")
    return sig, change, calib


def _run_null(
    inp: StudyInputs, *, highlight: tuple[str, ...], learned: bool
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Task-attributable tables (one per family), the pre-registered contrasts and their summary."""
    res = inp.results
    if not res.has_table("run_deltas"):  # `geneattn stats` on results without the control runs
        return {}, {task.NULL_KEY: {"skipped": "no control runs (run `geneattn run` for the run-level null)"}}
    deltas = res.read_table("run_deltas")
    deltas = (
        task.without_failed(res, deltas) if learned else deltas
    )  # unlearned: nothing is claimed; all runs shown
    if deltas.empty:
        return {}, {task.NULL_KEY: {"skipped": "no permuted-label runs"}}
    tables = task.family_tables(deltas)
    values = task.contrast_values(deltas, highlight=highlight, var=inp.adata.var)
    margins = dict(zip(values["contrast"], values["margin"], strict=True))
    prereg = set_contrasts(values.drop(columns="margin"), margins=margins) if len(values) else pd.DataFrame()
    out = {f"task_{f}": t.reset_index().assign(family=f) for f, t in tables.items()}
    out["preregistered"] = prereg.reset_index(names="contrast") if len(prereg) else pd.DataFrame()
    out["power"] = task.power_table(values) if len(values) else pd.DataFrame()
    return out, task.null_summary(tables, prereg if len(prereg) else None, learned=learned)


def _per_class(inp: StudyInputs, highlight: tuple[str, ...], *, n_boot: int, seed: int) -> pd.DataFrame:
    """Highlighted genes per class on the held-out cells: positions, detection, attention ranks by run."""
    res = inp.results
    deltas = res.read_table("run_deltas") if res.has_table("run_deltas") else pd.DataFrame()
    if deltas.empty:
        return pd.DataFrame()
    kinds = deltas.drop_duplicates("run").set_index("run")["kind"].to_dict()
    stores = task.load_run_stores(res, sorted(kinds))
    ref = stores[REF]
    ids = np.asarray(ref.cell_ids).astype(str)
    obs = inp.adata.obs.copy()
    obs.index = obs.index.astype(str)
    labels = obs.loc[ids, LABEL].astype(str).to_numpy()
    wells = obs.loc[ids, WELL].astype(str).to_numpy() if WELL in obs else ids
    sym_to_token = {g: int(t) for t, g in inp.gene_map.items()}
    genes = {h: sym_to_token[h] for h in highlight if h in sym_to_token}
    if not genes:
        return pd.DataFrame()
    return highlighted_by_class(stores, {REF: "pretrained", **kinds}, labels, wells=wells, genes=genes,
                                expressed=inp.expressed(ref, list(genes)), n_boot=n_boot, seed=seed)  # fmt: skip


def _head_table(res: Results, sig: pd.DataFrame, task_heads: pd.DataFrame | None) -> pd.DataFrame:
    """Head ablation beside each head's descriptive norm change and task-attributable change."""
    if not res.has_table("head_ablation"):
        return pd.DataFrame()
    abl = res.read_table("head_ablation")
    heads = sig[(sig["test"] == "paired_head") & (sig["metric"] == "head_out")]
    paired = heads.assign(ablation="L" + heads["layer"].astype(str) + "H" + heads["head"].astype(str))
    out = abl.merge(paired[["ablation", "pct_change", "pval_adj"]].rename(
        columns={"pct_change": "norm_pct_change", "pval_adj": "norm_paired_pval_adj"}), on="ablation", how="left")  # fmt: skip
    if task_heads is not None and len(task_heads):
        t = task_heads.rename(columns={"unit": "ablation"})[["ablation", "effect", "pval_adj", "significant"]]
        out = out.merge(t.rename(columns={"effect": "task_norm_effect", "pval_adj": "task_pval_adj",
                                          "significant": "task_significant"}), on="ablation", how="left")  # fmt: skip
    return out


def gene_score_table(inp: StudyInputs) -> pd.DataFrame:
    """The one gene-score estimator (`geneattn.stats.shrinkage.store_gene_scores`) of both models.

    On the held-out cells (the controls stage's stores) when they exist, else on every cell of the
    study's stores; ``cells`` says which.
    """
    from ..attention.store import TokenStore, token_store_path

    res, parts = inp.results, []
    for model in (OTHER, REF):
        if token_store_path(res.runs_attention, model).is_file():
            store, cells = TokenStore.load(res.runs_attention, model), "held-out"
        elif model in inp.stores:
            store, cells = inp.stores[model], "all"
        else:
            continue
        parts.append(store_gene_scores(store, inp.gene_map, cells=cells).assign(model=model))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _annotate_cells(inp: StudyInputs) -> None:
    """``cells.h5ad`` (its one writer): the QC'd cells with per-gene attention (``varm``/``var``/``uns``)."""
    res = inp.results
    if "attention_by_gene" in inp.tables:
        params = res.read_json_or_empty(res.attention_params)
        result = AttentionResult({"attention_by_gene": inp.tables["attention_by_gene"]}, params)
        gene_attention(inp.adata, result, key_added="gene_attention")
    res.write_h5ad(res.cells, inp.adata)


def gene_tables(inp: StudyInputs, de: pd.DataFrame, *, top_k: int) -> dict[str, pd.DataFrame]:
    """The DE-vs-attention table (one row per gene) and the expression of the top genes by class.

    ``de_vs_attention``: ``gene, attention, rank, de_score`` (+ ``planted`` on simulated data), the
    fine-tuned model's gene score beside the DE score of the report's scatter; ``expression_by_class``:
    ``gene, label, mean_expr`` of its ``top_k`` genes.
    """
    if "attention_by_gene" not in inp.tables:
        return {}
    scores = get.gene_scores_of(inp.tables["attention_by_gene"], model=OTHER)
    df = scores.assign(de_score=scores["gene"].map(de_score(de)))
    if inp.planted is not None:
        df["planted"] = df["gene"].map(inp.planted.astype(bool)).fillna(False).astype(bool)
    top = scores["gene"].head(top_k).tolist()
    return {"de_vs_attention": df, "expression_by_class": get.expression_by_class_df(inp.adata, top)}


#: why a table of the report has no rows, when the stats stage knows (``metrics.json["skipped"]``)
_EMPTY_REASONS = {
    "highlight_by_class": "no control runs, or no highlighted gene in the model's vocabulary",
    "heads": "no head-ablation table",
    "incremental": "no planted genes (simulated data only) or too few genes",
    "incremental_programmes": "no planted programmes with matched decoys (simulated data only)",
    "incremental_runs": "no control runs, or no planted genes",
    "confound_wells": "no wells, or no gene present in every well",
}


def _skipped(out: dict[str, pd.DataFrame], null_summary: dict) -> dict[str, str]:
    """Tables not computed or empty, with the reason: the report says so instead of dropping them."""
    null_reason = (null_summary.get(task.NULL_KEY) or {}).get("skipped")
    reasons = {n: null_reason for n in ("preregistered", "power") if null_reason and n not in out}
    for name, df in out.items():
        if df is None or df.empty:
            from_null = name in ("preregistered", "power", "highlight_by_class") or name.startswith("task_")
            why = null_reason if from_null and null_reason else _EMPTY_REASONS.get(name)
            reasons[name] = why or "the stats stage found no rows"
    return reasons


def _learned(res: Results) -> bool:
    """Whether the study's classifier beat the majority class (interval over test wells)."""
    clf = res.read_json_or_empty(res.model_metrics(OTHER))
    return bool((clf.get("flags") or {}).get("learned"))


def run_stats(results: Results, *, seed: int, top_k: int, n_boot: int, highlight: tuple[str, ...],
              write_table: Callable[..., object]) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Every statistics step on a results directory; returns the tables.

    Writes the tables through ``write_table(name, df)``, per-gene attention into ``cells.h5ad`` and
    ``metrics.json``.
    """
    inp, de, timings, out = load_inputs(results), results.read_table("de"), {}, {}
    skipped: dict[str, str] = {}

    def timed(name: str, fn: Callable, *a: object, fallback: object = None, **kw: object) -> object:
        """Run one step; a step that cannot be computed on these data is skipped with its reason."""
        t = time.perf_counter()
        try:
            value = fn(*a, **kw)
        except InputError as e:
            skipped[name] = one_line(e)
            logger.warning("stats: %s skipped: %s", name, skipped[name])
            value = fallback
        timings[name] = round(time.perf_counter() - t, 3)
        logger.info("stats: %s done in %.1fs", name, timings[name])
        return value

    empty = pd.DataFrame()
    out["agreement"] = timed(
        "agreement", agreement_table, inp, de, k=top_k, markers=highlight, fallback=empty
    )
    out["confounds"] = timed("confounds", confounds_table, inp.stores, gene_map=inp.gene_map, de_score=de_score(de),
                             planted=inp.planted, k=top_k, seed=seed, fallback=empty,
                             n_genes={m: inp.n_genes(s) for m, s in inp.stores.items()},
                             precomputed={m: inp.gene_scores(m) for m in inp.stores})  # fmt: skip
    out["confound_wells"] = timed("confound_wells", inp.well_confounds, fallback=empty)
    out["significance"], out["change_ci"], calib = timed(
        "significance", significance_tables, inp, seed=seed, n_boot=n_boot,
        fallback=(pd.DataFrame(columns=sg.SIGNIFICANCE_COLUMNS), empty, {}),
    )  # fmt: skip
    null_tables, null_summary = timed("run_null", _run_null, inp, highlight=highlight, learned=_learned(results),
                                      fallback=({}, {}))  # fmt: skip
    if "run_null" in skipped:
        null_summary = {task.NULL_KEY: {"skipped": skipped["run_null"]}}
    out.update(null_tables)
    out["methods"] = timed("methods", methods_table, inp, de, k=top_k, fallback=empty)
    out["incremental"], out["recovery"], out["incremental_programmes"], skipped_methods = timed(
        "incremental",
        incremental_tables,
        inp,
        de,
        n_boot=n_boot,
        seed=seed,
        fallback=(empty, empty, empty, {}),
    )
    skipped.update(skipped_methods)
    deltas = results.read_table("run_deltas") if results.has_table("run_deltas") else empty
    if _learned(results) and len(deltas):  # failed real-label runs are no replicates of a learned task
        deltas = task.without_failed(results, deltas)
    out["incremental_runs"], run_inc = timed(
        "incremental_runs", run_increment_table, inp, deltas, fallback=(empty, {})
    )
    out["highlight_by_class"] = timed("per_class", _per_class, inp, highlight, n_boot=n_boot, seed=seed,
                                      fallback=empty)  # fmt: skip
    out["gene_scores_shrunken"] = timed("gene_scores", gene_score_table, inp, fallback=empty)
    out["heads"] = timed("heads", _head_table, results, out["significance"], null_tables.get("task_heads"),
                         fallback=empty)  # fmt: skip
    out.update(timed("gene_tables", gene_tables, inp, de, top_k=top_k, fallback={}))
    for name, df in out.items():
        write_table(name, df)
    _annotate_cells(inp)
    metrics = compute_metrics(results, tables={**out, "de": de}, calibration=calib, highlight=highlight, top_k=top_k,
                              timings=timings, task=null_summary, ensemble=task.ensemble_summary(results),
                              run_increment=run_inc)  # fmt: skip
    metrics["skipped"] = {**(metrics.get("skipped") or {}), **_skipped(out, null_summary), **skipped}
    if not results.has_table("run_scores") or results.read_table("run_scores").empty:  # the controls stage's
        metrics["skipped"]["run_scores"] = (
            null_summary.get(task.NULL_KEY, {}).get("skipped") or "no control runs"
        )
    if results.has_table("top_genes") and results.read_table("top_genes").empty:  # the attention stage's
        from ..attention.compare import MIN_CELLS

        metrics["skipped"]["top_genes"] = (
            f"no gene is seen in at least {MIN_CELLS} cells (the stated minimum)"
        )
    metrics["input"] = read_input_summary(results)  # the cut of the cells to the model's input
    metrics["confound_wells"] = {
        f"{r['model']}/{r['adjustment']}": r for r in out["confound_wells"].to_dict("records")
    }
    results.write_metrics({**metrics, **{k: v for k, v in results.read_metrics().items() if k == "timings"}})
    return out


@stage("stats", deps=("qc", "attention", "controls", "ablation", "attribution"), reads=STATS_READS,
       outputs=("metrics.json", "cells.h5ad", "tables/significance.parquet", "tables/methods.parquet", "tables/incremental.parquet"))  # fmt: skip
def stats(ctx: StageContext) -> str:
    """Every statistic the report quotes: ``tables/`` and ``metrics.json``."""
    cfg = ctx.config
    out = run_stats(ctx.results, seed=cfg.seed, top_k=cfg.top_k, n_boot=cfg.n_boot, highlight=tuple(cfg.highlight),
                    write_table=ctx.write_table)  # fmt: skip
    return f"{len(out)} tables; verdict: {ctx.results.read_metrics()['verdict']['headline']}"
