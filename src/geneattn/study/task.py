"""Is the attention change about the task? The run-level null of the stats stage.

Families (one test family per claim, each unit counted once): genes, heads, rank bins — the change
after real-label fine-tunes against the change after fine-tunes on labels permuted between wells
(`geneattn.stats.nulls.task_attributable`, BH within each family). Pre-registered contrasts
(the primary analysis, `MARGINS`): each planted programme against its expression-matched decoys,
each highlighted gene, the ``<cls>`` rank bin and the mean head-norm change; each with a run-level
interval, a test (Holm across the contrasts) and an equivalence margin stated in advance, so that
it reads "discovery", "no change within the margin" or "undetermined" (`geneattn.stats.contrasts`).

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


#: The primary analysis, fixed before looking at the real labels' results (7 December 2026): the
#: contrasts and their equivalence margins, in the units of each per-run value (log fold of attention
#: for genes, sets and the rank bin; log norm for the heads). A change inside the margin is too small to
#: matter: 0.1 is a 10% change of a programme's attention relative to its expression-matched decoys
#: (or of the ``<cls>`` position's attention), 0.2 for one gene alone (noisier), and 0.05 for the mean
#: head-output norm (5%, a change of every head at once).
SET_PROGRAMMES = {
    "p53 targets vs decoys": "p53_pulse",
    "cell-cycle genes vs decoys": "cell_cycle",
    "background responders vs decoys": "none",
}
MARGINS = {
    **dict.fromkeys(SET_PROGRAMMES, 0.1),
    "gene": 0.2,
    "<cls> rank bin": 0.1,
    "mean head-norm change": 0.05,
}


def gene_sets(var: pd.DataFrame | None) -> dict[str, dict[str, list[str]]]:
    """The planted programmes of simulated data: ``{contrast: {planted gene: [its decoys]}}``.

    Needs ``var["planted"]``, ``var["program"]`` and ``var["decoy_of"]`` (the simulator's matched sets);
    empty for other data.
    """
    if var is None or not {"planted", "program", "decoy_of"} <= set(var.columns):
        return {}
    decoys = var["decoy_of"].astype(str)
    by_target = decoys[decoys.str.len() > 0].groupby(decoys).apply(lambda s: s.index.astype(str).tolist())
    out = {}
    for name, program in SET_PROGRAMMES.items():
        members = var.index[var["planted"].astype(bool) & (var["program"].astype(str) == program)].astype(str)
        sets = {g: by_target.get(g, []) for g in members}
        out[name] = {g: d for g, d in sets.items() if d}
    return {k: v for k, v in out.items() if v}


def set_contrast(by_gene: pd.Series, matched: dict[str, list[str]]) -> float:
    """Mean over planted genes of (its value - the mean of its decoys' values), genes seen with a decoy."""
    diffs = []
    for gene, decoys in matched.items():
        d = by_gene.reindex(decoys).dropna()
        if gene in by_gene.index and np.isfinite(by_gene[gene]) and len(d):
            diffs.append(by_gene[gene] - d.mean())
    return float(np.mean(diffs)) if diffs else float("nan")


def contrast_values(deltas: pd.DataFrame, *, highlight: tuple[str, ...], var: pd.DataFrame | None) -> pd.DataFrame:
    """The pre-registered contrasts, one value per run: long table ``contrast, run, kind, value, margin``.

    Each programme of planted genes against its expression-matched decoys (`gene_sets`), each
    highlighted gene, the ``<cls>`` rank bin (position 0, where the classifier reads) and the mean
    head-norm change; each with its margin from `MARGINS`.
    """
    rows = []
    sets = gene_sets(var)
    by_family = {f: deltas[deltas["family"] == f] for f in FAMILIES}
    for (run, kind), g in by_family["genes"].groupby(["run", "kind"]):
        by_gene = g.set_index("unit")["value"]
        for name, matched in sets.items():
            rows.append((name, run, kind, set_contrast(by_gene, matched), MARGINS[name]))
        for h in highlight:
            rows.append((f"gene {h}", run, kind, by_gene.get(h, np.nan), MARGINS["gene"]))
        heads = by_family["heads"]
        rows.append(("mean head-norm change", run, kind, heads.loc[heads["run"] == run, "value"].mean(),
                     MARGINS["mean head-norm change"]))  # fmt: skip
        bins = by_family["rank_bins"]
        first = bins[(bins["run"] == run) & (bins["unit"] == "0-0")]["value"]
        if len(first):
            rows.append(("<cls> rank bin", run, kind, float(first.iloc[0]), MARGINS["<cls> rank bin"]))
    return pd.DataFrame(rows, columns=["contrast", "run", "kind", "value", "margin"])


def null_summary(tables: dict[str, pd.DataFrame], prereg: pd.DataFrame | None, *, learned: bool) -> dict:
    """``metrics.json``'s ``task_attributable`` section: gated and ungated counts per family with their
    minimal detectable effects, and the pre-registered contrasts with their decisions."""
    from ..stats.power import family_mde

    fam = {}
    for family, t in tables.items():
        c = nulls.counts(t, family=family)
        c["n_significant_ungated"] = c["n_significant"]
        c["n_significant"] = c["n_significant"] if learned else 0
        c["mde"] = family_mde(t)
        c["top_units"] = (
            t[t["significant"]].sort_values("pval").index.astype(str)[:10].tolist() if learned else []
        )
        fam[family] = c
    pre = {}
    keys = ("effect", "ci_low", "ci_high", "se", "df", "pval", "pval_adj", "n_real", "n_permuted", "mean_real",
            "mean_permuted", "margin", "mde", "decision")  # fmt: skip
    if prereg is not None and len(prereg):
        for name, r in prereg.iterrows():
            row = {k: r[k] for k in keys if k in r}
            if not learned and row.get("decision") == "discovery":  # gated: no task claim without learning
                row["decision"] = "not claimed (the model did not learn)"
            pre[str(name)] = row | {"significant": bool(r["significant"]) and learned}
    return {NULL_KEY: {"gated_on_learning": True, "learned": learned, "unit": "training run", "families": fam,
                       "preregistered": pre, "margins": dict(MARGINS)}}  # fmt: skip


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
