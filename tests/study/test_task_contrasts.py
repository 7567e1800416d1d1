"""The primary analysis: pre-registered set contrasts per run, their margins, the verdict's wording."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneattn.datasets import nutlin_sim
from geneattn.stats.contrasts import set_contrasts
from geneattn.study import task
from geneattn.study.verdict import verdict


@pytest.fixture(scope="module")
def var() -> pd.DataFrame:
    return nutlin_sim(seed=0, cells_per_dose=3).var


def _deltas(var: pd.DataFrame, *, n: int = 4, bump: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    genes = var.index.astype(str)
    cc = set(var.index[var["planted"].astype(bool) & (var["program"] == "cell_cycle")])
    rows = []
    for i in range(2 * n):
        run, kind = f"r{i}", "real" if i < n else "permuted"
        for g in genes:
            v = rng.normal(0, 0.05) + (bump if kind == "real" and g in cc else 0.0)
            rows.append(("genes", run, kind, g, v))
        rows += [("heads", run, kind, f"L0H{h}", rng.normal(0, 0.02)) for h in range(4)]
        rows += [("rank_bins", run, kind, b, rng.normal(0, 0.02)) for b in ("0-0", "1-4", "5-9")]
    return pd.DataFrame(rows, columns=["family", "run", "kind", "unit", "value"])


def test_contrast_values_match_a_naive_loop(var):
    d = _deltas(var)
    v = task.contrast_values(d, highlight=("MDM2",), var=var)
    assert set(v["contrast"]) == {"p53 targets vs decoys", "cell-cycle genes vs decoys",
                                  "background responders vs decoys", "gene MDM2", "position 0 (<cls>)",
                                  "mean head-norm change"}  # fmt: skip
    g = d[(d.family == "genes") & (d.run == "r2")].set_index("unit")["value"]
    members = var.index[var["planted"].astype(bool) & (var["program"] == "p53_pulse")]
    decoys = var.index[var["decoy_of"].astype(str).isin(members)]
    want = g[members].mean() - g[decoys].mean()
    got = v[(v.contrast == "p53 targets vs decoys") & (v.run == "r2")]["value"].item()
    assert got == pytest.approx(want)
    assert v[(v.contrast == "gene MDM2") & (v.run == "r2")]["value"].item() == pytest.approx(g["MDM2"])
    heads = d[(d.family == "heads") & (d.run == "r2")]["value"].mean()
    assert v[(v.contrast == "mean head-norm change") & (v.run == "r2")]["value"].item() == pytest.approx(
        heads
    )
    margins = v.groupby("contrast")["margin"].first()
    assert margins.to_dict() == {c: task.MARGINS.get(c, task.MARGINS["gene"]) for c in margins.index}


def test_decisions_follow_the_numbers(var):
    """A planted cell-cycle shift is a discovery; a precise null reads "no change within the margin"."""
    v = task.contrast_values(_deltas(var, n=4, bump=0.3), highlight=("MDM2",), var=var)
    t = set_contrasts(v.drop(columns="margin"), margins=dict(zip(v.contrast, v.margin, strict=False)))
    assert t.loc["cell-cycle genes vs decoys", "decision"] == "discovery"
    assert t.loc["background responders vs decoys", "decision"] == "no change within the margin"
    summary = task.null_summary({}, t, learned=True)[task.NULL_KEY]
    assert summary["preregistered"]["cell-cycle genes vs decoys"]["decision"] == "discovery"
    gated = task.null_summary({}, t, learned=False)[task.NULL_KEY]["preregistered"]
    assert gated["cell-cycle genes vs decoys"]["decision"].startswith("not claimed")


def _metrics(decisions: dict[str, str], null_group_acc=(0.52, 0.47)) -> dict:
    pre = {n: {"effect": 0.01, "ci_low": -0.1, "ci_high": 0.12, "margin": 0.1, "mde": 0.3, "decision": d}
           for n, d in decisions.items()}  # fmt: skip
    fam = {"genes": {"n_tests": 100, "n_significant": 0, "n_significant_ungated": 0, "mde": 0.8, "n_runs_real": 4,
                     "n_runs_permuted": 4}}  # fmt: skip
    runs = {
        f"permuted{i}": {"kind": "permuted", "group_accuracy": a} for i, a in enumerate(null_group_acc, 1)
    }
    return {"classification": {"flags": {"learned": True}},
            "task_attributable": {"permuted_label_runs": {"families": fam, "preregistered": pre}},
            "ensemble": {"runs": runs}}  # fmt: skip


def test_verdict_wording_follows_the_decisions():
    v = verdict(_metrics({"a": "undetermined", "b": "no change within the margin"}))["task_change"]
    assert v["decision"] == "undetermined" and v["text"].startswith("Undetermined")
    assert "detectable 0.3" in v["text"] and "detectable 0.8" in v["text"]
    assert "low vs high 47.0% to 52.0%" in v["text"]
    v = verdict(_metrics({"a": "no change within the margin"}))["task_change"]
    assert v["decision"] == "no change"
    v = verdict(_metrics({"a": "discovery", "b": "undetermined"}, null_group_acc=(0.95, 0.5)))["task_change"]
    assert v["decision"] == "discovery" and "carries label information" in v["text"]


def test_power_table_agrees_with_simulated_t_tests(var):
    """The analytic power at the margin matches a brute-force simulation of the pooled t at alpha / n."""
    from scipy import stats

    v = task.contrast_values(_deltas(var, n=4), highlight=("MDM2",), var=var)
    p = task.power_table(v).set_index("contrast")
    n = v["contrast"].nunique()
    row = p.loc["position 0 (<cls>)"]
    rng = np.random.default_rng(0)
    k, sd, margin = 4, row["sd"], row["margin"]
    a = rng.normal(margin, sd, size=(4000, k))
    b = rng.normal(0, sd, size=(4000, k))
    sim = (stats.ttest_ind(a, b, axis=1).pvalue < 0.05 / n).mean()
    assert row["power_k4"] == pytest.approx(sim, abs=0.03)
    assert (np.diff(p.filter(like="power_k").to_numpy(), axis=1) >= -1e-12).all()  # more runs, more power
    assert (np.diff(p.filter(like="mde_k").to_numpy(), axis=1) <= 1e-12).all()
