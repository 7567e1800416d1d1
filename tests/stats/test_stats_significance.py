from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from _stats_synth import make_store
from geneattn.attention.store import TokenStore
from geneattn.stats import between_class as bc
from geneattn.stats import significance as sg


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
    res = bc.class_test(s, labels, units=units, heads=[("0", "0")], min_units=6)
    assert res.n.max() == 24  # 3 classes x 8 wells
    hits = set(res.loc[res.pval_adj < 0.05, "token_id"])
    assert set(planted) <= hits
    assert (res.loc[res.token_id.isin(planted), "effect"] > 0.5).all()
    # per-cell units also find it
    cell = bc.class_test(s, labels, heads=[("0", "0")])
    assert set(planted) <= set(cell.loc[cell.pval_adj < 0.05, "token_id"])


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


def test_hodges_lehmann_vs_bruteforce_and_sign_of_wilcoxon():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 50):
        d = rng.standard_t(3, size=n)
        walsh = [(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)]
        assert sg.hodges_lehmann(d) == pytest.approx(np.median(walsh))
    for big in (rng.lognormal(0, 1, size=sg._WALSH_MAX + 101) - 1.5, np.round(rng.normal(size=1200), 1)):
        x = np.sort(big)  # selection path vs all Walsh averages (skewed; heavily tied)
        iu = np.triu_indices(len(x))
        assert sg.hodges_lehmann(big) == np.median((x[iu[0]] + x[iu[1]]) / 2)
    # median and pseudo-median disagree in sign; the signed-rank statistic sides with the pseudo-median
    d = np.array([-0.1] * 6 + [1.0, 2.0, 3.0])
    assert np.median(d) < 0 < sg.hodges_lehmann(d)
    ranks = stats.rankdata(np.abs(d))
    assert ranks[d > 0].sum() > len(d) * (len(d) + 1) / 4


def test_paired_head_pct_change_is_the_tested_statistic():
    """Per cell ratios mostly a bit below 1, a few far above: ratio of sums > 1 but typical ratio < 1."""
    rng = np.random.default_rng(5)
    rows = []
    for c in range(60):
        x = rng.lognormal(0, 0.2)
        ratio = 0.97 if c % 6 else 1.6  # median log ratio < 0 and sum ratio > 1
        rows += [("pretrained", f"c{c}", 0, 0, x), ("finetuned", f"c{c}", 0, 0, x * ratio)]
    ch = pd.DataFrame(rows, columns=["model", "cell_id", "layer", "head", "head_out"])
    r = sg.paired_head_test(ch).iloc[0]
    x = ch[ch.model == "pretrained"].head_out.to_numpy()
    y = ch[ch.model == "finetuned"].head_out.to_numpy()
    d = np.log(y) - np.log(x)
    walsh = np.add.outer(d, d)[np.triu_indices(len(d))] / 2
    assert r["effect"] == pytest.approx(np.median(walsh))
    assert r["pct_change"] == pytest.approx(100 * (np.exp(np.median(walsh)) - 1))
    assert np.sign(r["pct_change"]) == np.sign(r["effect"])
    t_plus = stats.rankdata(np.abs(d))[d > 0].sum()
    assert np.sign(r["effect"]) == np.sign(t_plus - len(d) * (len(d) + 1) / 4)
    assert y.sum() / x.sum() > 1  # the old ratio-of-sums percentage


def _ranked(values):
    return bc._Ranked.of(np.asarray(values, dtype=float))


