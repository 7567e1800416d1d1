from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from _stats_synth import make_counts
from geneattn.errors import InputError
from geneattn.stats import de


def test_normalize_keeps_counts(counts_adata):
    ad = counts_adata.copy()
    x0 = ad.X.copy()
    de.normalize(ad)
    assert (ad.X != x0).nnz == 0
    lib = np.asarray(ad.layers["counts"].sum(1)).ravel()
    manual = np.log1p(ad.layers["counts"].toarray() / lib[:, None] * 1e4)
    np.testing.assert_allclose(ad.layers["lognorm"].toarray(), manual, rtol=1e-5, atol=1e-5)
    assert ad.uns["normalize"]["params"]["target_sum"] == 1e4
    np.testing.assert_array_equal(ad.obs["n_genes"], np.asarray((x0 > 0).sum(1)).ravel())


def test_rank_genes_planted_first_and_naive(counts_adata):
    ad = counts_adata.copy()
    de.rank_genes(ad, "label", key_added="de")
    df = de.de_df(ad, "de")
    assert list(df.columns) == de.DE_COLUMNS
    b = df[df.group == "b"]
    assert set(b.gene[:5]) == {f"G{i}" for i in range(5)}
    assert b["ensembl_id"].iloc[0].startswith("ENSG")
    # naive Wilcoxon z (no tie correction, as scanpy) for one gene
    x = ad.layers["lognorm"].toarray()[:, 0]
    g = (ad.obs.label == "b").to_numpy()
    r = stats.rankdata(x)
    n1, n2 = g.sum(), (~g).sum()
    z = (r[g].sum() - n1 * (n1 + n2 + 1) / 2) / np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    assert b.set_index("gene").loc["G0", "score"] == pytest.approx(z, rel=1e-4)
    ref = de.rank_genes(ad, "label", reference="a", key_added="de_ref", copy=True)
    dr = de.de_df(ref, "de_ref")
    assert set(dr.group) == {"b"} and (dr.reference == "a").all()


def test_rank_genes_errors(counts_adata):
    with pytest.raises(InputError):
        de.rank_genes(counts_adata.copy(), "nope")
    with pytest.raises(InputError):
        de.rank_genes(counts_adata.copy(), "label", reference="zzz")


def test_pseudobulk_vs_naive(counts_adata):
    ad = counts_adata
    df = de.pseudobulk(ad, "label", unit="well", test="welch")
    b = df[df.group == "b"].set_index("gene")
    assert set(b.index[:5]) >= {f"G{i}" for i in range(3)}
    # naive: sum per well, CPM-log, Welch
    x = ad.X.toarray().astype(np.float64)
    wells = sorted(set(ad.obs.well))
    sums = np.array([x[(ad.obs.well == w).to_numpy()].sum(0) for w in wells])
    lab = np.array([w[0] for w in wells])
    lc = np.log1p(sums / sums.sum(1, keepdims=True) * 1e6)
    t = stats.ttest_ind(lc[lab == "b", 7], lc[lab == "a", 7], equal_var=False)
    assert b.loc["G7", "score"] == pytest.approx(t.statistic)
    assert b.loc["G7", "pval"] == pytest.approx(t.pvalue)
    assert (b.n_units == 3).all()
    w = de.pseudobulk(ad, "label", test="wilcoxon")
    assert w.pval.between(0, 1).all()


def test_pseudobulk_calibrated_vs_per_cell():
    # no signal; strong well effect: per-cell p-values are inflated, pseudobulk ones are not
    ad = make_counts(n_cells=120, n_genes=60, n_markers=0, seed=3, n_wells=8)
    rng = np.random.default_rng(1)
    x = ad.X.toarray()
    for w in set(ad.obs.well):
        m = (ad.obs.well == w).to_numpy()
        x[m] = rng.poisson(x[m] * rng.lognormal(0, 0.6, size=x.shape[1]))
    ad.X = x.astype(np.float32)
    pb = de.pseudobulk(ad, "label")
    de.rank_genes(ad, "label")
    pc = de.de_df(ad)
    assert (pb[pb.group == "b"].pval < 0.05).mean() < (pc[pc.group == "b"].pval < 0.05).mean()


def test_umap(counts_adata):
    ad = de.umap(counts_adata, seed=0, copy=True)
    assert ad.obsm["X_umap"].shape == (ad.n_obs, 2)
    assert ad.uns["umap"]["params"]["seed"] == 0
    assert "X_umap" not in counts_adata.obsm
