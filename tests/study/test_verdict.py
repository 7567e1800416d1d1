"""The verdict's wording follows the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneattn.study import task
from geneattn.study.verdict import verdict


def _metrics(*, learned: bool, delta_lo: float, n_sig: int = 3) -> dict:
    fam = {f: {"n_tests": 100, "n_significant": n_sig if learned else 0, "n_significant_ungated": n_sig,
               "n_runs_real": 2, "n_runs_permuted": 2} for f in ("genes", "heads")}  # fmt: skip
    return {
        "classification": {"accuracy": 0.6 if learned else 0.3, "accuracy_ci": [0.55, 0.65] if learned else [0.2, 0.4],
                           "classes": ["a", "b", "c", "d"], "n_test_units": 8,
                           "flags": {"learned": learned, "beats_logreg": False, "best_epoch_zero": False},
                           "baselines": {"majority": {"accuracy": 0.33}, "logreg": {"accuracy": 0.55}}},
        "task_attributable": {"permuted_label_runs": {"families": fam, "learned": learned, "preregistered": {
            "gene MDM2": {"effect": 1.0, "ci_low": 0.5, "ci_high": 1.5, "margin": 0.2, "mde": 0.5,
                          "decision": "discovery" if learned else "not claimed (the model did not learn)"},
            "cell-cycle genes vs decoys": {"effect": 0.05, "ci_low": -0.1, "ci_high": 0.2, "margin": 0.1, "mde": 0.3,
                                           "decision": "undetermined"}}}},
        "heads": {"largest_drops": [{"ablation": "L1H2", "d_accuracy": -0.1, "d_accuracy_low": -0.2, "d_accuracy_high": -0.01}],
                  "combos": [], "causal": ["L1H2"], "causal_rule": "Holm over single heads", "n_single": 24,
                  "n_cells": 400, "n_wells": 8},
        "incremental": {"methods": {"attention_fold": {"auroc": 0.6, "stratified_auroc": 0.55, "delta_auroc": delta_lo + 0.02,
                                                       "delta_lo": delta_lo, "delta_hi": delta_lo + 0.04, "lr_pvalue": 0.01 if delta_lo > 0 else 0.6},
                                    "detection": {"auroc": 0.51, "pvalue": 0.4}},
                        "run_level": {"effect": delta_lo + 0.1, "ci_low": delta_lo, "ci_high": delta_lo + 0.2,
                                      "n_real": 3, "n_permuted": 3}},
    }  # fmt: skip


def test_a_model_that_did_not_learn_is_called_so_and_nothing_is_attributed():
    v = verdict(_metrics(learned=False, delta_lo=-0.02))
    assert v["learned"]["text"].startswith("The classifier did not learn the task")
    assert "30.0%" in v["learned"]["text"] and "majority class 33.0%" in v["learned"]["text"]
    assert (
        v["task_change"]["n_discoveries"] == 0
        and "not attributable to the task" in v["task_change"]["text"].lower()
    )
    assert "Undetermined whether fine-tuning on the dose labels adds" in v["truth"]["text"]
    assert "includes 0" in v["truth"]["text"] and v["truth"]["call"] == "undetermined"
    assert "detection p 0.4" in v["truth"]["text"]
    assert v["headline"].startswith("model did not learn")


def test_a_model_that_learned_gets_its_discoveries_and_caveats():
    v = verdict(_metrics(learned=True, delta_lo=0.01))
    assert (
        v["learned"]["learned"] and "not shown to be better than logistic regression" in v["learned"]["text"]
    )
    assert (
        v["task_change"]["n_discoveries"] == 1
        and "beyond what fine-tuning on permuted labels" in v["task_change"]["text"]
        and "gene MDM2 1 [0.5, 1.5]: discovery" in v["task_change"]["text"]
        and "3 of 100 genes" in v["task_change"]["text"]
    )
    assert (
        v["truth"]["adds_beyond_covariates"]
        and "Fine-tuning on the dose labels adds to it" in v["truth"]["text"]
    )
    assert "L1H2" in v["heads"]["text"]


def test_gate_zeroes_family_counts_when_the_model_did_not_learn():
    rng = np.random.default_rng(0)
    rows = [{"family": "genes", "run": f"{k}{r}", "kind": k, "unit": f"g{u}", "value": rng.normal() + (3 if (k == "real" and u < 5) else 0)}
            for k in ("real", "permuted") for r in range(3) for u in range(60)]  # fmt: skip
    tables = task.family_tables(pd.DataFrame(rows))
    gated = task.null_summary(tables, None, learned=False)["permuted_label_runs"]["families"]["genes"]
    open_ = task.null_summary(tables, None, learned=True)["permuted_label_runs"]["families"]["genes"]
    assert open_["n_significant"] >= 3 and gated["n_significant"] == 0
    assert gated["n_significant_ungated"] == open_["n_significant"] and gated["n_tests"] == 60


def test_the_units_are_named_wells_or_cells():
    m = _metrics(learned=True, delta_lo=0.01)
    m["classification"]["split_grouped_by"] = "well"
    assert "8 test wells" in verdict(m)["learned"]["text"]
    m["classification"]["split_grouped_by"] = None
    m["heads"]["n_wells"] = m["heads"]["n_cells"]
    v = verdict(m)
    assert "8 test cells (the units: no wells)" in v["learned"]["text"]
    assert "each cell its own unit: no wells" in v["heads"]["text"]


def test_truth_line_without_runs_or_with_one_run_per_arm_is_undetermined():
    m = _metrics(learned=True, delta_lo=0.01)
    del m["incremental"]["run_level"]
    assert "no control runs" in verdict(m)["truth"]["text"]
    m["incremental"]["run_level"] = {
        "effect": 0.3,
        "ci_low": None,
        "ci_high": None,
        "n_real": 1,
        "n_permuted": 1,
    }
    v = verdict(m)
    assert v["truth"]["call"] == "undetermined" and "1 + 1" in v["truth"]["text"]
    assert "task-specific recovery undetermined" in v["headline"]


def test_truth_line_is_identical_across_20_stats_seeds():
    """The stats stage's seed moves the folds and the bootstraps; the truth line must not move with it."""
    from scipy import special

    from geneattn.stats import incremental as inc
    from geneattn.stats import incremental_sets as isets
    from geneattn.study.metrics import _incremental

    rng = np.random.default_rng(0)
    n = 600
    idx = pd.Index([f"g{i}" for i in range(n)])
    cov = pd.DataFrame({"log_mean": rng.normal(size=n), "logit_detection": rng.normal(size=n)}, index=idx)
    truth = pd.Series(rng.random(n) < special.expit(-1.5 + 0.5 * cov["log_mean"]), index=idx)
    scores = {"attention_fold": pd.Series(0.3 * truth + rng.normal(size=n), index=idx),
              "detection": special.expit(cov["logit_detection"])}  # fmt: skip
    runs = pd.DataFrame({"run": ["r1", "r2", "p1", "p2"], "kind": ["real", "real", "permuted", "permuted"],
                         "coef_score": [0.16, 0.11, -0.01, 0.02]})  # fmt: skip
    contrast = isets.run_contrast(runs, value="coef_score")
    texts = set()
    for seed in range(20):
        t = inc.incremental_table(scores, truth, cov, strata=inc.expression_strata(cov["log_mean"]), n_boot=50,
                                  seed=seed)  # fmt: skip
        m = _metrics(learned=True, delta_lo=0.0)
        m["incremental"] = _incremental(t, None, runs, contrast)
        texts.add(verdict(m)["truth"]["text"])
    assert len(texts) == 1
    assert "includes 0" in next(iter(texts))  # 2 + 2 runs: the interval is wide


