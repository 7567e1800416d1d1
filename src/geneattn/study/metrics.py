"""``metrics.json``: the numbers the report quotes, computed from the results (never hard-coded).

`compute_metrics` builds the whole document; `geneattn._results.Results.write_metrics` is its only writer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import get
from .._results import OTHER, REF, MissingResult, Results, jsonable

__all__ = ["compute_metrics"]


def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _overall(df: pd.DataFrame) -> pd.DataFrame:
    """Rows averaged over all layers and heads (``layer == head == "mean"``) when the table has them."""
    if {"layer", "head"} <= set(df.columns):
        m = (df["layer"].astype(str) == "mean") & (df["head"].astype(str) == "mean")
        if m.any():
            return df[m]
    return df


def _data(res: Results) -> dict[str, Any]:
    if not res.qc_h5ad.is_file():
        return {}
    a = res.read_qc(backed=True)
    try:
        obs = a.obs
        out: dict[str, Any] = {"n_cells": int(a.n_obs), "n_genes": int(a.n_vars)}
        out["classes"] = (
            {str(k): int(v) for k, v in obs["label"].value_counts(sort=False).items()}
            if "label" in obs
            else {}
        )
        if "group" in obs:
            out["groups"] = {str(k): int(v) for k, v in obs["group"].value_counts(sort=False).items()}
        if "n_genes" in obs:
            ng = obs["n_genes"].astype(float)
            out["genes_per_cell"] = {"median": _f(ng.median()), "min": _f(ng.min()), "max": _f(ng.max())}
            if "label" in obs:
                out["genes_per_cell_by_class"] = {
                    str(k): _f(v) for k, v in ng.groupby(obs["label"].astype(str)).median().items()
                }
        out["planted"] = int(a.var["planted"].astype(bool).sum()) if "planted" in a.var else None
        for key in ("subsample", "permuted_labels"):
            if key in a.uns:
                out[key] = {
                    k: v.item() if hasattr(v, "item") else v for k, v in dict(a.uns[key]["params"]).items()
                }
    finally:
        a.file.close()
    return out


def _attention(
    res: Results, highlight: Sequence[str], top_k: int, change_ci: pd.DataFrame | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cols = [*get.GENE_SCORE_COLUMNS, "fold_mean", "rank_mean"]
    try:  # one read of the few columns needed: the table can have millions of rows
        abg = res.read_table("attention_by_gene", columns=cols)
    except MissingResult:  # attention not run
        return out
    for model in (OTHER, REF):
        s = get.gene_scores_of(abg, model=model)
        out[f"top_genes_{model}"] = s["gene"].head(top_k).tolist()
        out[f"highlight_rank_{model}"] = {h: (int(s.loc[s["gene"] == h, "rank"].iloc[0]) if (s["gene"] == h).any() else None)
                                          for h in highlight}  # fmt: skip
        if model == OTHER:
            out["n_genes_scored"] = len(s)
    if "rank_mean" in abg:  # per class: a mean over a population split by dose would sit between them
        rows = abg[(abg["model"] == OTHER) & (abg["label"] != "__all__") & abg["gene"].isin(list(highlight))]
        pos = rows.groupby(["gene", "label"], observed=True)["rank_mean"].mean()
        out["highlight_position_by_class"] = {h: {str(c): _f(v) for c, v in pos[h].items()} for h in highlight
                                              if h in pos.index.get_level_values(0)}  # fmt: skip
    ch = change_ci if change_ci is not None and not change_ci.empty else None
    if ch is None and res.has_table("head_change"):
        ch = get.head_change_df(res)
    if ch is not None and not ch.empty:
        num = ch[
            pd.to_numeric(ch["layer"].astype(str), errors="coerce").notna()
            & pd.to_numeric(ch["head"].astype(str), errors="coerce").notna()
        ]
        if not num.empty:
            best = num.loc[num["pct_change"].abs().idxmax()]
            out["largest_change"] = {"layer": str(best["layer"]), "head": str(best["head"]), "bin_start": int(best["bin_start"]),
                                     "bin_end": int(best["bin_end"]), "pct_change": _f(best["pct_change"])}  # fmt: skip
            out["n_bins_compared"] = len(num[["layer", "head", "bin_start"]].drop_duplicates())
            prof = num.groupby("bin_start")["pct_change"].apply(lambda v: v.abs().mean())
            out["peak_bin_mean_abs_change"] = {
                "bin_start": int(prof.idxmax()),
                "mean_abs_pct_change": _f(prof.max()),
            }
    return out


def _one_estimator(
    attention: dict[str, Any], t: pd.DataFrame | None, highlight: Sequence[str], top_k: int
) -> None:
    """Top genes and highlighted ranks from the one gene-score estimator (shrunken; held-out cells)."""
    if t is None or t.empty:
        return
    from ..stats.shrinkage import MIN_CELLS

    for model, g in t.groupby("model"):
        g = g[g["rank"].notna()].sort_values("rank")
        ranks = dict(zip(g["gene"], g["rank"], strict=True))
        attention[f"top_genes_{model}"] = g["gene"].head(top_k).tolist()
        attention[f"highlight_rank_{model}"] = {h: (int(ranks[h]) if h in ranks else None) for h in highlight}
        if model == OTHER:
            attention["n_genes_scored"] = len(g)
    attention["gene_score"] = {"estimator": "empirical-Bayes shrunken mean head-mean log fold, ranked on the shrunken value "
                                            f"among genes seen in >= {MIN_CELLS} cells",
                               "cells": str(t["cells"].iloc[0]), "min_cells_unshrunken": MIN_CELLS}  # fmt: skip


def _agreement(t: pd.DataFrame | None) -> dict[str, Any]:
    if t is None or t.empty:
        return {}
    out = {}
    for st in ("raw", "fold", "residual"):
        m = t[(t["model"] == OTHER) & (t.get("score_type", t.get("score")) == st)]
        m = _overall(m)
        if not m.empty:
            r = m.iloc[0]
            out[st] = {"spearman_vs_de": _f(r.get("spearman_vs_de")), "topk_overlap_de": _f(r.get("topk_overlap_de")),
                       "topk_expected": _f(r.get("topk_expected")), "k": _f(r.get("k")), "auroc_planted": _f(r.get("auroc_planted")),
                       "marker": r.get("marker")}  # fmt: skip
    return out


def _confounds(t: pd.DataFrame | None) -> dict[str, Any]:
    if t is None or t.empty:
        return {}
    t = _overall(t)
    return {f"{r.model}/{r.score_type}": {"spearman_vs_length": _f(r.spearman_vs_length), "auroc_planted": _f(getattr(r, "auroc_planted", None))}
            for r in t.itertuples()}  # fmt: skip


def _significance(t: pd.DataFrame | None, calibration: Mapping[str, Any] | None) -> dict[str, Any]:
    """Descriptive paired tests (one family each, units counted once) and the between-class test."""
    out: dict[str, Any] = {
        "calibration": jsonable(dict(calibration or {})),
        "paired_tests_are": "descriptive",
    }
    if t is None or t.empty:
        return out
    for test, g in t.groupby("test"):
        out[str(test)] = {"n_tests": int(len(g)), "n_significant": int((g["pval_adj"] < 0.05).sum()),
                          "unit": "well" if test == "between_class" else "cell"}  # fmt: skip
    ph = t[(t["test"] == "paired_head") & (t["metric"] == "head_out")] if "metric" in t else t.iloc[0:0]
    if not ph.empty:
        out["heads"] = {"n_heads": int(len(ph)), "n_significant": int((ph["pval_adj"] < 0.05).sum()),
                        "max_abs_pct_change": _f(ph["pct_change"].abs().max())}  # fmt: skip
    return out


def _incremental(
    t: pd.DataFrame | None, programmes: pd.DataFrame | None = None, runs: pd.DataFrame | None = None,
    contrast: Mapping[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Per method: AUROCs and the incremental value over spline covariates; per programme; across runs."""
    if t is None or t.empty:
        return {}
    keys = ("auroc", "stratified_auroc", "auroc_covariates", "auroc_full", "delta_auroc", "delta_lo", "delta_hi",
            "lr_chi2", "lr_pvalue", "coef_score", "wald_pvalue", "pvalue", "n_clusters", "unit", "control", "n_genes",
            "n_planted", "uses_labels", "separation")  # fmt: skip
    out = {"covariates": "natural splines (5 df) of log mean, logit detection, log variance, HVG residual"
                         + (" + matched-set stratum" if ("unit" in t and (t["unit"] == "programme block").any()) else ""),
           "methods": {str(r["method"]): {k: r[k] for k in keys if k in r} for _, r in t.iterrows()}}  # fmt: skip
    if programmes is not None and not programmes.empty:
        out["programmes"] = {f"{r.method}/{r.programme}": {k: getattr(r, k) for k in programmes.columns[2:]}
                             for r in programmes.itertuples()}  # fmt: skip
    if runs is not None and not runs.empty:
        out["run_level"] = {"subset": "background responders vs their decoys", "unit": "training run",
                            "runs": runs.to_dict("records"), **dict(contrast or {})}  # fmt: skip
    return out