def test_between_p_matches_scipy_per_gene():
    rng = np.random.default_rng(1)
    n_units = 20
    codes = np.repeat([0, 1, 2, 3], 5)
    vals = rng.normal(size=(60, n_units))
    vals[rng.random(vals.shape) < 0.3] = np.nan
    vals[:10, codes >= 2] = np.nan  # seen in two classes: Mann-Whitney (exact, <= 8 units per class)
    vals[10:15, codes >= 3] = np.nan
    vals[15:20, :] = np.round(vals[15:20, :], 0)  # ties
    vals[20:25, codes >= 2] = np.round(vals[20:25, codes >= 2], 0)
    nulls = bc._Nulls(0, 0, {}, {})
    st, p, meth = bc._between_p(_ranked(vals), codes, 4, min_asymptotic=2, nulls=nulls)
    for g in range(len(vals)):
        ok = ~np.isnan(vals[g])
        groups = [vals[g, ok & (codes == k)] for k in range(4)]
        groups = [x for x in groups if len(x)]
        if len(groups) == 2:
            ref = stats.mannwhitneyu(groups[0], groups[1], alternative="two-sided")
            assert bc._METHODS[meth[g]] == "mannwhitneyu"
        else:
            ref = stats.kruskal(*groups)
            assert bc._METHODS[meth[g]] == "kruskal"
        assert st[g] == pytest.approx(ref.statistic) and p[g] == pytest.approx(ref.pvalue, rel=1e-9)
    # a gene seen in one class only is not tested; one with equal means has p = 1
    one = np.full((2, n_units), np.nan)
    one[0, codes == 1] = rng.normal(size=5)
    one[1, :] = 0.5
    _, p1, _ = bc._between_p(_ranked(one), codes, 4, min_asymptotic=2, nulls=nulls)
    assert np.isnan(p1[0]) and p1[1] == 1.0


def test_kruskal_permutation_vs_bruteforce():
    vals = np.array([[0.1, 0.5, 0.3, 1.2, 0.9, 2.0, 1.7]])
    codes = np.array([0, 0, 1, 1, 2, 2, 2])
    h = stats.kruskal(vals[0, :2], vals[0, 2:4], vals[0, 4:]).statistic
    ranks = stats.rankdata(vals[0])
    perms = {tuple(codes[list(p)]) for p in itertools.permutations(range(len(codes)))}
    exact = np.mean([bc._kw_h(ranks, np.array(p), np.array([2, 2, 3])) >= h - 1e-9 for p in perms])
    nulls = bc._Nulls(0, 4999, {}, {})
    st, p, meth = bc._between_p(_ranked(vals), codes, 3, min_asymptotic=5, nulls=nulls)
    assert bc._METHODS[meth[0]] == "kruskal_permutation" and st[0] == pytest.approx(h)
    assert p[0] == pytest.approx(exact, abs=0.02)
    # the same design (sizes, untied ranks) shares one seeded null
    st2, p2, _ = bc._between_p(_ranked(vals[:, ::-1]), codes, 3, min_asymptotic=5, nulls=nulls)
    assert len(nulls.kw) == 1


def _naive_class_test(store, labels, units, min_units):
    """Loop reference: residual means per (gene, class, well) with pandas, scipy tests per gene."""
    from geneattn.stats.confounds import length_bins, position_residual

    lf = store.logfold[:, 0, 0].astype(float)
    res = position_residual(lf, store.positions, np.repeat(length_bins(store.lengths, 10), store.lengths))
    cell = store.cell_of_token
    df = pd.DataFrame(
        {"tok": store.token_ids, "unit": np.char.add(labels[cell], "|" + units[cell]), "r": res}
    )
    out = {}
    for tok, g in df.groupby("tok"):
        m = g.groupby("unit")["r"].mean()
        if len(m) < min_units:
            continue
        lab = np.array([u.split("|")[0] for u in m.index])
        groups = [m.to_numpy()[lab == k] for k in np.unique(lab)]
        if len(groups) == 2:
            out[tok] = stats.mannwhitneyu(*groups, alternative="two-sided").pvalue
        elif len(groups) > 2:
            out[tok] = stats.kruskal(*groups).pvalue
    return pd.Series(out)


