from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from geneattn.stats import agreement as ag


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40))
def test_auroc_auprc_vs_sklearn(pairs):
    s = np.array([p[0] for p in pairs], float)  # many ties
    y = np.array([p[1] for p in pairs])
    if y.all() or not y.any():
        assert np.isnan(ag.auroc(s, y))
        return
    assert ag.auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert ag.auprc(s, y) == pytest.approx(average_precision_score(y, s))


def test_auroc_naive_pairs():
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=30).round(1), rng.random(30) < 0.3
    naive = np.mean([(a > b) + 0.5 * (a == b) for a, b in itertools.product(s[y], s[~y])])
    assert ag.auroc(s, y) == pytest.approx(naive)


def test_topk_overlap_hypergeom_naive():
    genes = [f"g{i}" for i in range(30)]
    rng = np.random.default_rng(1)
    a = pd.Series(rng.normal(size=30), index=genes)
    b = a + rng.normal(0, 0.5, size=30)
    r = ag.topk_overlap(a, b, 5)
    x = len(set(a.nlargest(5).index) & set(b.nlargest(5).index))
    assert r["overlap"] == x
    # naive: P(X >= x), X = overlap of a random 5-subset with a fixed 5-subset of 30
    from math import comb

    naive = sum(comb(5, i) * comb(25, 5 - i) for i in range(x, 6)) / comb(30, 5)
    assert r["pval"] == pytest.approx(naive)
    assert r["expected"] == pytest.approx(25 / 30)


def test_agreement_table_planted_vs_null():
    rng = np.random.default_rng(2)
    genes = pd.Index([f"g{i}" for i in range(200)])
    planted = pd.Series(np.arange(200) < 10, index=genes)
    de_s = pd.Series(rng.normal(size=200) + 4 * planted, index=genes)
    good = pd.Series(rng.normal(size=200) + 3 * planted, index=genes)
    null = pd.Series(rng.normal(size=200), index=genes)
    partial = good.iloc[:50]  # unscored genes rank last
    t = ag.agreement(
        {"good": good, "null": null, "partial": partial}, de_s, planted=planted, k=10, markers=("g0",)
    )
    t = t.set_index("score")
    assert t.loc["good", "auroc_planted"] > 0.95 and t.loc["good", "hypergeom_p"] < 1e-6
    assert 0.3 < t.loc["null", "auroc_planted"] < 0.7 and t.loc["null", "hypergeom_p"] > 0.01
    assert t.loc["good", "spearman_vs_de"] == pytest.approx(stats.spearmanr(good, de_s).statistic)
    assert t.loc["partial", "n_genes"] == 50 and t.loc["partial", "auroc_planted"] > 0.9
    assert t.loc["good", "marker"] == "g0"


def test_de_gene_score():
    de = pd.DataFrame(
        {"group": ["a", "a", "b", "b"], "gene": ["x", "y", "x", "y"], "score": [1.0, -3.0, 2.0, 0.5]}
    )
    s = ag.de_gene_score(de)
    assert s["x"] == 2.0 and s["y"] == 3.0
    assert ag.de_gene_score(de, group="a")["y"] == -3.0


def test_agreement_top_k_and_marker_rank_leave_out_genes_in_few_cells():
    rng = np.random.default_rng(3)
    genes = [f"g{i}" for i in range(200)]
    s = pd.Series(rng.normal(size=200), index=genes)
    de = pd.Series(rng.normal(size=200), index=genes)
    n = pd.Series(rng.integers(1, 100, 200), index=genes)
    s["g0"], n["g0"] = 99.0, 5  # the top score, seen in 5 cells
    t = ag.agreement({"a": s}, de, k=10, markers=("g1",), n_cells=n, min_cells=30).iloc[0]
    kept = s[n >= 30]
    want = len(set(kept.nlargest(10).index) & set(de.nlargest(10).index))
    assert t["topk_overlap_de"] == want and t["topk_min_cells"] == 30
    if n["g1"] >= 30:
        assert t["marker_rank"] == kept.rank(ascending=False, method="min")["g1"]
    else:
        assert np.isnan(t["marker_rank"])
