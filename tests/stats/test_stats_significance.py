from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _stats_synth import make_store
from scipy import stats
from statsmodels.stats.multitest import multipletests

from geneattn.stats import significance as sg
from geneattn.stats.confounds import TokenStore


def test_holm_bh_vs_statsmodels():
    rng = np.random.default_rng(0)
    p = np.r_[rng.uniform(size=20) ** 3, np.nan]
    ok = ~np.isnan(p)
    np.testing.assert_allclose(sg.holm(p)[ok], multipletests(p[ok], method="holm")[1])
    np.testing.assert_allclose(sg.bh(p)[ok], multipletests(p[ok], method="fdr_bh")[1])
    assert np.isnan(sg.holm(p)[-1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flip_exact_vs_scipy_and_bruteforce(seed):
    d = np.random.default_rng(seed).normal(0.4, 1, size=9)
    t, p = sg.sign_flip_test(d)
    ref = stats.permutation_test(
        (d,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples", n_resamples=np.inf
    )
    assert t == pytest.approx(d.mean())
    assert p == pytest.approx(ref.pvalue)
    # brute force over all sign vectors
    import itertools

    null = [np.mean(np.array(s) * d) for s in itertools.product((1, -1), repeat=9)]
    assert p == pytest.approx(np.mean(np.abs(null) >= abs(d.mean()) - 1e-12))


def test_sign_flip_monte_carlo_close_to_exact():
    d = np.random.default_rng(3).normal(0.3, 1, size=14)
    _, p_exact = sg.sign_flip_test(d, n_resamples=2**14)
    _, p_mc = sg.sign_flip_test(d, n_resamples=4000, seed=1)
    assert p_mc == pytest.approx(p_exact, abs=0.03)


def _ft_store(pt: TokenStore, planted, effect, seed):
    rng = np.random.default_rng(seed)
    lf = pt.logfold.copy() + rng.normal(0, 0.3, size=pt.logfold.shape).astype(np.float32)
    lf[np.isin(pt.token_ids, planted)] += effect
    return TokenStore(lf, pt.offsets, pt.token_ids, pt.cell_ids)


def test_paired_gene_planted_found_null_calibrated():
    pt, _ = make_store(n_cells=80, n_genes=220, n_planted=0, seed=7, len_range=(150, 220))
    planted = np.arange(100, 110)
    ft = _ft_store(pt, planted, 0.3, seed=8)
    res = sg.paired_gene_test(pt, ft, heads=[("0", "0")], min_cells=10)
    assert list(res.columns) == sg.SIGNIFICANCE_COLUMNS
    sig = set(res.loc[res.pval_adj < 0.05, "token_id"])
    assert set(planted) <= sig and len(sig - set(planted)) <= 2
    null_p = res.loc[~res.token_id.isin(planted), "pval"]
    assert len(null_p) >= 190
    assert stats.kstest(null_p, "uniform").pvalue > 0.01
    row = res[res.token_id == 100].iloc[0]
    assert row["pct_change"] == pytest.approx(100 * (np.exp(0.3) - 1), abs=15)
    sf = sg.paired_gene_test(pt, ft, heads=[("0", "0")], method="signflip", n_resamples=199, min_cells=10)
    assert (sf.loc[sf.token_id.isin(planted), "pval"] <= 0.01).all()
    with pytest.raises(ValueError):
        sg.paired_gene_test(pt, make_store(n_cells=10)[0])


def test_paired_head_test():
    rng = np.random.default_rng(0)
    rows = []
    for c in range(40):
        for layer in range(2):
            for head in range(2):
                x = rng.lognormal(0, 0.3)
                up = 1.3 if (layer, head) == (1, 0) else 1.0
                rows.append(("pretrained", f"c{c}", layer, head, x))
                rows.append(("finetuned", f"c{c}", layer, head, x * up * rng.lognormal(0, 0.1)))
    ch = pd.DataFrame(rows, columns=["model", "cell_id", "layer", "head", "head_out"])
    res = sg.paired_head_test(ch).set_index(["layer", "head"])
    assert res.loc[("1", "0"), "pval_adj"] < 1e-6
    assert (res.drop(index=("1", "0")).pval_adj > 0.01).all()
    assert res.loc[("1", "0"), "pct_change"] == pytest.approx(30, abs=8)
    np.testing.assert_allclose(res.pval_adj, sg.holm(res.pval.to_numpy()))


def test_class_test_planted_and_shuffled_null():
    n_cells = 120
    labels = np.repeat(["0", "1", "2"], n_cells // 3)
    units = np.array([f"w{i % 8}" for i in range(n_cells)])
    s, planted = make_store(
        n_cells=n_cells,
        n_genes=220,
        n_planted=8,
        seed=11,
        labels=labels,
        class_effect=0.6,
        len_range=(120, 200),
    )
    res = sg.class_test(s, labels, units=units, heads=[("0", "0")], min_units=6)
    assert res.n.max() == 24  # 3 classes x 8 wells
    hits = set(res.loc[res.pval_adj < 0.05, "token_id"])
    assert set(planted) <= hits
    assert (res.loc[res.token_id.isin(planted), "effect"] > 0.5).all()
    # per-cell units also find it
    cell = sg.class_test(s, labels, heads=[("0", "0")])
    assert set(planted) <= set(cell.loc[cell.pval_adj < 0.05, "token_id"])
    # calibration on a signal-free store with labels shuffled across cells
    s0, _ = make_store(n_cells=n_cells, n_genes=240, n_planted=0, seed=12, len_range=(180, 230))
    cal = sg.null_calibration(s0, labels, seed=0, heads=[("0", "0")], min_units=20)
    assert cal["n_tests"] >= 200
    assert cal["ks_pvalue"] > 0.01 and cal["n_fdr_0.05"] == 0


def test_bootstrap_change_by_rank():
    pt, _ = make_store(n_cells=60, n_genes=60, seed=2)
    lf = pt.logfold.copy()
    lf[pt.positions < 5] += np.log(1.5)  # +50% at top ranks
    ft = TokenStore(lf, pt.offsets, pt.token_ids, pt.cell_ids)
    res = sg.bootstrap_change_by_rank(pt, ft, bins=[0, 5, 20, 50], n_boot=100, seed=0)
    r = res[(res.layer == "0") & (res["head"] == "0")].set_index("bin_start")
    assert r.loc[0, "pct_change"] == pytest.approx(50, abs=1e-6)
    assert r.loc[5, "pct_change"] == pytest.approx(0, abs=1e-6)
    assert r.loc[0, "ci_low"] <= 50 <= r.loc[0, "ci_high"]
    # naive per-cell means for bin [5, 20)
    pos, cell = pt.positions, pt.cell_of_token
    m = (pos >= 5) & (pos < 20)
    per_cell = pd.Series(np.exp(pt.logfold[m, 0, 0].astype(float))).groupby(cell[m]).mean()
    assert r.loc[5, "ref_mean"] == pytest.approx(per_cell.mean())
    res2 = sg.bootstrap_change_by_rank(pt, ft, bins=[0, 5, 20, 50], n_boot=100, seed=0)
    pd.testing.assert_frame_equal(res, res2)


def test_kruskal_permutation_vs_bruteforce():
    import itertools

    vals = np.array([0.1, 0.5, 0.3, 1.2, 0.9, 2.0, 1.7])
    labs = np.array(["a", "a", "b", "b", "c", "c", "c"])
    classes, codes, n_k = np.unique(labs, return_inverse=True, return_counts=True)
    ranks = stats.rankdata(vals)
    h = sg._kw_h(ranks, codes, n_k)
    assert h == pytest.approx(stats.kruskal(*[vals[labs == c] for c in classes]).statistic)
    # exact: all distinct relabellings
    perms = {tuple(codes[list(p)]) for p in itertools.permutations(range(len(codes)))}
    exact = np.mean([sg._kw_h(ranks, np.array(p), n_k) >= h - 1e-9 for p in perms])
    _, p, eff, meth = sg._class_p(vals, labs, n_perm=4999, min_asymptotic=5, rng=np.random.default_rng(0))
    assert meth == "kruskal_permutation" and p == pytest.approx(exact, abs=0.02)
    _, p2, _, meth2 = sg._class_p(vals, labs, n_perm=0, min_asymptotic=5, rng=np.random.default_rng(0))
    assert meth2 == "kruskal" and p2 == pytest.approx(
        stats.kruskal(*[vals[labs == c] for c in classes]).pvalue
    )


def test_class_test_small_units_calibrated():
    """Few wells per class (2-3): permutation p-values stay uniform under shuffled labels."""
    n_cells = 96
    labels = np.repeat(["0", "1", "5", "10"], n_cells // 4)
    units = np.array([f"w{i % 3}" for i in range(n_cells)])
    s0, _ = make_store(n_cells=n_cells, n_genes=240, n_planted=0, seed=13, len_range=(180, 230))
    cal = sg.null_calibration(
        s0, labels, units=units, seed=1, heads=[("0", "0")], min_units=8, n_perm=199, ks_min_units=8
    )
    assert cal["n_tests"] >= 200
    assert cal["ks_pvalue"] > 0.01 and cal["n_fdr_0.05"] == 0
