from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _stats_synth import make_store
from geneattn.attention.store import TokenStore
from geneattn.stats import confounds as cf


def _naive_residual(store, cell_bins):
    rows = []
    for c in range(store.n_cells):
        for p in range(store.lengths[c]):
            t = store.offsets[c] + p
            rows.append((c, p, cell_bins[c], store.token_ids[t], float(store.logfold[t, 0, 1])))
    df = pd.DataFrame(rows, columns=["cell", "pos", "bin", "tok", "lf"])
    df["E"] = df.groupby(["pos", "bin"])["lf"].transform("mean")
    df["res"] = df["lf"] - df["E"]
    return df.groupby("tok")["res"].mean()


def test_store_roundtrip(tmp_path, store_and_planted):
    s, _ = store_and_planted
    np.save(tmp_path / "token_logfold_pretrained.npy", s.logfold)
    np.savez(tmp_path / "token_index.npz", offsets=s.offsets, token_ids=s.token_ids, cell_ids=s.cell_ids)
    s2 = TokenStore.load(tmp_path, "pretrained")
    assert s2.same_cells(s) and s2.logfold.shape == s.logfold.shape
    with pytest.raises(ValueError, match="no token store"):
        TokenStore.load(tmp_path, "finetuned")


def test_residual_vs_naive(store_and_planted):
    s, _ = store_and_planted
    bins = cf.length_bins(s.lengths, 4)
    gs = cf.gene_scores(s, cell_bins=bins)
    got = gs[(gs.layer == "0") & (gs["head"] == "1")].set_index("token_id")["residual"]
    naive = _naive_residual(s, bins)
    np.testing.assert_allclose(got.loc[naive.index], naive, atol=1e-6)
    # raw = fold / n_c averaged; fold mean from exp(logfold)
    g0 = gs[(gs.layer == "0") & (gs["head"] == "0")].set_index("token_id")
    tok = s.token_ids[0]
    idx = np.flatnonzero(s.token_ids == tok)
    n_c = np.repeat(s.lengths, s.lengths)[idx]
    assert g0.loc[tok, "raw"] == pytest.approx(np.mean(np.exp(s.logfold[idx, 0, 0].astype(float)) / n_c))
    assert set(gs["head"]) == {"0", "1", "mean"} and "mean" in set(gs.layer)


def test_residual_from_tables_agrees(store_and_planted):
    """The table route (attention_by_gene + attention_by_position_length) equals the token-store route."""
    s, _ = store_and_planted
    bins = cf.length_bins(s.lengths, 5)
    pos, tbin = s.positions, np.repeat(bins, s.lengths)
    e_rows, g_rows = [], []
    for layer in range(s.n_layers):
        for head in range(s.n_heads):
            lf = s.logfold[:, layer, head].astype(float)
            e, n = cf.position_expectation(lf, pos, tbin)
            p_i, b_i = np.nonzero(n)
            e_rows.append(
                pd.DataFrame(
                    {
                        "model": "m",
                        "layer": layer,
                        "head": head,
                        "position": p_i,
                        "length_bin": b_i,
                        "n": n[p_i, b_i],
                        "logfold_mean": e[p_i, b_i],
                    }
                )
            )
            gm = cf.gene_means(lf, s.token_ids)
            g_rows.append(
                pd.DataFrame(
                    {
                        "model": "m",
                        "layer": layer,
                        "head": head,
                        "token_id": gm.token_id,
                        "label": "__all__",
                        "logfold_mean": gm["mean"],
                    }
                )
            )
    t = cf.residual_from_tables(
        pd.concat(g_rows),
        pd.concat(e_rows),
        offsets=s.offsets,
        token_ids=s.token_ids,
        cell_bins=bins,
        model="m",
    )
    gs = cf.gene_scores(s, cell_bins=bins, mean_heads=False)
    m = t.merge(gs, on=["layer", "head", "token_id"], suffixes=("_t", "_s"))
    assert len(m) == len(gs)
    np.testing.assert_allclose(m.residual_t, m.residual_s, atol=1e-5)


