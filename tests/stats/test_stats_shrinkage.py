"""Empirical-Bayes gene scores against a naive computation; rare genes cannot top the ranking."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from geneattn.stats import shrinkage as sh


def test_eb_shrink_vs_naive_formula():
    rng = np.random.default_rng(0)
    m, se2 = rng.normal(0, 1, 50), rng.uniform(0.05, 2.0, 50)
    got, mu, tau2 = sh.eb_shrink(m, se2)
    t2 = max(np.var(m, ddof=1) - np.mean(se2), 0)
    w = [1 / (t2 + v) for v in se2]
    mu_n = sum(wi * mi for wi, mi in zip(w, m, strict=True)) / sum(w)
    naive = [mu_n + t2 / (t2 + v) * (mi - mu_n) for mi, v in zip(m, se2, strict=True)]
    assert tau2 == pytest.approx(t2) and mu == pytest.approx(mu_n)
    np.testing.assert_allclose(got, naive)
    # no between-gene variance beyond the noise: everything at the grand mean
    flat, _, t0 = sh.eb_shrink(np.array([0.0, 0.1, -0.1, 0.05]), np.full(4, 10.0))
    assert t0 == 0 and np.ptp(flat) == 0


@dataclass
class _Store:
    token_ids: np.ndarray
    logfold: np.ndarray


def test_store_gene_scores_vs_naive_and_rare_genes_do_not_top_the_ranking():
    rng = np.random.default_rng(1)
    n_cells = {2: 400, 3: 400, 4: 3, 5: 2, 6: 200} | {t: 60 for t in range(7, 150)}
    true = {2: 0.5, 3: 0.3, 4: 0.0, 5: 0.0, 6: 0.1} | {t: 0.1 * np.sin(t) for t in range(7, 150)}
    tok = np.concatenate([np.full(n, t) for t, n in n_cells.items()] + [np.zeros(50, int)])  # token 0: <cls>
    x = np.array([true.get(t, 3.0) for t in tok]) + rng.normal(0, 1.0, len(tok))
    x[tok == 4] = [1.6, 1.4, 1.5]  # a rare gene with a large raw mean
    store = _Store(tok, np.repeat(x[:, None, None], 2, axis=2))  # 1 layer x 2 heads, equal
    gm = {0: "<cls>"} | {t: f"G{t}" for t in n_cells}
    got = sh.store_gene_scores(store, gm).set_index("gene")
    assert "<cls>" not in got.index and len(got) == len(n_cells)
    gm.pop(0)
    # naive: per-gene mean and sample variance, moderated with the pooled variance, then EB
    means = {g: x[tok == t].mean() for t, g in gm.items()}
    vars_ = {g: x[tok == t].var(ddof=1) for t, g in gm.items()}
    df = {g: n_cells[t] - 1 for t, g in gm.items()}
    pooled = sum(df[g] * vars_[g] for g in gm.values()) / sum(df.values())
    se2 = {g: (df[g] * vars_[g] + sh.D0 * pooled) / (df[g] + sh.D0) / (df[g] + 1) for g in gm.values()}
    genes = list(gm.values())
    want, _, _ = sh.eb_shrink(np.array([means[g] for g in genes]), np.array([se2[g] for g in genes]))
    np.testing.assert_allclose(got.loc[genes, "shrunken"], want)
    np.testing.assert_allclose(got.loc[genes, "mean"], [means[g] for g in genes])
    assert got["mean"].idxmax() == "G4"  # the raw mean ranks the 3-cell gene first
    every = sh.store_gene_scores(store, gm, min_cells=1).set_index("gene")
    assert every.loc["G2", "rank"] == 1 and every.loc["G4", "rank"] > 1  # the shrunken value does not
    # by default genes in fewer than MIN_CELLS cells are not ranked at all
    assert (
        not got.loc["G4", "passes_min_cells"]
        and pd.isna(got.loc["G4", "rank"])
        and got.loc["G2", "rank"] == 1
    )
    ranked = got[got["rank"].notna()]
    assert (ranked["n_cells"] >= sh.MIN_CELLS).all() and sorted(ranked["rank"]) == list(
        range(1, len(ranked) + 1)
    )
