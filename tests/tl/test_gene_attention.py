"""`geneattn.tl.gene_attention`: what it writes, read back by `geneattn.get`, against two references.

References: the study's own ``attention_by_gene`` table (`geneattn.attention.extract` on the same
tokens, the table ``geneattn run`` writes), and a naive per-cell computation from HF eager attention
(``output_attentions=True``): a gene's fold = n_c * mean over queries of the attention it receives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import geneattn as ga
from geneattn.errors import InputError


@pytest.fixture(scope="module")
def annotated(small_adata):
    adata = small_adata.copy()
    assert ga.tl.gene_attention(adata, ga.models.builtin_checkpoint(), groupby="label", device="cpu") is None
    return adata


def test_writes_varm_var_and_params(annotated):
    uns = annotated.uns["gene_attention"]
    cols = [str(c) for c in uns["columns"]]
    assert cols[0] == "mini-nutlin_L0H0" and len(cols) == annotated.varm["gene_attention"].shape[1]
    assert annotated.varm["gene_attention"].shape == (annotated.n_vars, len(cols))
    assert annotated.varm["gene_attention_groups"].shape == (annotated.n_vars, 2, len(cols))
    assert list(uns["groups"]) == ["0.1", "10"]
    p = uns["params"]
    assert (
        p["groupby"] == "label"
        and p["n_cells"] == 12
        and p["model_input_size"] == 256
        and p["special_tokens"]
    )
    seen = ~np.isnan(annotated.varm["gene_attention"]).all(axis=1)
    assert 100 < seen.sum() < annotated.n_vars  # genes expressed in none of the 12 cells stay NaN
    per_gene = np.nanmean(annotated.varm["gene_attention"][seen], axis=1)
    np.testing.assert_allclose(annotated.var["gene_attention_mini-nutlin"].to_numpy()[seen], per_gene)
    assert {"gene_attention_mini-nutlin_0.1", "gene_attention_mini-nutlin_10"} <= set(annotated.var.columns)


def test_get_reads_a_tidy_frame(annotated, tmp_path):
    df = ga.get.gene_attention(annotated)
    assert list(df.columns) == ["gene", "ensembl_id", "group", "model", "layer", "head", "fold_mean"]
    assert set(df["group"]) == {"__all__", "0.1", "10"} and df["fold_mean"].notna().all()
    # one row per (gene, group, layer, head) of a seen gene: as many as non-NaN cells of the matrices
    n = (
        np.isfinite(annotated.varm["gene_attention"]).sum()
        + np.isfinite(annotated.varm["gene_attention_groups"]).sum()
    )
    assert len(df) == n
    annotated.write_h5ad(tmp_path / "a.h5ad")  # everything serialises
    back = ga.get.gene_attention(__import__("anndata").read_h5ad(tmp_path / "a.h5ad"), group="10")
    pd.testing.assert_frame_equal(back, df[df["group"] == "10"].reset_index(drop=True), check_dtype=False)
    ranked = ga.get.ranked_genes(annotated)
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked["fold_mean"].is_monotonic_decreasing


def test_matches_the_study_table(annotated, small_adata):
    """Same values as the ``attention_by_gene`` table the study writes (every class, layer and head)."""
    ts = ga.models.token_settings("mini-nutlin")
    ds = ga.tokenize.tokenize(small_adata.copy(), ts.vocab, model_input_size=ts.model_input_size,
                              special_tokens=ts.special_tokens, obs_keys=["label"])  # fmt: skip
    res = ga.attention.extract({"mini-nutlin": ts.path}, ds, ts.vocab, label_key="label", store_tokens=False,
                               device="cpu")  # fmt: skip
    study = res.tables["attention_by_gene"]
    study = study[~study["ensembl_id"].astype(str).str.startswith("<")]
    mine = ga.get.gene_attention(annotated).rename(columns={"group": "label"})
    keys = ["ensembl_id", "label", "layer", "head"]
    j = study.astype({"label": str}).merge(
        mine, on=keys, how="outer", suffixes=("_study", ""), indicator=True
    )
    assert (j["_merge"] == "both").all(), j["_merge"].value_counts()
    np.testing.assert_allclose(j["fold_mean"], j["fold_mean_study"], rtol=1e-6)


def test_matches_naive_eager_attention(small_adata):
    """3 cells: each gene's fold (n_c x mean over queries of the attention it receives) from HF's eager path."""
    import torch
    from transformers import BertForMaskedLM

    adata = small_adata[:3].copy()
    ga.tl.gene_attention(adata, "mini-nutlin", device="cpu")
    ts = ga.models.token_settings("mini-nutlin")
    ds = ga.tokenize.tokenize(adata.copy(), ts.vocab, model_input_size=ts.model_input_size,
                              special_tokens=ts.special_tokens)  # fmt: skip
    model = BertForMaskedLM.from_pretrained(ts.path, attn_implementation="eager").eval()
    rows = []
    with torch.no_grad():
        for ids in ds["input_ids"]:
            att = model.bert(torch.tensor([ids]), output_attentions=True).attentions
            for layer, a in enumerate(att):  # a: [1, heads, L, L]; fold_j = sum_i A[i, j]
                fold = a[0].sum(dim=1).numpy()  # [heads, L]
                for head in range(fold.shape[0]):
                    rows += [(int(t), layer, head, float(f)) for t, f in zip(ids, fold[head], strict=True)]
    naive = pd.DataFrame(rows, columns=["token_id", "layer", "head", "fold"])
    naive = naive.groupby(["token_id", "layer", "head"], as_index=False)["fold"].mean()
    naive["ensembl_id"] = np.asarray(ts.vocab.id_to_gene)[naive["token_id"]]
    mine = ga.get.gene_attention(adata)
    j = naive.merge(mine, on=["ensembl_id", "layer", "head"], how="inner")
    assert len(j) == len(mine) > 100
    np.testing.assert_allclose(j["fold_mean"], j["fold"], rtol=1e-4, atol=1e-5)


def test_copy_leaves_the_input_alone(small_adata):
    adata = small_adata[:4].copy()
    out = ga.tl.gene_attention(adata, "mini-nutlin", key_added="ga", copy=True, device="cpu")
    assert "ga" in out.varm and "ga" not in adata.varm and "ga" not in adata.uns
    assert "ga_groups" not in out.varm and "groups" not in out.uns["ga"]


def test_bad_input(small_adata, tmp_path):
    with pytest.raises(InputError, match="not an obs column"):
        ga.tl.gene_attention(small_adata.copy(), "mini-nutlin", groupby="nope")
    with pytest.raises(InputError, match="not a model directory"):
        ga.tl.gene_attention(small_adata.copy(), tmp_path)
    with pytest.raises(InputError, match="no varm"):
        ga.get.gene_attention(small_adata)


def test_plots_return_figures(annotated):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    ranked = ga.get.ranked_genes(annotated)
    top = ga.pl.top_genes(annotated, n=5, highlight=["MDM2"])
    assert isinstance(top, Figure)
    bars = [t.get_text() for t in top.axes[0].get_yticklabels()]
    assert bars == ranked["gene"].head(5).tolist()  # in rank order (rank 1 drawn on top)
    mdm2 = int(ranked.loc[ranked["gene"] == "MDM2", "rank"].iloc[0])
    assert mdm2 <= 5 or f"MDM2: rank {mdm2}" in [t.get_text() for t in top.axes[0].texts]
    by_class = ga.pl.gene_attention(annotated, ["MDM2", "CDKN1A"])
    heights = [p.get_height() for p in by_class.axes[0].patches]
    want = ga.get.gene_attention(annotated, group="0.1")
    want = want[want["gene"] == "MDM2"]["fold_mean"].mean()
    assert heights[0] == pytest.approx(want)  # first bar: MDM2 in the first class
    plt.close("all")


def test_per_class_plot_needs_groupby(small_adata):
    adata = small_adata[:3].copy()
    ga.tl.gene_attention(adata, "mini-nutlin", device="cpu")
    with pytest.raises(InputError, match="groupby"):
        ga.pl.gene_attention(adata, ["MDM2"])
