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

__all__ = [
    "FAMILIES",
    "family_tables",
    "contrast_values",
    "null_summary",
    "NULL_KEY",
    "without_failed",
    "ensemble_summary",
]

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
        big = d["unit"].nunique() >= nulls.MIN_FACTOR_UNITS  # run normalisation and factors need enough units
        out[family] = nulls.task_attributable(d[["run", "kind", "unit", "value"]], normalize=big,
                                              n_factors=None if big else 0, variance_covariate=_log_cells(d))  # fmt: skip
    return out


def _log_cells(d: pd.DataFrame) -> pd.Series | None:
    """Per unit, log of the held-out cells it is seen in (genes; the variance trend), else None."""
    if "n_cells" not in d or not (d["n_cells"] > 0).all():
        return None
    return np.log(d.groupby("unit")["n_cells"].first().astype(float))


#: The primary analysis, fixed before looking at the real labels' results (7 December 2026): the
#: contrasts and their equivalence margins, in the units of each per-run value (log fold of attention
#: for genes, sets and the rank bin; log norm for the heads). A change inside the margin is too small to
#: matter: 0.1 is a 10% change of a programme's attention relative to its expression-matched decoys
#: (or of the ``<cls>`` position's attention), 0.2 for one gene alone (noisier), and 0.05 for the mean
#: head-output norm (5%, a change of every head at once).
SET_NAMES = ("p53 targets", "cell-cycle genes", "background responders")
MARGINS = {
    **{f"{n} vs decoys": 0.1 for n in SET_NAMES},
    "gene": 0.2,
    "position 0 (<cls>)": 0.1,
    "mean head-norm change": 0.05,
}


def contrast_values(
    deltas: pd.DataFrame, *, highlight: tuple[str, ...], var: pd.DataFrame | None
) -> pd.DataFrame:
    """The pre-registered contrasts, one value per run: long table ``contrast, run, kind, value, margin``.

    Each planted programme against its expression-matched decoys (simulated data:
    `geneattn.stats.contrasts.programme_sets`), each highlighted gene, the ``<cls>`` rank bin
    (position 0, where the classifier reads) and the mean head-norm change; each with its margin
    from `MARGINS`.
    """
    from ..stats.contrasts import programme_sets, set_contrast_values

    fam = {f: deltas[deltas["family"] == f].drop(columns="family") for f in FAMILIES}
    genes = fam["genes"]
    sets: dict[str, tuple[list, list]] = {}
    if var is not None and {"planted", "program", "category", "decoy_of"} <= set(var.columns):
        units = genes["unit"].astype(str).unique()
        sets = {f"{n} vs decoys": s for n, s in programme_sets(var, units).items() if s[0] and s[1]}
    sets |= {f"gene {h}": ([h], []) for h in highlight if h in set(genes["unit"].astype(str))}
    parts = [set_contrast_values(genes, sets)] if sets else []
    if len(fam["heads"]):
        heads = fam["heads"]
        parts.append(
            set_contrast_values(heads, {"mean head-norm change": (heads["unit"].unique().tolist(), [])})
        )
    if (fam["rank_bins"]["unit"] == "0-0").any():
        parts.append(set_contrast_values(fam["rank_bins"], {"position 0 (<cls>)": (["0-0"], [])}))
    if not parts:
        return pd.DataFrame(columns=["contrast", "run", "kind", "value", "margin"])
    out = pd.concat(parts, ignore_index=True)
    out["margin"] = [MARGINS.get(c, MARGINS["gene"]) for c in out["contrast"]]
    return out


#: runs per arm of the power table: what more (or fewer) runs would buy
POWER_KS = (2, 3, 4, 6, 8, 10, 15, 20)


def power_table(values: pd.DataFrame, *, alpha: float = 0.05, ks: tuple[int, ...] = POWER_KS) -> pd.DataFrame:
    """Power of each pre-registered contrast to detect an effect of its margin, by runs per arm.

    The between-run SD of each contrast is pooled over this study's runs (within kind); the test is
    the primary analysis' pooled two-sample t at the Holm level of its first step (``alpha / n``
    contrasts), so the power is a lower bound. This is the power calculation behind the default
    number of runs. One row per contrast: ``contrast, sd, margin``, then ``power_k<k>`` (power at
    the margin with ``k`` runs per arm) and ``mde_k<k>`` (the effect detected with 80% power).
    """
    from ..stats.power import mde, t_power

    rows, n = [], values["contrast"].nunique()
    for name, g in values.groupby("contrast", sort=False):
        real = g["kind"] == "real"
        a, b = (g.loc[m, "value"].dropna().to_numpy(dtype=float) for m in (real, ~real))
        if min(len(a), len(b)) < 2:
            continue
        sd = float(
            np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        )
        margin = float(g["margin"].iloc[0])
        row = {"contrast": name, "sd": sd, "margin": margin}
        for k in ks:
            se, df = sd * np.sqrt(2 / k), 2 * k - 2
            row[f"power_k{k}"] = t_power(margin, se, df, alpha=alpha / n) if se > 0 else 1.0
        for k in ks:
            row[f"mde_k{k}"] = mde(sd, sd, k, k, alpha=alpha, n_tests=n, df=2 * k - 2)
        rows.append(row)
    return pd.DataFrame(rows)


def null_summary(tables: dict[str, pd.DataFrame], prereg: pd.DataFrame | None, *, learned: bool) -> dict:
    """``metrics.json``'s ``task_attributable`` section: counts, detectable effects and decisions.

    Gated and ungated counts per family with their minimal detectable effects, and the pre-registered
    contrasts with their decisions.
    """
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
            pre[str(name)] = row | {"significant": r.get("decision") == "discovery" and learned}
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

    scores = res.read_table("run_scores") if res.has_table("run_scores") else pd.DataFrame()
    if scores.empty:
        return {}
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
