"""Flexible covariates and cluster units of the incremental-value tests: calibration, power, references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from geneattn.stats import _flexible as fx
from geneattn.stats import incremental as inc


def _null_genes(seed: int, n: int = 800):
    """Genes whose truth depends smoothly but nonlinearly on the covariates, and four negative controls.

    The controls carry no information beyond the covariates: detection and variance are transforms of
    covariates, mean rank a noisy monotone function of the mean, the last a covariate plus noise.
    """
    rng = np.random.default_rng(seed)
    mu = rng.normal(-1.0, 1.5, n)
    det = np.clip(1 - np.exp(-np.exp(mu) * rng.lognormal(0, 0.2, n)), 1e-4, 1 - 1e-4)
    var = np.exp(mu) + rng.lognormal(np.log(0.3), 0.3, n) * np.exp(2 * mu)
    idx = pd.Index([f"g{i}" for i in range(n)])
    cov = pd.DataFrame({"log_mean": mu, "logit_detection": special.logit(det), "log_variance": np.log(var),
                        "hvg_residual": rng.normal(size=n)}, index=idx)  # fmt: skip
    eta = -2.0 + 0.5 * mu - 0.15 * (mu + 1) ** 2 + 0.5 * np.tanh(special.logit(det) / 2)
    truth = pd.Series(rng.random(n) < special.expit(eta), index=idx)
    controls = {
        "detection": pd.Series(det, index=idx),
        "variance": pd.Series(var, index=idx),
        "mean_rank": pd.Series(-stats.rankdata(-mu + rng.normal(0, 0.3, n)), index=idx),
        "covariate_plus_noise": cov["log_mean"] + rng.normal(0, cov["log_mean"].std(), n),
    }
    return truth, cov, controls


def test_negative_controls_are_uniform_over_200_null_gene_sets():
    pvals = np.array(
        [
            [inc.nested_lrt(t, c, s)["lr_pvalue"] for s in ctrl.values()]
            for t, c, ctrl in (_null_genes(seed) for seed in range(200))
        ]
    )
    n = len(pvals)
    hi = stats.binom.ppf(0.995, n, 0.05) / n  # 99.5 % binomial bound of the rejection rate at 0.05
    for j in range(pvals.shape[1]):
        assert stats.kstest(pvals[:, j], "uniform").pvalue > 0.01
        assert (pvals[:, j] < 0.05).mean() <= hi
    # the linear-logit design (the old test) is fooled by the transforms: it can fail
    rng = np.random.default_rng(0)
    c = pd.DataFrame({"log_mean": rng.normal(size=3000)})
    t = pd.Series(rng.random(3000) < special.expit(-2 + 0.8 * c["log_mean"] ** 2))
    square = c["log_mean"] ** 2  # a transform of the covariate
    assert inc.nested_lrt(t, c, square, spline_df=1)["lr_pvalue"] < 1e-6
    assert inc.nested_lrt(t, c, square)["lr_pvalue"] > 0.01


def test_planted_signal_is_found_power():
    found = []
    for seed in range(20):
        t, c, _ = _null_genes(seed)
        rng = np.random.default_rng(1000 + seed)
        signal = pd.Series(0.6 * t.to_numpy() + rng.normal(size=len(t)), index=t.index)
        found.append(inc.nested_lrt(t, c, signal)["lr_pvalue"] < 0.05)
    assert np.mean(found) >= 0.8


def _naive_rcs(x, knots):
    k, out = len(knots), [x]
    for j in range(k - 2):
        col = np.zeros_like(x)
        for i, v in enumerate(x):
            a = max(v - knots[j], 0) ** 3
            b = max(v - knots[k - 2], 0) ** 3 * (knots[k - 1] - knots[j]) / (knots[k - 1] - knots[k - 2])
            c = max(v - knots[k - 1], 0) ** 3 * (knots[k - 2] - knots[j]) / (knots[k - 1] - knots[k - 2])
            col[i] = (a - b + c) / (knots[-1] - knots[0]) ** 2
        out.append(col)
    return np.column_stack(out)


def test_spline_basis_vs_naive_and_linear_tails():
    x = np.random.default_rng(0).normal(size=300)
    knots = np.quantile(x, np.linspace(0, 1, 6))
    np.testing.assert_allclose(fx.natural_spline_basis(x, 5), _naive_rcs(x, knots), atol=1e-12)
    assert fx.natural_spline_basis(np.array([0.0, 1.0, 0.0, 1.0]), 5).shape == (4, 1)


def test_spline_lrt_matches_sklearn_unpenalised_fit():
    from sklearn.linear_model import LogisticRegression

    t, c, ctrl = _null_genes(3)
    got = inc.nested_lrt(t, c, ctrl["covariate_plus_noise"])
    x0 = fx.flexible_design(c)[:, 1:]
    y = t.to_numpy()

    def ll(x):
        m = LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=500, tol=1e-12).fit(x, y)
        p = m.predict_proba(x)[:, 1]
        return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))

    s = inc._normal_scores(ctrl["covariate_plus_noise"].to_frame()).to_numpy()
    assert got["ll_null"] == pytest.approx(ll(x0), abs=1e-3)
    assert got["ll_full"] == pytest.approx(ll(np.column_stack([x0, s])), abs=1e-3)


def _blocked(seed: int, n_blocks: int = 6, per_block: int = 60, n_free: int = 600):
    """Genes in a few large programme blocks whose members share a block-level score shift."""
    rng = np.random.default_rng(seed)
    block = np.r_[np.repeat(np.arange(n_blocks), per_block), -np.ones(n_free, int)]
    n = len(block)
    idx = pd.Index([f"g{i}" for i in range(n)])
    cov = pd.DataFrame({"log_mean": rng.normal(size=n)}, index=idx)
    truth = pd.Series((block >= 0) & (block % 2 == 0) | (block < 0) & (rng.random(n) < 0.3), index=idx)
    shift = rng.normal(0, 1.0, n_blocks)
    score = pd.Series(rng.normal(size=n) + np.where(block >= 0, shift[np.maximum(block, 0)], 0), index=idx)
    var = pd.DataFrame({"program": np.where(block >= 0, [fx.PROGRAMME_BLOCKS[b % 4] + f"{b}" for b in np.maximum(block, 0)], "none"),
                        "matched_set": np.where(block >= 0, -1, np.arange(n))}, index=idx)  # fmt: skip
    return truth, cov, score, var


def test_cluster_bootstrap_widens_the_interval_and_cluster_labels():
    var = pd.DataFrame({"program": ["p53_pulse", "decoy_pulse", "none", "none", "none"],
                        "matched_set": [0, 0, 3, 3, -1]}, index=list("abcde"))  # fmt: skip
    cl = fx.gene_clusters(var, pd.Index(list("abcdef")))
    assert cl.tolist() == ["p53_pulse", "decoy_pulse", "set:3", "set:3", "e", "f"]
    t, c, s, _ = _blocked(0)
    clusters = pd.Series(
        np.where(np.arange(len(t)) < 360, (np.arange(len(t)) // 60).astype(str), t.index), index=t.index
    )
    genes = inc.delta_auroc(t, c, s, n_boot=300, seed=0)
    blocks = inc.delta_auroc(t, c, s, clusters=clusters, n_boot=300, seed=0)
    assert blocks["delta_auroc"] == genes["delta_auroc"]  # the estimate is the same; only the units change
    assert blocks["delta_hi"] - blocks["delta_lo"] > 1.5 * (genes["delta_hi"] - genes["delta_lo"])


def test_cluster_wald_vs_naive_sandwich():
    rng = np.random.default_rng(1)
    n = 200
    x = np.column_stack([np.ones(n), rng.normal(size=(n, 2))])
    y = (rng.random(n) < 0.3).astype(float)
    beta = inc._logit_fit(x, y)[0]
    cl = rng.integers(0, 20, n)
    p = special.expit(x @ beta)
    h = sum(p[i] * (1 - p[i]) * np.outer(x[i], x[i]) for i in range(n))
    meat = np.zeros((3, 3))
    for g in range(20):
        u = sum(x[i] * (y[i] - p[i]) for i in range(n) if cl[i] == g)
        meat += np.outer(u, u)
    v = 20 / 19 * np.linalg.inv(h) @ meat @ np.linalg.inv(h)
    z, pval, g = fx.cluster_wald(x, y, beta, 2, cl)
    assert g == 20 and z == pytest.approx(beta[2] / np.sqrt(v[2, 2]))
    assert pval == pytest.approx(2 * stats.t.sf(abs(z), 19))


def _clustered_null(seed: int, n_sets: int = 120, per: int = 7):
    """Truth and score both clustered by set (independent set effects): no association, few units."""
    rng = np.random.default_rng(seed)
    sets = np.repeat(np.arange(n_sets), per)
    u, v = rng.normal(size=n_sets), rng.normal(size=n_sets)
    idx = pd.Index([f"g{i}" for i in range(len(sets))])
    cov = pd.DataFrame({"log_mean": rng.normal(size=len(sets))}, index=idx)
    truth = pd.Series(rng.random(len(sets)) < special.expit(-1.5 + 1.5 * u[sets]), index=idx)
    score = pd.Series(2.0 * v[sets] + rng.normal(size=len(sets)), index=idx)
    return truth, cov, score, pd.Series(sets.astype(str), index=idx)


def test_cluster_wald_holds_its_level_where_the_gene_level_lr_does_not():
    lr, wald = [], []
    for seed in range(200):
        t, c, s, cl = _clustered_null(seed)
        r = inc.nested_lrt(t, c, s, clusters=cl)
        lr.append(r["lr_pvalue"] < 0.05)
        wald.append(r["wald_pvalue"] < 0.05)
    hi = stats.binom.ppf(0.995, 200, 0.05) / 200
    assert np.mean(wald) <= hi  # the cluster-robust test keeps its level
    assert np.mean(lr) > hi  # genes as units: anti-conservative (the test can fail)