def _heads(t: pd.DataFrame | None) -> dict[str, Any]:
    """Head ablation: single heads (Holm over the heads tested), combinations and the random-head control.

    A single head is ``causal`` when its ablation lowers accuracy or log-likelihood with a Holm-adjusted
    p below 0.025 (0.05 split over the two metrics; unit: test wells). Combinations are never called
    single heads; each is compared with the random sets of as many heads.
    """
    if t is None or t.empty:
        return {}
    cols = ["ablation", "n_heads", "accuracy", "d_accuracy", "d_accuracy_low", "d_accuracy_high", "d_loglik",
            "d_loglik_low", "d_loglik_high"]  # fmt: skip
    kind = (
        t["kind"]
        if "kind" in t
        else np.where(t["ablation"] == "full", "full", np.where(t["n_heads"] > 1, "combo", "single"))
    )
    extra = [c for c in ("p_accuracy", "p_loglik", "p_accuracy_holm", "p_loglik_holm") if c in t]
    singles, combos, rand = t[kind == "single"], t[kind == "combo"], t[kind == "random"]
    if {"p_accuracy_holm", "p_loglik_holm"} <= set(t.columns):
        causal = singles[singles[["p_accuracy_holm", "p_loglik_holm"]].min(axis=1) < 0.025]
        rule = "Holm over single heads, p < 0.025 on accuracy or log-likelihood"
    else:  # an older table: interval below 0, no multiplicity control
        causal, rule = (
            singles[(singles["d_accuracy_high"] < 0) | (singles["d_loglik_high"] < 0)],
            "unadjusted interval",
        )
    combo_rows = []
    for r in combos[cols + extra].to_dict("records"):
        same = rand[rand["n_heads"] == r["n_heads"]]
        if len(same):
            r |= {"random_mean_d_accuracy": _f(same["d_accuracy"].mean()), "n_random": len(same),
                  "random_as_large": int((same["d_accuracy"] <= r["d_accuracy"]).sum())}  # fmt: skip
        combo_rows.append(r)
    return {"full": t[kind == "full"][cols].to_dict("records")[0],
            "largest_drops": singles.nsmallest(3, "d_accuracy")[cols + extra].to_dict("records"),
            "combos": combo_rows, "random": rand[cols].to_dict("records"), "n_single": len(singles),
            "causal": causal["ablation"].astype(str).tolist(), "causal_rule": rule,
            "n_cells": int(t["n_cells"].iloc[0]), "n_wells": int(t["n_wells"].iloc[0]), "unit": "test well"}  # fmt: skip


