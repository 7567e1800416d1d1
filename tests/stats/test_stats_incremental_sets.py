"""Per-programme placements and the run-level contrast, against naive computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geneattn.stats import incremental_sets as isets


def _var(seed=0, n_sets=40, per=5):
    rng = np.random.default_rng(seed)
    rows = []
    for ms in range(n_sets):
        prog = "p53_pulse" if ms < 5 else "cell_cycle" if ms < 10 else "none"
        decoy = {"p53_pulse": "decoy_pulse", "cell_cycle": "decoy_cycle", "none": "none"}[prog]
        for j in range(per):
            rows.append({"gene": f"s{ms}_{j}", "matched_set": ms, "planted": j == 0, "category": "background" if ms >= 10 else "p53_target",
                         "program": prog if j == 0 else decoy})  # fmt: skip
    rows.append(
        {"gene": "ref", "matched_set": -1, "planted": False, "category": "reference", "program": "none"}
    )
    var = pd.DataFrame(rows).set_index("gene")
    return var, pd.Series(np.round(rng.normal(size=len(var)), 1), index=var.index)


def test_placements_vs_naive_loop():
    var, score = _var()
    got = isets.placements(score, var)
    for ms in range(40):
        members = [g for g in var.index if var.loc[g, "matched_set"] == ms]
        pos = [g for g in members if var.loc[g, "planted"]][0]
        wins = [
            1.0 if score[pos] > score[g] else 0.5 if score[pos] == score[g] else 0.0
            for g in members
            if g != pos
        ]
        assert got[ms] == pytest.approx(np.mean(wins))
    prog = isets.programme_of(var)
    assert (
        prog["s0_3"] == "p53_targets"
        and prog["s7_1"] == "cell_cycle"
        and prog["s20_0"] == "background_responders"
    )
    assert pd.isna(prog["ref"])


def test_programme_table_tests_only_independent_sets():
    var, score = _var(1, n_sets=80)
    cov = pd.DataFrame({"log_mean": np.random.default_rng(2).normal(size=len(var))}, index=var.index)
    t = isets.programme_table({"s": score}, var, cov).set_index("programme")
    assert t.loc["p53_targets", "n_sets"] == 5 and np.isnan(t.loc["p53_targets", "placement_pvalue"])
    bg = isets.placements(score, var).loc[10:]
    assert t.loc["background_responders", "placement"] == pytest.approx(bg.mean())
    want = stats.wilcoxon(bg - 0.5, zero_method="zsplit").pvalue
    assert t.loc["background_responders", "placement_pvalue"] == pytest.approx(want)


def test_run_contrast_is_welch():
    runs = pd.DataFrame(
        {"kind": ["real"] * 3 + ["permuted"] * 4, "coef_score": [0.2, 0.1, 0.15, 0.0, -0.02, 0.03, 0.01]}
    )
    got = isets.run_contrast(runs, value="coef_score")
    a, b = np.array([0.2, 0.1, 0.15]), np.array([0.0, -0.02, 0.03, 0.01])
    w = stats.ttest_ind(a, b, equal_var=False)
    assert got["pval"] == pytest.approx(w.pvalue) and got["effect"] == pytest.approx(a.mean() - b.mean())
    ci = w.confidence_interval()
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high))
    one = isets.run_contrast(runs.iloc[:4], value="coef_score")
    assert np.isnan(one["ci_low"]) and one["n_permuted"] == 1
