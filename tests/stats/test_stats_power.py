"""Power of the run-level null: mde vs brute-force t-tests, the fitted run model, level and power by simulation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geneattn.errors import InputError
from geneattn.stats import nulls, power

#: the default number of runs per arm the level is checked at
N_RUNS = 4
ALPHA = 0.05


def _rejection(rng, n_sim, sd, n, delta, *, alpha, equal_var):
    """Brute force: share of two-sample t-tests (scipy) rejecting at ``alpha`` when the true difference is delta."""
    a = rng.normal(delta, sd[0], size=(n_sim, n[0]))
    b = rng.normal(0.0, sd[1], size=(n_sim, n[1]))
    return float((stats.ttest_ind(a, b, axis=1, equal_var=equal_var).pvalue < alpha).mean())


@pytest.mark.parametrize(
    ("sd", "n", "n_tests", "equal_var", "tol"),
    [
        ((1.0, 1.0), (4, 4), 1, True, 0.0),
        ((0.3, 0.3), (3, 3), 10, True, 0.0),
        ((0.5, 1.5), (6, 5), 1, False, 0.02),
    ],
)
def test_mde_gives_the_power_in_brute_force_t_tests(sd, n, n_tests, equal_var, tol):
    rng = np.random.default_rng(0)
    df = (
        n[0] + n[1] - 2 if equal_var else None
    )  # Welch: Satterthwaite df from the true SDs (an approximation)
    d = power.mde(*sd, *n, alpha=ALPHA, n_tests=n_tests, df=df)
    n_sim = 20000
    rate = _rejection(rng, n_sim, sd, n, d, alpha=ALPHA / n_tests, equal_var=equal_var)
    assert abs(rate - 0.8) < 3 * np.sqrt(0.8 * 0.2 / n_sim) + tol
    # half the mde has far less power, and the mde grows with the number of tests
    assert _rejection(rng, 4000, sd, n, d / 2, alpha=ALPHA / n_tests, equal_var=equal_var) < 0.5
    assert power.mde(*sd, *n, n_tests=n_tests + 5, df=df) > d


def test_mde_limits_and_monotone_in_runs():
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(0.8)
    assert power.mde(1.0, 1.0, 10, 10, df=np.inf) == pytest.approx(z * np.sqrt(0.2), rel=1e-4)
    assert (
        power.t_power(power.mde(1.0, 2.0, 3, 7), np.sqrt(1 / 3 + 4 / 7), 5.0) < 0.8
    )  # Welch df < 8 = pooled
    ks = range(2, 11)
    m = [power.mde(0.2, 0.2, k, k, df=2 * k - 2) for k in ks]
    assert all(np.diff(m) < 0)
    assert power.mde(0.0, 0.0, 3, 3) == 0.0
    with pytest.raises(InputError):
        power.mde(1.0, 1.0, 0, 3)


def _synthetic_deltas(rng, n_real, n_perm, *, n_units=200, sigma=0.15, d0=6.0, tau=0.1, family="genes"):
    """A study's long table from a known model: null mean m_g, per-run drift, per-run shift of set 'A'."""
    m = rng.normal(0, 0.5, n_units)
    s2 = sigma**2 * d0 / rng.chisquare(d0, n_units)
    n = n_real + n_perm
    a, b = rng.normal(0, 0.05, n), rng.normal(0, 0.2, n)
    y = m + a[:, None] + b[:, None] * m + rng.normal(size=(n, n_units)) * np.sqrt(s2)
    y[:, :20] += rng.normal(0, tau, (n, 1))  # set A: units 0-19 (decoys 20-59)
    kind = np.array(["real"] * n_real + ["permuted"] * n_perm)
    return pd.DataFrame({"family": family, "run": np.repeat([f"r{i:02d}" for i in range(n)], n_units),
                         "kind": np.repeat(kind, n_units), "unit": np.tile([f"u{j:03d}" for j in range(n_units)], n),
                         "value": y.ravel()})  # fmt: skip


SET_A = ([f"u{j:03d}" for j in range(20)], [f"u{j:03d}" for j in range(20, 60)])


def test_fit_run_model_recovers_a_known_model_and_simulate_is_its_inverse():
    rng = np.random.default_rng(1)
    d = _synthetic_deltas(rng, 15, 15, n_units=2000)
    fit = power.fit_run_model(d, sets={"A": SET_A})
    assert fit.family == "genes" and fit.n_runs == (15, 15) and fit.normalized
    assert np.sqrt(fit.prior_var) == pytest.approx(0.15, rel=0.1) and fit.prior_df == pytest.approx(
        6, rel=0.35
    )
    assert np.sqrt(np.diag(fit.drift_cov)) == pytest.approx([0.05, 0.2], rel=0.5)
    assert fit.set_sd["A"] == pytest.approx(0.1, rel=0.5)
    # fit -> simulate -> fit returns the same model (within the noise of 30 runs)
    refit = power.fit_run_model(power.simulate(fit, 15, 15, seed=2), sets={"A": SET_A})
    assert refit.prior_var == pytest.approx(fit.prior_var, rel=0.1)
    assert np.corrcoef(refit.mean, fit.mean)[0, 1] > 0.95
    # the model's SD of the set contrast matches the simulated between-run SD
    idx = (np.arange(20), np.arange(20, 60))  # the units are simulated in the model's (sorted) order
    sims = [power.simulate(fit, 1, 1, seed=s)["value"].to_numpy().reshape(2, -1) for s in range(250)]
    vals = [power._set_contrast(y, idx)[0] for y in sims]
    assert np.std(vals, ddof=1) == pytest.approx(power.contrast_sd(fit, *SET_A, name="A"), rel=0.15)


