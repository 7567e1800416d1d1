"""Incremental value per programme, and the fine-tuning-specific increment tested across runs.

* `programme_table`: per simulator programme (p53 targets, cell-cycle genes, background responders:
  each with its own decoys), the **placement** of every planted gene among its own expression-matched
  decoys (the share of its decoys it out-scores, ties ½): the conditional analysis within matched
  sets. Background responders are independent given dose, so their matched sets are the units
  (Wilcoxon signed-rank of placement − ½ over sets, and the spline LR test with matched-set clusters).
  The p53 and cell-cycle programmes are one block each (a shared programme fluctuation): they are
  described, not tested.
* `run_increments` / `run_contrast`: per run (held-out cells), the background responders' mean
  placement among their own decoys and the spline-adjusted coefficient of the run's attention
  score; the contrast real-label runs minus permuted-label runs of the placement, with a Welch t
  interval over runs (the unit: a training run).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from ._flexible import gene_clusters
from .incremental import nested_lrt

__all__ = ["PROGRAMMES", "programme_of", "placements", "programme_table", "run_increments", "run_contrast"]

#: programme -> (planted programme label, decoy programme label) in ``var["program"]``
PROGRAMMES = {
    "p53_targets": ("p53_pulse", "decoy_pulse"),
    "cell_cycle": ("cell_cycle", "decoy_cycle"),
    "background_responders": ("none", "none"),
}
PROGRAMME_COLUMNS = ["method", "programme", "unit", "n_sets", "n_genes", "placement", "placement_pvalue",
                     "lr_pvalue", "coef_score", "wald_pvalue", "separation"]  # fmt: skip


def programme_of(var: pd.DataFrame) -> pd.Series:
    """Programme name per gene in a matched set (NaN for references and curated non-programme sets)."""
    prog = var["program"].astype(str)
    ms = pd.to_numeric(var["matched_set"], errors="coerce")
    out = pd.Series(np.nan, index=var.index, dtype=object)
    for name, (planted, decoy) in PROGRAMMES.items():
        m = (ms >= 0) & prog.isin({planted, decoy})
        if name == "background_responders":
            m &= var["category"].astype(str).eq("background") if "category" in var else True
        out[m] = name
    return out


def placements(score: pd.Series, var: pd.DataFrame) -> pd.Series:
    """Per matched set: the planted gene's placement among its own decoys (ties ½; NaN when unscored)."""
    df = pd.DataFrame(
        {"s": score.reindex(var.index), "set": var["matched_set"], "p": var["planted"].astype(bool)}
    )
    df = df[(df["set"] >= 0) & df["s"].notna()]
    pos = df[df["p"]]
    pos = pos[~pos["set"].duplicated(keep=False)].set_index("set")["s"]  # sets with one planted gene
    neg = df[~df["p"] & df["set"].isin(pos.index)]
    ref = neg["set"].map(pos)
    wins = (neg["s"] < ref).astype(float) + 0.5 * (neg["s"] == ref)
    return wins.groupby(neg["set"]).mean().rename("placement").astype(float).rename_axis(None)


def programme_table(
    scores: Mapping[str, pd.Series], var: pd.DataFrame, covariates: pd.DataFrame, *, spline_df: int = 5
) -> pd.DataFrame:
    """Per method and programme: placement within matched sets; tests where the sets are independent."""
    prog, rows = programme_of(var), []
    set_prog = prog.groupby(var["matched_set"]).first()
    for method, score in scores.items():
        s = score[~score.index.duplicated()].astype(float)
        pl = placements(s, var)
        for name in PROGRAMMES:
            p = pl[pl.index.map(set_prog).to_numpy() == name]
            genes = prog.index[(prog == name) & s.reindex(prog.index).notna()]
            row = {"method": method, "programme": name, "n_sets": len(p), "n_genes": len(genes),
                   "placement": float(p.mean()) if len(p) else np.nan, "placement_pvalue": np.nan,
                   "lr_pvalue": np.nan, "coef_score": np.nan, "wald_pvalue": np.nan, "separation": pd.NA,
                   "unit": "matched set" if name == "background_responders" else "programme (one block: not tested)"}  # fmt: skip
            if name == "background_responders" and len(p) >= 10:
                row["placement_pvalue"] = float(stats.wilcoxon(p - 0.5, zero_method="zsplit").pvalue)
                row |= _lrt(s, var, covariates, genes, spline_df)
            rows.append(row)
    return pd.DataFrame(rows, columns=PROGRAMME_COLUMNS).astype({"separation": "boolean"})