def test_class_test_matches_loop_reference():
    n_cells = 90
    labels = np.repeat(["0", "1", "2"], n_cells // 3)
    units = np.array([f"w{i % 6}" for i in range(n_cells)])
    s, _ = make_store(n_cells=n_cells, n_genes=120, n_planted=4, seed=21, labels=labels, class_effect=0.4,
                      len_range=(40, 110))  # fmt: skip
    res = bc.class_test(s, labels, units=units, heads=[("0", "0")], min_units=4, n_perm=0)
    ref = _naive_class_test(s, labels, units, 4)
    got = res.set_index("token_id")["pval"]
    assert set(got.index) == set(ref.index) and len(ref) > 60
    np.testing.assert_allclose(got.loc[ref.index].to_numpy(), ref.to_numpy(), rtol=1e-9)


def _null_store(n_cells, n_wells, seed):
    """Signal-free store whose wells differ in depth, so genes' unit means are correlated (as in the study)."""
    rng = np.random.default_rng(seed)
    s, _ = make_store(n_cells=n_cells, n_genes=200, n_planted=0, seed=seed, len_range=(60, 160))
    well = np.arange(n_cells) % n_wells
    depth = rng.normal(0, 0.15, n_wells)
    lf = s.logfold.copy()
    gene_load = rng.normal(0, 1, s.token_ids.max() + 1)
    lf[:, 0, 0] += (depth[well][s.cell_of_token] * gene_load[s.token_ids]).astype(np.float32)
    return TokenStore(lf, s.offsets, s.token_ids, s.cell_ids), well


def test_null_calibration_shuffles_reproduce_class_test_and_are_calibrated():
    n_cells, n_wells = 96, 12
    s, well = _null_store(n_cells, n_wells, seed=31)
    labels = np.array(["a", "b", "c", "d"])[well % 4]
    units = np.array([f"w{w}" for w in well])
    cal = bc.null_calibration(s, labels, units=units, heads=[("0", "0")], min_units=6, n_shuffles=200, seed=4)
    assert cal["n_shuffles"] == 200 and cal["n_tests"] >= 150
    # mean rejection rate over independent shuffles ~ alpha; any-BH-discovery rate <= ~alpha
    assert 0.03 <= cal["rejection_rate_mean"] <= 0.07
    assert cal["frac_shuffles_any_bh"] <= 0.09
    assert cal["rejection_rate_q05"] <= 0.05 <= cal["rejection_rate_q95"]
    # the observed labels are one more exchangeable draw: not extreme
    assert cal["pvalue_rejection_rate"] > 0.01
    obs = bc.class_test(s, labels, units=units, heads=[("0", "0")], min_units=6, seed=4)
    assert cal["observed_rejection_rate"] == pytest.approx(np.mean(obs.pval.dropna() < 0.05))
    # the first shuffle's p-values are those of class_test on the shuffled labels
    u = bc._Units.build(s, labels, units, 6, 10)
    classes, codes = np.unique(u.unit_label, return_inverse=True)
    first = classes[np.random.default_rng(4).permutation(codes)]
    key = pd.Series(first, index=pd.unique(np.char.add(np.char.add(labels, "\x1f"), units)))
    shuffled = key.reindex(np.char.add(np.char.add(labels, "\x1f"), units)).to_numpy()
    one = bc.null_calibration(s, labels, units=units, heads=[("0", "0")], min_units=6, n_shuffles=1, seed=4)
    ref = bc.class_test(s, shuffled, units=units, heads=[("0", "0")], min_units=6, seed=4)
    assert one["rejection_rate_max"] == pytest.approx(np.mean(ref.pval.dropna() < 0.05))


def test_null_calibration_finds_planted_class_effect():
    n_cells = 96
    well = np.arange(n_cells) % 12
    labels = np.array(["0", "1", "2", "3"])[well % 4]
    units = np.array([f"w{w}" for w in well])
    s, _ = make_store(n_cells=n_cells, n_genes=200, n_planted=20, seed=33, labels=labels, class_effect=0.5,
                      len_range=(60, 160))  # fmt: skip
    cal = bc.null_calibration(s, labels, units=units, heads=[("0", "0")], min_units=6, n_shuffles=200, seed=1)
    assert cal["observed_rejection_rate"] > cal["rejection_rate_q95"]
    assert cal["pvalue_rejection_rate"] < 0.02 and cal["observed_n_bh"] >= 10


def test_class_test_small_units_calibrated():
    """Few wells per class (3): permutation p-values; calibrated over independent shuffles."""
    n_cells = 96
    well = np.arange(n_cells) % 12
    labels = np.array(["0", "1", "5", "10"])[well % 4]
    units = np.array([f"w{w}" for w in well])
    s0, _ = make_store(n_cells=n_cells, n_genes=160, n_planted=0, seed=13, len_range=(60, 120))
    cal = bc.null_calibration(s0, labels, units=units, seed=1, heads=[("0", "0")], min_units=8, n_perm=199,
                              n_shuffles=100)  # fmt: skip
    res = bc.class_test(s0, labels, units=units, heads=[("0", "0")], min_units=8, n_perm=199)
    assert (res.method == "kruskal_permutation").all()
    assert 0.025 <= cal["rejection_rate_mean"] <= 0.075 and cal["frac_shuffles_any_bh"] <= 0.1
