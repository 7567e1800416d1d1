"""compare(), top_genes(), gene_attention() and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _attention_helpers import tiny_model, tiny_tokens, tiny_vocab

from geneattn.attention import compare, extract, gene_attention, position_bins, top_genes
from geneattn.errors import InputError


@pytest.fixture(scope="module")
def result():
    models = {"pretrained": tiny_model(0), "finetuned": tiny_model(1, classifier=True)}
    return extract(
        models, tiny_tokens(12, seed=3), tiny_vocab(), batch_size=5, device="cpu", store_tokens=False
    )


def test_position_bins():
    np.testing.assert_array_equal(position_bins(25, 60), [0, 25, 50, 61])
    np.testing.assert_array_equal(position_bins([0, 5, 30], 60), [0, 5, 30])
    with pytest.raises(InputError):
        position_bins([5, 2], 10)


def test_compare_head_and_gene_change(result):
    ch = compare(result, bins=10)
    head, gene = ch["head_change"], ch["gene_change"]
    assert {"layer", "head", "bin_start", "bin_end", "metric", "ref_mean", "other_mean", "pct_change"} <= set(
        head.columns
    )
    # brute force one cell of the table: token-weighted fold mean over positions 10..19, layer 1 head 2
    pos = result.tables["attention_by_position"]
    pos = pos[(pos.label == "__all__") & (pos.layer == 1) & (pos["head"] == 2) & pos.position.between(10, 19)]
    means = {m: np.average(d["fold_mean"], weights=d["n_cells"]) for m, d in pos.groupby("model")}
    row = head[
        (head.layer == 1) & (head["head"] == 2) & (head.bin_start == 10) & (head.metric == "fold")
    ].iloc[0]
    assert row.bin_end == 19
    np.testing.assert_allclose(row["pct_change"], 100 * (means["finetuned"] / means["pretrained"] - 1))
    assert set(head.metric) == {"fold", "norm"}
    g = gene[(gene.metric == "norm")].iloc[0]
    np.testing.assert_allclose(g["pct_change"], 100 * (g["other_mean"] / g["ref_mean"] - 1))
    assert (
        len(gene[gene.metric == "fold"])
        == len(result.tables["attention_by_gene"].query("label == '__all__'")) // 2
    )
    with pytest.raises(InputError):
        compare(result, reference="nope")


def test_top_genes(result):
    abg = result.tables["attention_by_gene"]
    top = top_genes(abg, k=5, model="finetuned", shrink=False, min_cells=1)
    assert len(top) == 5 and list(top["rank"]) == [1, 2, 3, 4, 5] and (top["layer"] == -1).all()
    sub = abg[(abg.model == "finetuned") & (abg.label == "__all__")]
    overall = sub.groupby("token_id")["fold_mean"].mean().sort_values(ascending=False)
    assert list(top["token_id"]) == list(overall.index[:5])
    per = top_genes(result, k=3, model="pretrained", per_head=True, shrink=False, min_cells=1)
    assert len(per) == 3 * 8 and set(per["rank"]) == {1, 2, 3}
    one = top_genes(abg, k=2, model="pretrained", layer=0, head=1, by="norm_mean", shrink=False, min_cells=1)
    best = sub.iloc[:0]
    best = abg[(abg.model == "pretrained") & (abg.label == "__all__") & (abg.layer == 0) & (abg["head"] == 1)]
    assert one["token_id"].iloc[0] == best.sort_values("norm_mean").iloc[-1]["token_id"]
    assert top["gene"].str.startswith(("G", "ENSG")).all()
    with pytest.raises(InputError):
        top_genes(abg)  # two models, none chosen


def test_top_genes_shrunken_vs_naive_and_rare_genes(result):
    from geneattn.stats.shrinkage import MIN_CELLS, eb_shrink

    abg = result.tables["attention_by_gene"]
    sub = abg[
        (abg.model == "finetuned")
        & (abg.label == "__all__")
        & ~abg["ensembl_id"].astype(str).str.startswith("<")
    ]
    top = top_genes(abg, k=10, model="finetuned", min_cells=1)
    # naive: per (gene, head) moderated se² from fold_sd and n_cells; mean over heads; EB over genes
    df = (sub["n_cells"] - 1).clip(lower=0)
    pooled = (df * sub["fold_sd"] ** 2).sum() / df.sum()
    se2 = ((df * sub["fold_sd"] ** 2 + 4.0 * pooled) / (df + 4.0)) / sub["n_cells"].clip(lower=1)
    g = sub.assign(se2=se2).groupby("token_id").agg(m=("fold_mean", "mean"), se2=("se2", "mean"))
    g["shr"] = eb_shrink(g["m"].to_numpy(), g["se2"].to_numpy())[0]
    want = g.sort_values("shr", ascending=False, kind="stable")
    assert list(top["token_id"]) == list(want.index[:10])
    np.testing.assert_allclose(top["fold_mean_shrunken"], want["shr"].iloc[:10])
    # a table without the sd column: genes in fewer than MIN_CELLS cells are left out instead
    plain = top_genes(abg.drop(columns=["fold_sd"]), k=10, model="finetuned", min_cells=1)
    assert (plain["n_cells"] >= MIN_CELLS).all() and plain["fold_mean_shrunken"].isna().all()
    default = top_genes(abg, k=10, model="finetuned")
    assert (default["n_cells"] >= MIN_CELLS).all()


def test_gene_attention_h5ad(result, tmp_path):
    ad = pytest.importorskip("anndata")
    vocab = tiny_vocab()
    genes = vocab.id_to_gene[2:]
    adata = ad.AnnData(
        np.zeros((3, len(genes)), np.float32),
        var=pd.DataFrame({"ensembl_id": genes}, index=[f"s{i}" for i in range(len(genes))]),
    )
    gene_attention(adata, result, key_added="gene_attention")
    mat = adata.varm["gene_attention"]
    cols = list(adata.uns["gene_attention"]["columns"])
    assert mat.shape == (len(genes), 16) and cols[0] == "finetuned_L0H0"
    abg = result.tables["attention_by_gene"]
    want = abg[
        (abg.model == "pretrained")
        & (abg.label == "__all__")
        & (abg.layer == 1)
        & (abg["head"] == 3)
        & (abg.token_id == 5)
    ]
    np.testing.assert_allclose(mat[3, cols.index("pretrained_L1H3")], want["fold_mean"].iloc[0])
    absent = ~np.isin(np.arange(2, 40), abg.token_id.unique())
    assert np.isnan(mat[absent]).all()
    pt_cols = [i for i, c in enumerate(cols) if c.startswith("pretrained_")]
    np.testing.assert_allclose(adata.var["gene_attention_pretrained"], mat[:, pt_cols].mean(1))
    other = gene_attention(adata, result, key_added="again", copy=True)
    assert "again" in other.varm and "again" not in adata.varm
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.varm["gene_attention"], mat)
    assert int(back.uns["gene_attention"]["params"]["n_cells"]) == 12


def test_cli(tmp_path):
    from typer.testing import CliRunner

    from geneattn.attention import AttentionResult
    from geneattn.cli import app

    tiny_tokens(5).save_to_disk(str(tmp_path / "tokens"))
    for i, n in enumerate(["pt", "ft"]):
        tiny_model(i).save_pretrained(tmp_path / n)
    args = ["attention", str(tmp_path / "tokens"), "--model", str(tmp_path / "pt"), "--model", str(tmp_path / "ft"),
            "--name", "pretrained", "--name", "finetuned", "--out", str(tmp_path / "att"), "--batch-size", "2",
            "--device", "cpu"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = AttentionResult.load(tmp_path / "att")
    assert set(res.tables["head_norms"]["model"]) == {"pretrained", "finetuned"}
    assert res.token_logfold["pretrained"].shape[0] == res.token_index["offsets"][-1]
    bad = CliRunner().invoke(app, [*args[:6], "--name", "x", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2