def test_a_head_combination_is_not_called_one_head_and_only_adjusted_singles_are_named():
    m = _metrics(learned=True, delta_lo=0.01)
    m["heads"]["largest_drops"] = [{"ablation": "L0H1", "d_accuracy": -0.013, "d_accuracy_low": -0.065,
                                    "d_accuracy_high": 0.03}]  # fmt: skip
    m["heads"]["combos"] = [{"ablation": "L3H2+L4H2+L5H1", "n_heads": 3, "d_accuracy": -0.0174, "d_accuracy_low": -0.0371,
                             "d_accuracy_high": 0.00707, "n_random": 5, "random_mean_d_accuracy": -0.01,
                             "random_as_large": 2}]  # fmt: skip
    m["heads"]["causal"] = []
    t = verdict(m)["heads"]["text"]
    assert "single head changed test accuracy by at most -0.013" in t and "(L0H1;" in t
    assert "a combination, not one head: L3H2+L4H2+L5H1" in t and "5 random sets of 3 heads" in t
    assert "No single head lowers accuracy or log-likelihood after Holm adjustment" in t
    assert "8 test wells as units" in t


def test_heads_metrics_name_only_singles_that_pass_holm():
    from geneattn.study.metrics import _heads

    base = {"n_cells": 400, "n_wells": 8, "accuracy": 0.6, "d_loglik": 0.0, "d_loglik_low": 0.0, "d_loglik_high": 0.0,
            "d_accuracy_low": -0.1, "d_accuracy_high": 0.1, "p_loglik": 0.5, "p_loglik_holm": 1.0}  # fmt: skip
    rows = [
        {"ablation": "full", "kind": "full", "n_heads": 0, "d_accuracy": 0.0, "p_accuracy": np.nan, "p_accuracy_holm": np.nan},
        {"ablation": "L0H1", "kind": "single", "n_heads": 1, "d_accuracy": -0.05, "d_accuracy_high": -0.01,
         "p_accuracy": 0.01, "p_accuracy_holm": 0.24},  # interval below 0, fails Holm
        {"ablation": "L2H0", "kind": "single", "n_heads": 1, "d_accuracy": -0.2, "p_accuracy": 1e-4, "p_accuracy_holm": 0.0024},
        {"ablation": "L0H1+L2H0", "kind": "combo", "n_heads": 2, "d_accuracy": -0.3, "p_accuracy": 1e-5, "p_accuracy_holm": np.nan},
        {"ablation": "random1:L1H1+L1H2", "kind": "random", "n_heads": 2, "d_accuracy": -0.01},
        {"ablation": "random2:L3H1+L0H2", "kind": "random", "n_heads": 2, "d_accuracy": -0.4},
    ]  # fmt: skip
    h = _heads(pd.DataFrame([base | r for r in rows]))
    assert h["causal"] == ["L2H0"] and h["n_single"] == 2
    assert [d["ablation"] for d in h["largest_drops"]] == ["L2H0", "L0H1"]  # no combination among the singles
    c = h["combos"][0]
    assert (
        c["n_random"] == 2
        and c["random_as_large"] == 1
        and c["random_mean_d_accuracy"] == pytest.approx(-0.205)
    )
