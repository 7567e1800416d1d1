"""Is the attention change about the task? The run-level null of the stats stage.

Families (one test family per claim, each unit counted once): genes, heads, rank bins — the change
after real-label fine-tunes against the change after fine-tunes on labels permuted between wells
(`geneattn.stats.nulls.task_attributable`, BH within each family). Pre-registered contrasts
(Welch over runs, Holm across them): each highlighted gene, the planted-set score, the mean head-norm
change and the gain in expression-stratified recovery of planted genes.

**Gatekeeping.** The families are claims about what the *task* changed, so they are only claimed
when the classifier learned the task (its test accuracy beats the majority class, interval over
test wells): a fixed-sequence procedure, so under a model that learned nothing no family claims a
discovery. The ungated counts are kept beside the gated ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._results import OTHER, REF, Results
from ..attention.store import TokenStore
from ..stats import nulls
from ..stats.incremental import stratified_auroc
from ..stats.run_deltas import gene_means

__all__ = ["FAMILIES", "family_tables", "contrast_values", "null_summary", "NULL_KEY", "without_failed",
           "ensemble_summary"]

FAMILIES = ("genes", "heads", "rank_bins")
#: the key under which metrics.json files the counts: it names the null
NULL_KEY = "permuted_label_runs"


def family_tables(deltas: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One `task_attributable` table per family that has both real and permuted runs."""
    out = {}
    for family in FAMILIES:
        d = deltas[deltas["family"] == family]
        if d.empty or set(d["kind"]) != {"real", "permuted"}:
            continue
        n_units = d["unit"].nunique()
        out[family] = nulls.task_attributable(d[["run", "kind", "unit", "value"]], normalize=n_units >= 10)
    return out


def _planted_set_score(values: pd.Series, planted: pd.Series, strata: pd.Series) -> float:
    """Mean over strata (weighted by planted genes) of planted minus unplanted values in the stratum."""
    df = pd.DataFrame(
        {"v": values, "p": planted.reindex(values.index), "s": strata.reindex(values.index)}
    ).dropna()
    diffs, weights = [], []
    for _, g in df.groupby("s"):
        pos, neg = g.loc[g["p"].astype(bool), "v"], g.loc[~g["p"].astype(bool), "v"]
        if len(pos) and len(neg):
            diffs.append(pos.mean() - neg.mean())
            weights.append(len(pos))
    return float(np.average(diffs, weights=weights)) if diffs else float("nan")


def contrast_values(
    deltas: pd.DataFrame,
    stores: dict[str, TokenStore],
    *,
    gene_map: pd.Series,
    highlight: tuple[str, ...],
    planted: pd.Series | None,
    strata: pd.Series | None,
) -> pd.DataFrame:
    """The pre-registered contrasts, one value per run: long table ``contrast, run, kind, value``."""
    rows = []
    genes = deltas[deltas["family"] == "genes"]
    heads = deltas[deltas["family"] == "heads"]
    ref_auroc = None
    if planted is not None and strata is not None:
        ref_scores = gene_means(stores[REF]).rename(gene_map)
        ref_auroc = stratified_auroc(ref_scores, planted, strata)
    for (run, kind), g in genes.groupby(["run", "kind"]):
        by_gene = g.set_index("unit")["value"]
        for h in highlight:
            rows.append((f"gene {h}", run, kind, by_gene.get(h, np.nan)))
        rows.append(("mean head-norm change", run, kind, heads.loc[heads["run"] == run, "value"].mean()))
        if planted is not None and strata is not None:
            rows.append(("planted-set score", run, kind, _planted_set_score(by_gene, planted, strata)))
            run_scores = gene_means(stores[run]).rename(gene_map)
            rows.append(("recovery gain (stratified AUROC)", run, kind,
                         stratified_auroc(run_scores, planted, strata) - ref_auroc))  # fmt: skip
    return pd.DataFrame(rows, columns=["contrast", "run", "kind", "value"])


def null_summary(tables: dict[str, pd.DataFrame], prereg: pd.DataFrame | None, *, learned: bool) -> dict:
    """``metrics.json``'s ``task_attributable`` section: gated and ungated counts per family."""
    fam = {}
    for family, t in tables.items():
        c = nulls.counts(t, family=family)
        c["n_significant_ungated"] = c["n_significant"]
        c["n_significant"] = c["n_significant"] if learned else 0
        c["top_units"] = (
            t[t["significant"]].sort_values("pval").index.astype(str)[:10].tolist() if learned else []
        )
        fam[family] = c
    pre = {}
    if prereg is not None and len(prereg):
        for name, r in prereg.iterrows():
            pre[str(name)] = {k: r[k] for k in ("effect", "ci_low", "ci_high", "pval", "pval_adj", "n_real",
                                                "n_permuted")} | {"significant": bool(r["significant"]) and learned}  # fmt: skip
    return {NULL_KEY: {"gated_on_learning": True, "learned": learned, "unit": "training run", "families": fam,
                       "preregistered": pre}}  # fmt: skip


def without_failed(res: Results, deltas: pd.DataFrame) -> pd.DataFrame:
    """The run deltas without the real-label runs that did not learn (``runs/runs.json["failed"]``)."""
    path = res.runs / "runs.json"
    failed = set(res.read_json(path).get("failed", [])) if path.is_file() else set()
    return deltas[~deltas["run"].isin(failed)] if failed and len(deltas) else deltas


def ensemble_summary(res: Results) -> dict:
    """``metrics["ensemble"]``: every run against the true labels; the real-label runs' mean and interval."""
    from .ensemble import summarise

    if not res.has_table("run_scores"):
        return {}
    scores = res.read_table("run_scores")
    path = res.runs / "runs.json"
    failed = res.read_json(path).get("failed", []) if path.is_file() else []
    clf_path = res.model(OTHER) / "metrics.json"
    clf = res.read_json(clf_path) if clf_path.is_file() else {}
    lr = (clf.get("baselines") or {}).get("logreg") or {}
    logreg = {"accuracy": lr.get("accuracy"), "group_accuracy": (lr.get("groups") or {}).get("accuracy")}
    return summarise(scores, logreg={k: v for k, v in logreg.items() if v is not None}, failed=failed)


def load_run_stores(res: Results, runs: list[str]) -> dict[str, TokenStore]:
    """Token stores of the pretrained model and the runs on the held-out cells."""
    return {n: TokenStore.load(res.runs_attention, n) for n in (REF, *runs)}
