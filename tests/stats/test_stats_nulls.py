"""Run-level null: moderated t vs naive limma formulas and statsmodels; calibration over many simulated studies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttest_ind

from geneattn.errors import InputError
from geneattn.stats import nulls


def _study(rng, n_real, n_perm, *, n_units=300, run_scale=0.3, run_shift=0.3, other=0.0, sigma=0.2, d0=6,
           planted=0, delta=0.0, var_scale=None):  # fmt: skip
    """Exchangeable runs: shared unit effects (the common drift mu_g), each run drifting by its own scale
    and shift (correlation across units), optionally a second run factor of another pattern, and
    unit-specific noise with inverse-chi-square variances (times ``var_scale`` per unit: a variance
    trend). ``planted`` units gain ``delta`` in real runs."""
    mu = rng.normal(0, 1, n_units)
    s2 = sigma**2 * d0 / rng.chisquare(d0, n_units) * (1.0 if var_scale is None else var_scale)
    n = n_real + n_perm
    b, c, w = rng.normal(0, run_scale, n), rng.normal(0, run_shift, n), rng.normal(0, other, n)
    q = rng.normal(0, 1, n_units)
    y = (1 + b[:, None]) * mu + c[:, None] + w[:, None] * q + rng.normal(size=(n, n_units)) * np.sqrt(s2)
    y[:n_real, :planted] += delta
    kind = np.array(["real"] * n_real + ["permuted"] * n_perm)
    return pd.DataFrame({"run": np.repeat([f"r{i}" for i in range(n)], n_units), "kind": np.repeat(kind, n_units),
                         "unit": np.tile([f"g{j:03d}" for j in range(n_units)], n), "value": y.ravel()})  # fmt: skip


def _naive_fit_f_dist(s2, df):
    """limma fitFDist written out, with trigamma inverted by root finding (not Newton)."""
    z = np.log(np.maximum(s2, 1e-5 * np.median(s2)))
    e = z - special.digamma(df / 2) + np.log(df / 2)
    evar = np.var(e, ddof=1) - np.mean(special.polygamma(1, df / 2))
    if evar <= 0:
        return np.exp(e.mean()), np.inf
    y = optimize.brentq(lambda v: special.polygamma(1, v) - evar, 1e-8, 1e8)
    d0 = 2 * y
    return np.exp(e.mean() + special.digamma(d0 / 2) - np.log(d0 / 2)), d0


def test_squeeze_var_vs_naive_limma_and_recovers_prior():
    rng = np.random.default_rng(0)
    d0_true, s0_true, df = 8.0, 0.3, np.full(4000, 3.0)
    sigma2 = s0_true * d0_true / rng.chisquare(d0_true, len(df))
    s2 = sigma2 * rng.chisquare(df) / df
    post, d0, s0 = nulls.squeeze_var(s2, df)
    s0_ref, d0_ref = _naive_fit_f_dist(s2, df)
    assert d0 == pytest.approx(d0_ref, rel=1e-6) and s0 == pytest.approx(s0_ref, rel=1e-6)
    np.testing.assert_allclose(post, (d0_ref * s0_ref + df * s2) / (d0_ref + df), rtol=1e-6)
    assert d0 == pytest.approx(d0_true, rel=0.2) and s0 == pytest.approx(s0_true, rel=0.1)
    # units without residual df get the prior; variances no more spread than chi-square: d0 = inf
    post2, _, _ = nulls.squeeze_var(np.r_[s2[:50], np.nan], np.r_[df[:50], 0.0])
    assert post2[-1] == pytest.approx(nulls.squeeze_var(s2[:50], df[:50])[2])
    flat, d_inf, s_inf = nulls.squeeze_var(0.5 * rng.chisquare(3, 500) / 3, np.full(500, 3.0))
    assert (np.isinf(d_inf) and np.allclose(flat, s_inf)) or d_inf > 50


def test_prior_df_lower_bound_is_a_lower_bound():
    rng = np.random.default_rng(1)
    below = []
    for _ in range(200):
        df = np.full(300, 2.0)
        s2 = 0.04 * 6 / rng.chisquare(6, 300) * rng.chisquare(df) / df
        d_lo = nulls.squeeze_var(s2, df, level=0.95)[1]
        below.append(d_lo <= 6.0)
        assert d_lo <= nulls.squeeze_var(s2, df)[1]
    assert np.mean(below) >= 0.88


def test_unmoderated_limit_is_statsmodels_pooled_t_with_missing_runs():
    rng = np.random.default_rng(2)
    d = _study(rng, 3, 3, n_units=40)
    d = d.drop(d.index[(d.unit == "g001") & (d.run == "r0")]).drop(
        d.index[(d.unit == "g002") & (d.run == "r5")]
    )
    res = nulls.task_attributable(d, normalize=False, moderate=False, n_factors=0)
    for g in ("g000", "g001", "g002", "g017"):
        sub = d[d.unit == g]
        a, b = sub.loc[sub.kind == "real", "value"], sub.loc[sub.kind == "permuted", "value"]
        t, p, dof = ttest_ind(a, b, usevar="pooled")
        r = res.loc[g]
        assert r.t == pytest.approx(t) and r.pval == pytest.approx(p) and r.df == dof
        assert r.effect == pytest.approx(a.mean() - b.mean()) == r.difference
        assert (r.n_real, r.n_permuted) == (len(a), len(b))
    np.testing.assert_allclose(res.pval_adj, multipletests(res.pval, method="fdr_bh")[1])


def test_moderated_t_vs_naive_loop():
    rng = np.random.default_rng(3)
    d = _study(rng, 2, 3, n_units=200, run_scale=0.0, run_shift=0.0)
    res = nulls.task_attributable(d, normalize=False, n_factors=0, prior_df_level=None)
    rows = []
    for g, sub in d.groupby("unit"):
        a = sub.loc[sub.kind == "real", "value"].to_numpy()
        b = sub.loc[sub.kind == "permuted", "value"].to_numpy()
        ss = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
        rows.append(
            (g, a.mean() - b.mean(), ss / (len(a) + len(b) - 2), len(a) + len(b) - 2, 1 / len(a) + 1 / len(b))
        )
    g, diff, s2, df, v = map(np.array, zip(*rows, strict=True))
    s0, d0 = _naive_fit_f_dist(s2, df)
    assert np.isfinite(d0)
    post = (d0 * s0 + df * s2) / (d0 + df)
    t = diff / np.sqrt(post * v)
    p = 2 * stats.t.sf(np.abs(t), np.minimum(d0 + df, df.sum()))
    np.testing.assert_allclose(res.loc[g, "t"], t, rtol=1e-6)
    np.testing.assert_allclose(res.loc[g, "pval"], p, rtol=1e-6)
    assert res.attrs["prior_df"] == pytest.approx(d0, rel=1e-6)
    assert res.attrs["null"] == nulls.NULL_NAME and res.attrs["unit_of_replication"] == "training run"


def _null_rates(n_real, n_perm, n_studies, seed, study=None, **kw):
    rng = np.random.default_rng(seed)
    rej, any_bh, p0 = [], [], []
    for _ in range(n_studies):
        r = nulls.task_attributable(_study(rng, n_real, n_perm, **(study or {})), **kw)
        rej.append(np.mean(r.pval.iloc[:20] < 0.05))
        any_bh.append(r.significant.any())
        p0.append(r.pval.iloc[0])
    return np.mean(rej), np.mean(any_bh), np.array(p0)


def test_calibrated_over_independent_null_studies_2_plus_2():
    """Rates over many independent simulated studies (not across the units of one study)."""
    rate, any_bh, p0 = _null_rates(2, 2, 150, seed=4)
    assert 0.03 <= rate <= 0.07
    assert any_bh <= 0.08  # P(any BH discovery at 5 %) under the complete null
    # one unit across independent studies: not anti-conservative (the d0 lower bound makes it a bit conservative)
    assert stats.kstest(p0, "uniform", alternative="greater").pvalue > 0.01
    # without the run normalisation and with limma's point estimate of d0, the same studies are not
    naive_rate, naive_any, _ = _null_rates(2, 2, 150, seed=4, normalize=False, prior_df_level=None)
    assert naive_any > 0.12 and naive_rate > rate


def test_calibrated_3_plus_3_with_a_second_run_factor():
    rate, any_bh, _ = _null_rates(3, 3, 100, seed=5)  # n_factors=None -> 1 surrogate factor
    assert 0.03 <= rate <= 0.07 and any_bh <= 0.08
    rate_o, any_o, _ = _null_rates(3, 3, 100, seed=6, study={"other": 0.3})
    assert 0.03 <= rate_o <= 0.075 and any_o <= 0.08


@pytest.mark.parametrize(("n", "min_tpr"), [(2, 0.4), (3, 0.8)])
def test_planted_units_are_found(n, min_tpr):
    rng = np.random.default_rng(7)
    tpr, fdp, eff = [], [], []
    for _ in range(10):
        r = nulls.task_attributable(_study(rng, n, n, planted=15, delta=1.5))
        planted = r.index < "g015"
        tpr.append(r.significant[planted].mean())
        fdp.append(r.significant[~planted].sum() / max(r.significant.sum(), 1))
        eff.append(r.loc[planted, "effect"].mean())
    assert np.mean(tpr) >= min_tpr and np.mean(fdp) <= 0.1
    assert np.mean(eff) == pytest.approx(1.5, abs=0.2)  # per study it moves with the runs' drift


def test_untestable_units_and_input_errors():
    rng = np.random.default_rng(8)
    d = _study(rng, 2, 2, n_units=30)
    only_real = pd.DataFrame({"run": ["r0", "r1"], "kind": "real", "unit": "solo", "value": [1.0, 2.0]})
    res = nulls.task_attributable(pd.concat([d, only_real]))
    assert np.isnan(res.loc["solo", "pval"]) and not res.loc["solo", "significant"]
    assert res.attrs["n_tests"] == 30
    assert nulls.counts(res, family="genes") | {} == {
        "null": nulls.NULL_NAME, "family": "genes", "n_tests": 30, "n_significant": int(res.significant.sum()),
        "alpha": 0.05, "n_runs_real": 2, "n_runs_permuted": 2,
    }  # fmt: skip
    with pytest.raises(InputError, match="columns"):
        nulls.task_attributable(d.rename(columns={"value": "v"}))
    with pytest.raises(InputError, match="one kind"):
        nulls.task_attributable(d.assign(kind=np.where(d.unit == "g000", "permuted", d.kind)))
    with pytest.raises(InputError, match="several rows"):
        nulls.task_attributable(pd.concat([d, d.head(1)]))
    with pytest.raises(InputError, match="residual df"):
        nulls.task_attributable(d[d.run.isin(["r0", "r2"])])
    with pytest.raises(InputError, match="residual df"):
        nulls.task_attributable(d, n_factors=2)
    with pytest.raises(InputError, match="normalisation"):
        nulls.task_attributable(d[d.unit.isin(["g000", "g001", "g002"])])


def _trend_prior(x):
    """Prior variance falling with log cells seen: a mean over 5 cells varies ~30x more than over 300."""
    return 0.3 * np.exp(-0.85 * (x - np.log(5)))


def test_squeeze_var_trend_recovers_a_variance_trend():
    rng = np.random.default_rng(11)
    n, d0_true = 4000, 8.0
    x = rng.uniform(np.log(5), np.log(300), n)
    df = np.full(n, 5.0)
    s2 = _trend_prior(x) * d0_true / rng.chisquare(d0_true, n) * rng.chisquare(df) / df
    post, d0, s0 = nulls.squeeze_var(s2, df, covariate=x)
    assert d0 == pytest.approx(d0_true, rel=0.25)
    assert np.median(np.abs(np.log(s0 / _trend_prior(x)))) < 0.1
    np.testing.assert_allclose(post, (d0 * s0 + df * s2) / (d0 + df))
    # one prior for all units reads the trend as spread: a far smaller d0 (less borrowing of strength)
    assert nulls.squeeze_var(s2, df)[1] < d0 / 2
    # a covariate of no information leaves the constant prior (nearly) unchanged
    flat = nulls.squeeze_var(s2, df, covariate=rng.normal(size=n))
    assert flat[1] == pytest.approx(nulls.squeeze_var(s2, df)[1], rel=0.1)
    with pytest.raises(InputError, match="one finite value per unit"):
        nulls.squeeze_var(s2, df, covariate=np.r_[x[:-1], np.nan])


def _trend_study(rng, n, **kw):
    x = rng.uniform(np.log(5), np.log(300), 300)
    d = _study(rng, n, n, var_scale=_trend_prior(x) / 0.3, **kw)
    return d, pd.Series(x, index=[f"g{j:03d}" for j in range(300)])


def test_variance_trend_holds_the_level_and_finds_a_well_sampled_unit():
    """4 + 4 runs (the unit: training runs); unit variances fall with the cells seen. Over independent
    null studies the trend keeps P(any BH discovery) and the per-unit rate at the level; a change in a
    well-sampled unit (the switch gene of the positive control is in every "on" cell) is found more
    often with the trend than with one prior variance for the family."""
    rng = np.random.default_rng(12)
    rej, any_bh = [], []
    for _ in range(120):
        d, x = _trend_study(rng, 4)
        r = nulls.task_attributable(d, variance_covariate=x)
        rej.append(np.mean(r.pval < 0.05))
        any_bh.append(r.significant.any())
    assert np.mean(rej) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / (120 * 300)) + 0.01
    assert np.mean(any_bh) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 120)
    found = {True: 0, False: 0}
    for _ in range(60):
        d, x = _trend_study(rng, 4)
        best = x.idxmax()  # the best-sampled unit gains 0.12 (about 3.4 of its prior SDs) in the real runs
        d.loc[(d.unit == best) & (d.kind == "real"), "value"] += 0.12
        for trend in found:
            r = nulls.task_attributable(d, variance_covariate=x if trend else None)
            found[trend] += bool(r.loc[best, "significant"])
    assert found[True] > found[False] + 5, found
    with pytest.raises(InputError, match="lacks a finite value"):
        nulls.task_attributable(d, variance_covariate=x.iloc[:-1])