def test_simulate_layout_and_effects_with_common_random_numbers():
    rng = np.random.default_rng(3)
    fit = power.fit_run_model(_synthetic_deltas(rng, 3, 3))
    base = power.simulate(fit, 2, 3, seed=7)
    shifted = power.simulate(fit, 2, 3, effect={"u001": 0.5, "u002": -0.2}, seed=7)
    assert list(base.columns) == ["family", "run", "kind", "unit", "value"] and len(base) == 5 * len(
        fit.units
    )
    diff = shifted["value"] - base["value"]
    expect = np.where(
        shifted["kind"] == "real", shifted["unit"].map({"u001": 0.5, "u002": -0.2}).fillna(0), 0
    )
    np.testing.assert_allclose(diff, expect, atol=1e-12)
    assert not np.allclose(power.simulate(fit, 2, 3, seed=8)["value"], base["value"])
    with pytest.raises(InputError, match="not in the model"):
        power.simulate(fit, 2, 2, effect={"nope": 1.0})
    with pytest.raises(InputError, match="one family"):
        power.fit_run_model(pd.concat([base, base.assign(family="heads")]))


def test_family_mde_matches_the_moderated_t_by_simulation():
    """A unit shifted by family_mde is found (BH over the family) in about 80 % of simulated studies."""
    rng = np.random.default_rng(4)
    n_units, s0, d0, k = 200, 0.04, 8.0, N_RUNS
    ref = nulls.task_attributable(
        _synthetic_deltas(rng, k, k, n_units=n_units, tau=0.0), normalize=False, n_factors=0
    )
    hits = []
    for _ in range(120):
        s2 = np.r_[s0, s0 * d0 / rng.chisquare(d0, n_units - 1)]  # unit 0 at the prior's scale
        y = rng.normal(size=(2 * k, n_units)) * np.sqrt(s2)
        t = nulls.task_attributable(_long(y, k), normalize=False, n_factors=0)
        t.attrs["prior_var"], t.attrs["prior_df"] = s0, d0  # the truth, as family_mde would read a fit
        y[:k, 0] += power.family_mde(t)
        hits.append(
            nulls.task_attributable(_long(y, k), normalize=False, n_factors=0).loc["u000", "significant"]
        )
    assert abs(np.mean(hits) - 0.8) < 0.12
    assert power.family_mde(ref) > 0
    with pytest.raises(InputError):
        power.family_mde(pd.DataFrame({"pval": [0.1]}))


def _long(y, k):
    n, g = y.shape
    return pd.DataFrame({"run": np.repeat([f"r{i}" for i in range(n)], g), "kind": np.repeat(["real"] * k + ["permuted"] * (n - k), g),
                         "unit": np.tile([f"u{j:03d}" for j in range(g)], n), "value": y.ravel()})  # fmt: skip


def _models(n_runs):
    rng = np.random.default_rng(5)
    genes = _synthetic_deltas(rng, n_runs, n_runs, n_units=150)
    heads = _synthetic_deltas(rng, n_runs, n_runs, n_units=24, sigma=0.3, tau=0.0, family="heads")
    bins = _synthetic_deltas(rng, n_runs, n_runs, n_units=8, sigma=0.1, d0=20, tau=0.0, family="rank_bins")
    sets = {"A": ("genes", *SET_A), "one gene": ("genes", ["u100"], []), "all heads": ("heads", list(heads["unit"].unique()), []),
            "bin 0": ("rank_bins", ["u000"], [])}  # fmt: skip
    models = {f: power.fit_run_model(d, sets={n: s[1:] for n, s in sets.items() if s[0] == f})
              for f, d in (("genes", genes), ("heads", heads), ("rank_bins", bins))}  # fmt: skip
    return models, sets


@pytest.mark.parametrize("n_runs", [N_RUNS])
def test_level_holds_over_200_null_studies(n_runs):
    models, sets = _models(n_runs)
    assert not models["rank_bins"].normalized and models["heads"].normalized
    res = power.simulate_level_and_power(models, ks=(n_runs,), sets=sets, n_sim=200, alpha=ALPHA, seed=0)
    assert set(res["test"]) == {"genes", "heads", "rank_bins", *sets} and (res["n_sim"] == 200).all()
    bound = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / 200)
    assert (res["p_reject"] <= bound).all(), res
    con = res[res["what"] == "contrast"]
    assert (con["p_raw"] <= bound).all() and con["p_raw"].mean() > 0.01  # the unadjusted test is near alpha


def test_power_is_monotone_in_runs_and_effect():
    models, sets = _models(N_RUNS)
    a = {"A": sets["A"]}
    effects = {f"+{e}": {"genes": dict.fromkeys(SET_A[0], e)} for e in (0.15, 0.3)}
    res = power.simulate_level_and_power(
        models, ks=(2, 4, 8), sets=a, effects=effects, n_sim=60, families=False
    )
    p = res.pivot(index="scenario", columns="k", values="p_reject")
    assert (np.diff(p.loc["+0.15"].to_numpy()) > 0).all() and (np.diff(p.loc["+0.3"].to_numpy()) > 0).all()
    assert (p.loc["+0.3"] >= p.loc["+0.15"]).all() and (p.loc["+0.15"] >= p.loc["null"]).all()
    assert p.loc["+0.3", 8] > 0.8 and p.loc["null"].max() < 0.15
    # the analytic mde of the contrast falls with K as the simulated power rises
    sd = power.contrast_sd(models["genes"], *SET_A, name="A")
    assert power.mde(sd, sd, 2, 2, df=2) > power.mde(sd, sd, 8, 8, df=14)