def test_length_confound_and_mitigation():
    s, planted = make_store(n_cells=150, n_genes=100, seed=4, len_range=(10, 80))
    dep = cf.length_dependence(s).set_index(["layer", "head", "score_type"])
    raw, fold = dep.loc[("0", "0", "raw")], dep.loc[("0", "0", "fold")]
    assert raw.spearman_vs_length < -0.5 and raw.loglength_slope == pytest.approx(-1, abs=0.25)
    assert abs(fold.loglength_slope) < 0.3
    assert raw.cell_mean_raw_vs_tokens < -0.9
    assert (dep["length_variable"] == "tokens").all()  # no n_genes given: the token count, named so
    assert dep.loc[("0", "0", "fold")].spearman_vs_position < -0.3
    assert abs(dep.loc[("0", "0", "residual")].spearman_vs_position) < 0.1


def test_confounds_table_residual_recovers_planted():
    s, planted = make_store(n_cells=150, seed=5, effect=0.5)
    gmap = pd.Series({t: f"G{t}" for t in np.unique(s.token_ids)})
    universe = [f"G{t}" for t in range(100, 160)]
    pl = pd.Series([g in {f"G{t}" for t in planted} for g in universe], index=universe)
    # a rank-driven "DE" score: top-ranked genes
    de_s = pd.Series(-np.arange(60, dtype=float), index=universe)
    t = cf.confounds_table({"ft": s}, gene_map=gmap, de_score=de_s, planted=pl, k=10)
    assert list(t.columns) == cf.CONFOUND_COLUMNS
    r = t[(t.layer == "mean") & (t["head"] == "mean")].set_index("score_type")
    assert r.loc["residual", "auroc_planted"] > 0.95
    assert r.loc["residual", "auroc_planted"] > r.loc["fold", "auroc_planted"]
    # raw/fold agreement with a rank-driven DE score is positional; residual removes it
    assert (
        r.loc["fold", "spearman_vs_de"] > 0.5
        and abs(r.loc["residual", "spearman_vs_de"]) < r.loc["fold", "spearman_vs_de"]
    )


def _capped_store(n_cells=200, cap=30, seed=7):
    """Every cell cut to ``cap`` tokens, while the genes it expressed (``n_genes``) vary 40-400.

    The log fold of every token falls with log n_genes (a depth effect the capped length cannot see).
    """
    rng = np.random.default_rng(seed)
    n_genes = rng.integers(40, 400, size=n_cells).astype(float)
    offsets = np.arange(n_cells + 1) * cap
    toks = np.concatenate([rng.permutation(np.arange(100, 160))[:cap] for _ in range(n_cells)])
    lf = -0.8 * np.log(np.repeat(n_genes, cap)) + rng.normal(0, 0.3, size=n_cells * cap)
    store = TokenStore(
        lf[:, None, None].astype(np.float32), offsets, toks, np.array([f"c{i}" for i in range(n_cells)])
    )
    return store, n_genes


def test_confound_variable_is_n_genes_not_capped_tokens():
    s, n_genes = _capped_store()
    dep = cf.length_dependence(s, n_genes=n_genes).set_index("score_type")
    fold = dep.loc["fold"]
    # naive Spearman of the per-token fold with its cell's n_genes (all tokens: no subsample at this size)
    naive = pd.Series(np.exp(s.logfold[:, 0, 0])).corr(pd.Series(n_genes[s.cell_of_token]), method="spearman")
    assert fold.length_variable == "n_genes"
    assert fold.spearman_vs_length == pytest.approx(naive, abs=1e-9) and naive < -0.7
    assert fold.loglength_slope == pytest.approx(-0.8, abs=0.1)
    assert np.isnan(fold.spearman_vs_tokens)  # the token count is constant: no information
    # the token count alone would have hidden the dependence
    dep_tok = cf.length_dependence(s).set_index("score_type")
    assert np.isnan(dep_tok.loc["fold", "spearman_vs_length"])
    # the confound table carries n_genes in the "vs genes expressed" column, the token count beside it
    t = cf.confounds_table({"m": s}, n_genes={"m": n_genes}, heads=[("0", "0")])
    r = t.set_index("score_type").loc["fold"]
    assert r.length_variable == "n_genes" and r.spearman_vs_length == pytest.approx(naive, abs=1e-9)
    assert np.isnan(r.spearman_vs_tokens)
    with pytest.raises(cf.InputError, match="n_genes"):
        cf.length_dependence(s, n_genes=n_genes[:-1])
