"""Stage ``stats``: agreement with DE, confounds, significance, method comparison, ``metrics.json``.

This is the one orchestration of the statistics: `geneattn run` runs it as a stage and `geneattn
stats DIR` calls `run_stats` on an existing results directory; both write the same tables, the same
annotations of ``cells.h5ad`` and the same ``metrics.json`` (`geneattn.study.metrics`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from .._keys import LABEL, REPLICATE, WELL
from .._results import OTHER, REF, Results
from ..attention import AttentionResult, gene_attention
from ..stats import agreement as ag
from ..stats import significance as sg
from ..stats.confounds import SCORE_TYPES, confounds_table
from ._stage import StageContext, stage
from .inputs import StudyInputs, load_inputs
from .methods import de_score, gene_baselines, methods_table
from .metrics import compute_metrics

__all__ = ["run_stats", "agreement_table", "significance_tables", "STATS_READS"]

logger = logging.getLogger(__name__)

STATS_READS = ("seed", "top_k", "n_boot", "attribution_cells", "highlight")


def agreement_table(inp: StudyInputs, de: pd.DataFrame, *, k: int, markers: tuple[str, ...]) -> pd.DataFrame:
    """Agreement of each model's attention scores (raw, fold, residual; per head) with DE and the truth.

    The gene-level baselines (model ``"baseline"``: mean_rank, detection, DE) are scored the same way.
    Columns ``model, layer, head, score_type`` + `geneattn.stats.agreement.AGREEMENT_COLUMNS`.
    """
    de_s, out = de_score(de), []
    for model in inp.stores:
        for (layer, head), g in inp.gene_scores(model).groupby(["layer", "head"], sort=False):
            g = g.drop_duplicates("gene").set_index("gene")
            t = ag.agreement(
                {st: g[st] for st in SCORE_TYPES}, de_s, planted=inp.planted, k=k, markers=markers
            )
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


def _layer_heads(n_layers: int) -> list[tuple[str, str]]:
    """The head averages of the paired per-gene test: each layer's mean and the overall mean."""
    return [(str(la), "mean") for la in range(n_layers)] + [("mean", "mean")]


def _class_units(inp: StudyInputs, store_name: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Class label and unit (well, else replicate) of each cell of a token store."""
    store = inp.stores[store_name]
    labels = inp.cell_obs(store, LABEL)
    units = inp.cell_obs(store, WELL)
    return labels, (units if units is not None else inp.cell_obs(store, REPLICATE))


def significance_tables(
    inp: StudyInputs, *, seed: int, n_boot: int, min_cells: int = 10
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Significance tests, bootstrap change-by-rank bands and the shuffled-label calibration.

    Returns ``(significance, change_ci, calibration)``.
    """
    parts, change, calib = [], pd.DataFrame(), {}
    ref, other = inp.stores.get(REF), inp.stores.get(OTHER)
    if ref is not None and other is not None:
        parts.append(sg.paired_gene_test(ref, other, heads=_layer_heads(ref.n_layers), min_cells=min_cells,
                                         seed=seed, gene_map=inp.gene_map, names=(REF, OTHER)))  # fmt: skip
        change = sg.bootstrap_change_by_rank(ref, other, n_boot=n_boot, seed=seed, names=(REF, OTHER))
    ch = inp.tables.get("cell_head")
    if ch is not None and {REF, OTHER} <= set(ch["model"].astype(str)):
        metrics = [m for m in ("head_out", "recv_first") if m in ch]
        parts.append(sg.paired_head_test(ch, ref=REF, other=OTHER, metrics=metrics))
    target = OTHER if OTHER in inp.stores else next(iter(inp.stores), None)
    if target is not None:
        labels, units = _class_units(inp, target)
        if labels is not None and len(set(labels)) > 1:
            heads, min_units = [("mean", "mean")], (6 if units is not None else min_cells)
            store = inp.stores[target]
            parts.append(sg.class_test(store, labels, units=units, heads=heads, min_units=min_units,
                                       gene_map=inp.gene_map, model=target, seed=seed))  # fmt: skip
            calib = sg.null_calibration(
                store, labels, units=units, seed=seed, heads=heads, min_units=min_units
            )
            calib["unit"] = "well/replicate" if units is not None else "cell"
    sig = pd.concat([p for p in parts if not p.empty], ignore_index=True) if parts else pd.DataFrame()
    sig = sig.reindex(columns=sg.SIGNIFICANCE_COLUMNS)
    sig["token_id"] = sig["token_id"].astype("Int64")
    return sig, change, calib


def _annotate_cells(inp: StudyInputs) -> None:
    """Write per-gene attention into ``cells.h5ad`` (``varm``/``var``/``uns["gene_attention"]``)."""
    res = inp.results
    if "attention_by_gene" not in inp.tables:
        return
    result = AttentionResult({"attention_by_gene": inp.tables["attention_by_gene"]}, _attention_params(res))
    gene_attention(inp.adata, result, key_added="gene_attention")
    res.write_h5ad(res.cells, inp.adata)


def _attention_params(res: Results) -> dict:
    p = res.attention / "params.json"
    return res.read_json(p) if p.is_file() else {}


def run_stats(results: Results, *, seed: int, top_k: int, n_boot: int, attribution_cells: int,
              highlight: tuple[str, ...], write_table: Callable[..., object]) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Every statistics step on a results directory; returns the tables.

    Writes the tables through ``write_table(name, df)``, per-gene attention into ``cells.h5ad`` and
    ``metrics.json``.
    """
    inp = load_inputs(results)
    de = results.read_table("de")
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable, *a: object, **kw: object) -> object:
        t = time.perf_counter()
        value = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t, 3)
        logger.info("stats: %s done in %.1fs", name, timings[name])
        return value

    out = {"agreement": timed("agreement", agreement_table, inp, de, k=top_k, markers=highlight),
           "confounds": timed("confounds", confounds_table, inp.stores, gene_map=inp.gene_map, de_score=de_score(de),
                              planted=inp.planted, k=top_k, seed=seed,
                              precomputed={m: inp.gene_scores(m) for m in inp.stores})}  # fmt: skip
    out["significance"], out["change_ci"], calib = timed(
        "significance", significance_tables, inp, seed=seed, n_boot=n_boot
    )
    out["methods"] = timed("methods", methods_table, inp, de, seed=seed, n_cells=attribution_cells, k=top_k)
    for name, df in out.items():
        write_table(name, df)
    _annotate_cells(inp)
    metrics = compute_metrics(results, tables={**out, "de": de}, calibration=calib, highlight=highlight,
                              top_k=top_k, timings=timings)  # fmt: skip
    results.write_metrics({**metrics, **{k: v for k, v in results.read_metrics().items() if k == "timings"}})
    return out


@stage("stats", deps=("qc", "attention"), reads=STATS_READS,
       outputs=("metrics.json", "tables/significance.parquet", "tables/methods.parquet"))  # fmt: skip
def stats(ctx: StageContext) -> str:
    """Agreement with DE, confounds, significance, method comparison: ``tables/``, ``metrics.json``."""
    cfg = ctx.config
    out = run_stats(ctx.results, seed=cfg.seed, top_k=cfg.top_k, n_boot=cfg.n_boot,
                    attribution_cells=cfg.attribution_cells, highlight=tuple(cfg.highlight),
                    write_table=ctx.write_table)  # fmt: skip
    n_methods = out["methods"]["method"].nunique() if len(out["methods"]) else 0
    return f"tables {', '.join(out)}; {n_methods} gene scores compared"
