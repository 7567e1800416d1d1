"""Incremental value of a gene score over expression covariates: references, nulls and planted effects."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from geneattn.errors import InputError
from geneattn.stats import incremental as inc
from geneattn.stats.agreement import auroc


def _genes(n=1200, seed=0):
    """Gene table whose truth depends on expression level (as in a naive simulator)."""
    rng = np.random.default_rng(seed)
    log_mean = rng.normal(-2.0, 1.5, n)
    det = special.expit(1.2 * log_mean + 1.0 + rng.normal(0, 0.3, n))
    truth = rng.random(n) < special.expit(-2.5 + 0.8 * log_mean)
    idx = pd.Index([f"g{i}" for i in range(n)], name="gene")
    cov = pd.DataFrame(
        {
            "log_mean": log_mean,
            "logit_detection": special.logit(det),
            "log_variance": 0.9 * log_mean + rng.normal(0, 0.5, n),
        },
        index=idx,
    )
    return pd.Series(truth, index=idx), cov, rng


def _naive_stratified(score, truth, strata, weight):
    per_pos, num, pairs = [], 0.0, 0
    for i in range(len(score)):
        if not truth[i]:
            continue
        wins, n_neg = 0.0, 0
        for j in range(len(score)):
            if truth[j] or strata[j] != strata[i]:
                continue
            n_neg += 1
            wins += 1.0 if score[i] > score[j] else 0.5 if score[i] == score[j] else 0.0
        if n_neg:
            per_pos.append(wins / n_neg)
            num += wins
            pairs += n_neg
    return np.mean(per_pos) if weight == "positives" else num / pairs


def test_stratified_auroc_vs_naive_double_loop():
    rng = np.random.default_rng(1)
    n = 150
    score = np.round(rng.normal(size=n), 1)  # ties
    truth = rng.random(n) < 0.3
    strata = rng.integers(0, 5, n)
    strata[truth & (strata == 4)] = 5  # a stratum with planted genes only: left out
    for weight in ("positives", "pairs"):
        got = inc.stratified_auroc(score, truth, strata, weight=weight)
        assert got == pytest.approx(_naive_stratified(score, truth, strata, weight), rel=1e-12)
    # one stratum: the plain AUROC; Series are aligned on truth's index; NaN scores dropped
    assert inc.stratified_auroc(score, truth, np.zeros(n)) == pytest.approx(auroc(score, truth))
    idx = [f"g{i}" for i in range(n)]
    s = pd.Series(score, index=idx)[::-1]
    s.iloc[0] = np.nan
    keep = np.ones(n, bool)
    keep[-1] = False
    want = inc.stratified_auroc(score[keep], truth[keep], strata[keep])
    assert inc.stratified_auroc(
        s, pd.Series(truth, index=idx), pd.Series(strata, index=idx)
    ) == pytest.approx(want)
    with pytest.raises(InputError, match="weight"):
        inc.stratified_auroc(score, truth, strata, weight="genes")


def test_nested_lrt_linear_design_matches_statsmodels():
    sm = pytest.importorskip("statsmodels.api")

    truth, cov, rng = _genes(seed=2)
    score = pd.Series(truth.to_numpy() * 0.4 + rng.normal(size=len(truth)), index=truth.index)
    got = inc.nested_lrt(truth, cov, score, spline_df=1)
    z = (cov - cov.mean()) / cov.std(ddof=0)
    y = truth.to_numpy(float)
    m0 = sm.Logit(y, sm.add_constant(z.to_numpy())).fit(disp=0)
    zs = inc._normal_scores(score.to_frame()).iloc[:, 0]
    zs = (zs - zs.mean()) / zs.std(ddof=0)
    m1 = sm.Logit(y, sm.add_constant(np.column_stack([z.to_numpy(), zs.to_numpy()]))).fit(disp=0)
    assert got["ll_null"] == pytest.approx(m0.llf, rel=1e-9)
    assert got["ll_full"] == pytest.approx(m1.llf, rel=1e-9)
    lr = 2 * (m1.llf - m0.llf)
    assert got["lr_chi2"] == pytest.approx(lr, rel=1e-6)
    assert got["lr_pvalue"] == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-5)
    assert got["coef_score"] == pytest.approx(m1.params[-1], rel=1e-6)
    assert got["lr_df"] == 1 and got["converged"] and not got["separation"]
    assert got["n_genes"] == len(truth) and got["n_planted"] == truth.sum()


def test_nested_lrt_under_separation_and_collinearity():
    truth, cov, rng = _genes(seed=3)
    # complete separation by the score: the full model's log-likelihood goes to 0
    perfect = inc.nested_lrt(truth, cov, truth.astype(float) + 0.0 * rng.normal(size=len(truth)))
    assert perfect["separation"] and perfect["lr_pvalue"] < 1e-20
    assert perfect["lr_chi2"] == pytest.approx(-2 * perfect["ll_null"], rel=1e-3)
    # quasi-separation by a covariate: every gene with log_mean > 0 planted
    quasi = truth | (cov["log_mean"] > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence or overflow warnings leak out
        q = inc.nested_lrt(quasi, cov, pd.Series(rng.normal(size=len(truth)), index=truth.index))
    assert q["separation"] and np.isfinite(q["lr_chi2"]) and 0 <= q["lr_pvalue"] <= 1
    # a score equal to a covariate adds nothing (collinear design: minimum-norm Newton steps)
    z = inc._normal_scores(cov[["logit_detection"]]).rename(columns={"logit_detection": "detection"})
    cov_z = cov.assign(logit_detection=z["detection"])
    same = inc.nested_lrt(truth, cov_z, z["detection"], spline_df=1)
    assert same["lr_chi2"] < 1e-6 and same["lr_pvalue"] > 0.99


def test_nulls_random_score_adds_nothing_and_is_calibrated():
    pvals, strat, gains = [], [], []
    truth, cov, _ = _genes(seed=4)
    strata = inc.expression_strata(cov["log_mean"], 10)
    for seed in range(40):
        score = pd.Series(np.random.default_rng(100 + seed).normal(size=len(truth)), index=truth.index)
        pvals.append(inc.nested_lrt(truth, cov, score)["lr_pvalue"])
        strat.append(inc.stratified_auroc(score, truth, strata))
        gains.append(inc.delta_auroc(truth, cov, score, n_boot=100, seed=seed)["delta_lo"] > 0)
    assert stats.kstest(pvals, "uniform").pvalue > 0.01
    assert np.mean(np.array(pvals) < 0.05) <= 0.15
    assert abs(np.mean(strat) - 0.5) < 0.02
    assert np.mean(gains) <= 0.1  # a "gain" whose CI excludes 0: rare under the null


def test_expression_level_score_vs_planted_signal():
    """A score that is expression level wins raw AUROC and nothing else; a planted signal wins everything."""
    truth, cov, rng = _genes(seed=5)
    strata = inc.expression_strata(cov["log_mean"], 10)
    level = cov["log_mean"] + rng.normal(0, 0.3, len(truth))
    signal = pd.Series(truth.to_numpy() * 1.0 + rng.normal(size=len(truth)), index=truth.index)
    t = inc.incremental_table(
        {"level": level, "signal": signal, "de": signal}, truth, cov, strata=strata, n_boot=300, seed=0
    ).set_index("method")
    assert list(t.reset_index().columns) == inc.INCREMENTAL_COLUMNS
    assert t.loc["level", "auroc"] > 0.75 and abs(t.loc["level", "stratified_auroc"] - 0.5) < 0.08
    assert t.loc["level", "lr_pvalue"] > 0.01 and t.loc["level", "delta_hi"] < 0.01
    assert t.loc["signal", "stratified_auroc"] > 0.7 and t.loc["signal", "lr_pvalue"] < 1e-6
    assert t.loc["signal", "delta_lo"] > 0
    assert t.loc["de", "uses_labels"] is True and pd.isna(t.loc["level", "uses_labels"])
    # the table repeats the single-function results
    d = inc.delta_auroc(truth, cov, signal, n_boot=300, seed=0)
    assert (
        t.loc["signal", "delta_auroc"] == pytest.approx(d["delta_auroc"])
        and t.loc["signal", "delta_lo"] == d["delta_lo"]
    )


def test_delta_auroc_bootstrap_is_exact_and_seeded():
    rng = np.random.default_rng(6)
    score, y = np.round(rng.normal(size=300), 1), rng.random(300) < 0.2
    ones = np.ones((1, 300))
    assert inc._boot_auroc(score, y, ones)[0] == pytest.approx(auroc(score, y))
    w = rng.multinomial(300, np.full(300, 1 / 300), size=5)
    for b in range(5):
        rows = np.repeat(np.arange(300), w[b])
        assert inc._boot_auroc(score, y, w[b : b + 1])[0] == pytest.approx(auroc(score[rows], y[rows]))
    truth, cov, rng = _genes(seed=7)
    score = pd.Series(rng.normal(size=len(truth)), index=truth.index)
    a = inc.delta_auroc(truth, cov, score, n_boot=200, seed=1)
    assert a == inc.delta_auroc(truth, cov, score, n_boot=200, seed=1)
    assert a["delta_lo"] <= a["delta_auroc"] <= a["delta_hi"] and a["n_genes"] == len(truth)
    with pytest.raises(InputError, match="n_folds"):
        inc.delta_auroc(truth, cov, score, n_folds=1)


def test_methods_are_judged_over_the_genes_they_score():
    truth, cov, rng = _genes(seed=8)
    score = pd.Series(rng.normal(size=len(truth)), index=truth.index)
    score.iloc[::3] = np.nan
    t = inc.incremental_table(
        {"partial": score}, truth, cov, strata=inc.expression_strata(cov["log_mean"]), n_boot=50
    )
    assert t.loc[0, "n_genes"] == score.notna().sum()
    assert t.loc[0, "auroc"] == pytest.approx(
        auroc(score.dropna().to_numpy(), truth[score.notna()].to_numpy())
    )


def test_recovery_by_effect_size():
    truth, cov, rng = _genes(seed=9)
    effect = pd.Series(np.where(truth, rng.uniform(0.2, 4, len(truth)), 0.0), index=truth.index)
    score = effect + rng.normal(0, 1.0, len(truth))  # bigger effects are easier to find
    r = inc.recovery_by_effect_size(
        {"s": score}, truth, effect, bins=[0, 1, 2, 4], strata=inc.expression_strata(cov["log_mean"])
    )
    assert list(r["bin"]) == [0, 1, 2] and r["n_planted"].sum() == truth.sum()
    assert r["auroc"].is_monotonic_increasing and r["recall"].is_monotonic_increasing
    # bin 1 by hand: its planted genes against every unplanted gene; recall among the top n_planted
    pos = truth & (effect >= 1) & (effect < 2)
    keep = pos | ~truth
    assert r.loc[1, "auroc"] == pytest.approx(auroc(score[keep].to_numpy(), pos[keep].to_numpy()))
    top = set(score.nlargest(int(truth.sum())).index)
    assert r.loc[1, "recall"] == pytest.approx(np.mean([g in top for g in pos.index[pos]]))
    q = inc.recovery_by_effect_size({"s": score}, truth, effect, bins=4)
    assert q["n_planted"].max() - q["n_planted"].min() <= 1 and q["stratified_auroc"].isna().all()


def test_expression_strata_equal_counts():
    v = pd.Series(np.random.default_rng(0).normal(size=1000))
    s = inc.expression_strata(v, 10)
    assert set(s.value_counts()) == {100} and (v.groupby(s).max().diff().dropna() > 0).all()
    with pytest.raises(InputError, match="n_strata"):
        inc.expression_strata(v, 0)