def _lrt(score: pd.Series, var: pd.DataFrame, cov: pd.DataFrame, genes: pd.Index, spline_df: int) -> dict:
    truth = var.loc[genes, "planted"].astype(bool)
    if truth.nunique() < 2:
        return {}
    r = nested_lrt(truth, cov.reindex(genes), score.reindex(genes), clusters=gene_clusters(var, genes),
                   spline_df=spline_df)  # fmt: skip
    return {k: r[k] for k in ("lr_pvalue", "coef_score", "wald_pvalue", "separation")}


def run_increments(
    run_scores: Mapping[str, pd.Series],
    kinds: Mapping[str, str],
    var: pd.DataFrame,
    covariates: pd.DataFrame,
    *,
    spline_df: int = 5,
) -> pd.DataFrame:
    """Per run: the spline-adjusted coefficient (per SD) of its attention score on the background responders.

    ``kinds``: ``run -> "real" | "permuted" | "pretrained"``. Columns ``run, kind, n_genes,
    lr_pvalue, coef_score, wald_pvalue, separation`` (the coefficient is no finite estimate then:
    too few genes scored) and ``placement``.
    """
    prog = programme_of(var)
    genes = prog.index[prog == "background_responders"]
    rows = []
    for run, score in run_scores.items():
        s = score[~score.index.duplicated()].astype(float)
        g = genes[s.reindex(genes).notna().to_numpy()]
        r = _lrt(s, var, covariates, g, spline_df)
        pl = placements(s, var.loc[g]) if len(g) else pd.Series(dtype=float)
        rows.append({"run": run, "kind": kinds.get(run, "?"), "n_genes": len(g), **r,
                     "placement": float(pl.mean()) if len(pl) else np.nan})  # fmt: skip
    out = pd.DataFrame(rows)
    if "separation" in out:
        out["separation"] = out["separation"].astype("boolean")
    return out


def run_contrast(table: pd.DataFrame, *, value: str = "placement", alpha: float = 0.05) -> dict:
    """Mean over real-label runs minus mean over permuted-label runs, with a Welch t interval over runs.

    ``value``: ``"placement"`` (default: the mean placement of the background responders among their
    own decoys, bounded and free of any covariate model) or ``"coef_score"`` (the spline-adjusted
    coefficient; unstable when few genes are scored). Returns ``value, effect, ci_low, ci_high, df,
    pval, n_real, n_permuted`` (NaN interval with fewer than 2 runs in an arm).
    """
    a = table.loc[table["kind"] == "real", value].dropna().to_numpy(float)
    b = table.loc[table["kind"] == "permuted", value].dropna().to_numpy(float)
    out = {"value": value, "effect": float(a.mean() - b.mean()) if len(a) and len(b) else np.nan, "ci_low": np.nan,
           "ci_high": np.nan, "df": np.nan, "pval": np.nan, "n_real": len(a), "n_permuted": len(b)}  # fmt: skip
    if len(a) < 2 or len(b) < 2:
        return out
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if not se > 0:
        return out
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    q = stats.t.ppf(1 - alpha / 2, df)
    t = out["effect"] / se
    return out | {"ci_low": out["effect"] - q * se, "ci_high": out["effect"] + q * se, "df": float(df),
                  "pval": float(2 * stats.t.sf(abs(t), df))}  # fmt: skip
