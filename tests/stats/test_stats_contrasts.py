"""Set-level contrasts: values vs a naive loop, tests vs scipy/statsmodels, and the three decisions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind

from geneattn.errors import InputError
from geneattn.stats import contrasts, power


def _values(spec: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    rows = []
    for name, (real, perm) in spec.items():
        for kind, v in (("real", real), ("permuted", perm)):
            rows += [(name, f"{kind}{i}", kind, float(x)) for i, x in enumerate(v)]
    return pd.DataFrame(rows, columns=["contrast", "run", "kind", "value"])


@pytest.mark.parametrize("equal_var", [True, False])
def test_set_contrasts_vs_scipy_statsmodels_and_holm(equal_var):
    rng = np.random.default_rng(0)
    spec = {f"c{i}": (rng.normal(0.3 * i, 0.2 + 0.1 * i, 4), rng.normal(0, 0.3, 5)) for i in range(4)}
    margins = {f"c{i}": 0.2 + 0.1 * i for i in range(4)}
    res = contrasts.set_contrasts(_values(spec), margins=margins, alpha=0.05, equal_var=equal_var)
    for name, (a, b) in spec.items():
        r = res.loc[name]
        ref = stats.ttest_ind(a, b, equal_var=equal_var)
        lo, hi = ref.confidence_interval(0.95)
        assert r["effect"] == pytest.approx(a.mean() - b.mean())
        assert (r["t"], r["df"], r["pval"]) == pytest.approx((ref.statistic, ref.df, ref.pvalue), rel=1e-9)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)
        lo90, hi90 = ref.confidence_interval(0.90)
        assert (r["eq_low"], r["eq_high"]) == pytest.approx((lo90, hi90), rel=1e-9)
        m = margins[name]
        p_tost = ttost_ind(a, b, -m, m, usevar="pooled" if equal_var else "unequal")[0]
        assert r["p_equiv"] == pytest.approx(p_tost, rel=1e-6)
        # the equivalence decision is the TOST at alpha: the 90 % interval inside the margin
        inside = lo90 > -m and hi90 < m
        assert inside == (p_tost < 0.05)
    np.testing.assert_allclose(res["pval_adj"], multipletests(res["pval"], method="holm")[1])
    assert set(res["decision"]) <= set(contrasts.DECISIONS)
    assert list(res.columns) == list(contrasts.CONTRAST_COLUMNS)


def test_decision_rule_three_outcomes_and_mde():
    rng = np.random.default_rng(1)
    jitter = rng.normal(0, 1, 10)
    spec = {
        "clear": (1.0 + 0.02 * jitter[:5], 0.02 * jitter[5:]),  # large effect, tiny spread
        "within": (0.01 * jitter[:5], 0.01 * jitter[5:]),  # no effect, interval well inside 0.1
        "noisy": (0.5 * jitter[:5], 0.5 * jitter[5:]),  # interval far wider than the margin
        "tiny": (0.05 + 0.001 * jitter[:5], 0.001 * jitter[5:]),  # significant, inside the margin
    }
    res = contrasts.set_contrasts(_values(spec), margins=dict.fromkeys(spec, 0.1))
    assert res.loc["clear", "decision"] == "discovery"
    assert res.loc["within", "decision"] == "no change within the margin"
    assert res.loc["noisy", "decision"] == "undetermined"
    assert res.loc["tiny", "decision"] == "discovery"  # a discovery is read before equivalence
    # the within contrast: its 1 - 2 alpha interval lies inside the margin; the noisy one's does not
    assert -0.1 < res.loc["within", "eq_low"] < res.loc["within", "eq_high"] < 0.1
    assert res.loc["noisy", "eq_high"] - res.loc["noisy", "eq_low"] > 0.2
    # mde: the runs' own pooled SD, Bonferroni over the 4 contrasts, pooled df
    a, b = spec["noisy"]
    sp = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    expect = power.mde(sp, sp, 5, 5, alpha=0.05, n_tests=4, df=8)
    assert res.loc["noisy", "mde"] == pytest.approx(expect) and res.loc["noisy", "mde"] > 0.1


def test_too_few_runs_is_undetermined_and_margins_are_required():
    v = _values(
        {"a": (np.array([0.1]), np.array([0.0, 0.2])), "b": (np.array([0.1, 0.3]), np.array([0.0, 0.2]))}
    )
    res = contrasts.set_contrasts(v, margins={"a": 0.1, "b": 0.1})
    assert res.loc["a", "decision"] == "undetermined" and np.isnan(res.loc["a", "pval"])
    assert np.isfinite(res.loc["b", "pval"])
    with pytest.raises(InputError, match="margin"):
        contrasts.set_contrasts(v, margins={"a": 0.1})
    with pytest.raises(InputError, match="margin"):
        contrasts.set_contrasts(v, margins={"a": 0.1, "b": 0.0})
    with pytest.raises(InputError, match="kind"):
        contrasts.set_contrasts(v.assign(kind="other"), margins={"a": 0.1, "b": 0.1})


def test_set_contrast_values_vs_naive_loop():
    rng = np.random.default_rng(2)
    units = [f"g{j}" for j in range(20)]
    rows = [(f"r{i}", "real" if i < 3 else "permuted", u, rng.normal()) for i in range(6) for u in units]
    d = pd.DataFrame(rows, columns=["run", "kind", "unit", "value"])
    d = d.drop(d.index[(d["run"] == "r1") & (d["unit"] == "g0")])  # a member missing in one run
    sets = {"s": (["g0", "g1", "g2", "absent"], ["g10", "g11"]), "solo": (["g5"], [])}
    out = contrasts.set_contrast_values(d, sets)
    assert out.attrs["n_units"] == {"s": (3, 2), "solo": (1, 0)}
    for _, r in out.iterrows():
        run = d[d["run"] == r["run"]].set_index("unit")["value"]
        mem, dec = sets[r["contrast"]]
        expect = run.reindex(mem).dropna().mean() - (run.reindex(dec).dropna().mean() if dec else 0.0)
        assert r["value"] == pytest.approx(expect)
        assert r["kind"] == ("real" if int(r["run"][1:]) < 3 else "permuted")
    with pytest.raises(InputError, match="members"):
        contrasts.set_contrast_values(d, {"x": (["absent"], [])})
    with pytest.raises(InputError, match="one family"):
        contrasts.set_contrast_values(d.assign(family=np.where(d["unit"] == "g0", "a", "b")), sets)


def test_programme_sets():
    var = pd.DataFrame(
        {
            "planted": [True, True, True, True, False, False, False, False, False],
            "program": ["p53_pulse", "cell_cycle", "none", "none", "decoy_pulse", "decoy_cycle", "none", "none",
                        "none"],
            "category": ["p53_target", "cell_cycle", "background", "other", "background", "background",
                         "background", "background", "ribosomal"],
            "decoy_of": ["", "", "", "", "A", "B", "C", "D", ""],
        },
        index=list("ABCDEFGHI"),
    )  # fmt: skip
    sets = contrasts.programme_sets(var)
    assert sets == {"p53 targets": (["A"], ["E"]), "cell-cycle genes": (["B"], ["F"]),
                    "background responders": (["C"], ["G"])}  # fmt: skip
    assert contrasts.programme_sets(var, units=["A", "C"])["background responders"] == (["C"], [])
    with pytest.raises(InputError, match="var needs"):
        contrasts.programme_sets(var.drop(columns="decoy_of"))