def _methods(t: pd.DataFrame | None) -> dict[str, Any]:
    """Each gene score's agreement with the truth (AUROC) or, without one, with DE (Spearman)."""
    if t is None or t.empty:
        return {}
    metric = "auroc_planted" if t["auroc_planted"].notna().any() else "spearman_vs_de"
    rows = {str(r.method): _f(getattr(r, metric)) for r in t.itertuples()}
    return {"metric": metric, "values": rows,
            "uses_labels": {str(r.method): bool(r.uses_labels) for r in t.itertuples() if pd.notna(r.uses_labels)}}  # fmt: skip


def compute_metrics(
    results: Results,
    *,
    tables: Mapping[str, pd.DataFrame],
    calibration: Mapping[str, Any] | None = None,
    highlight: Sequence[str] = ("MDM2",),
    top_k: int = 20,
    timings: Mapping[str, float] | None = None,
    task: Mapping[str, Any] | None = None,
    ensemble: Mapping[str, Any] | None = None,
    run_increment: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the report quotes, the verdict first.

    Sections: ``verdict`` (`geneattn.study.verdict`), ``data``, ``classification``, ``runs`` (control
    fine-tunes), ``attention``, ``agreement``, ``confounds``, ``significance`` (descriptive),
    ``task_attributable`` (the run-level null), ``ensemble`` (every run against the true labels, the
    real-label runs' mean with a run-level interval), ``methods``, ``incremental``, ``heads`` (ablation),
    ``highlight_by_class``, ``stats_timings_s``, ``highlight``.
    """
    from .training import skipped_by_user_model
    from .verdict import verdict

    clf = results.read_json_or_empty(results.model_metrics(OTHER))
    metrics = {
        "data": _data(results),
        "pretraining": _pretraining(results),
        "classification": clf,
        "attention": _attention(
            results, highlight, top_k, tables.get("change_ci")
        ),  # ranks: see _one_estimator
        "agreement": _agreement(tables.get("agreement")),
        "confounds": _confounds(tables.get("confounds")),
        "significance": _significance(tables.get("significance"), calibration),
        "task_attributable": dict(task or {}),
        "ensemble": dict(ensemble or {}),
        "methods": _methods(tables.get("methods")),
        "incremental": _incremental(
            tables.get("incremental"),
            tables.get("incremental_programmes"),
            tables.get("incremental_runs"),
            run_increment,
        ),
        "heads": _heads(tables.get("heads")),
        "highlight_by_class": _records(tables.get("highlight_by_class")),
        "runs": results.read_json_or_empty(results.runs_json),
        "stats_timings_s": dict(timings or {}),
        "highlight": list(highlight),
        "skipped": skipped_by_user_model(results),  # analyses a study of the user's classifier cannot run
    }
    _one_estimator(metrics["attention"], tables.get("gene_scores_shrunken"), highlight, top_k)
    metrics = jsonable(metrics)
    return {"verdict": verdict(metrics), **metrics}


def _pretraining(results: Results) -> dict[str, Any]:
    """Where the pretrained model came from and its held-out masked-gene accuracy (vs gene frequency)."""
    rec = results.read_json_or_empty(results.model_record(REF))
    path, root = Path(str(rec.get("path", results.model(REF)))).resolve(), results.root.resolve()
    m = results.read_json_or_empty(Results.train_log(path)).get("masked_gene") or {}
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    out: dict[str, Any] = {"source": rec.get("source"), "path": str(shown)}
    if m:
        model, uni = m["model"], m["unigram"]
        out.update(mlm_loss=model["loss"], top1=model["top1"], top10=model["top10"], unigram_loss=uni["loss"],
                   unigram_top1=uni["top1"], unigram_top10=uni["top10"], n_held_out_cells=m.get("n_cells"))  # fmt: skip
    return out


def _records(t: pd.DataFrame | None) -> list[dict[str, Any]]:
    return [] if t is None or t.empty else t.to_dict("records")
