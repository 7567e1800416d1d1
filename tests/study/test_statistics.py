"""The stats stage end to end on a tiny results directory (real tokens, tiny BERTs, real attention
extraction), through the library and through ``geneattn stats``: same tables, same metrics.json."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _results_dir import as_study
from _stats_synth import make_counts, tiny_bert
from geneattn._results import Results
from geneattn.stats import attribution as at
from geneattn.stats import confounds as cf
from geneattn.stats import significance as sg
from geneattn.stats.de import study_de
from geneattn.study import stats_of_results
from geneattn.study.inputs import load_inputs
from geneattn.tokenize import GeneVocab


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from datasets import Dataset
    from geneattn.attention import extract

    root = tmp_path_factory.mktemp("results")
    res = Results(root)
    ad = make_counts(n_cells=48, n_genes=30, n_markers=4, n_wells=8, seed=2)
    x = ad.X.toarray()
    ad.obs["n_genes"] = (x > 0).sum(axis=1)  # every expressed gene is in the input here (no cut)
    ids = [(2 + np.argsort(-row, kind="stable")[: int((row > 0).sum())]).tolist() for row in x]
    ds = Dataset.from_dict({"input_ids": ids, "length": [len(i) for i in ids], "cell_id": list(ad.obs_names),
                            "label": ad.obs["label"].astype(str).tolist()})  # fmt: skip
    ds.save_to_disk(str(res.tokens))
    ens = list(ad.var["ensembl_id"])
    vocab = GeneVocab({"<pad>": 0, "<mask>": 1, **{e: 2 + i for i, e in enumerate(ens)}}, dict.fromkeys(ens, 1.0),
                      symbols=dict(zip(ens, ad.var_names, strict=True)))  # fmt: skip
    vocab.to_json(res.tokens / "vocab.json")
    m0, m1 = tiny_bert(0, vocab.size), tiny_bert(1, vocab.size)
    for name, m in (("pretrained", m0), ("finetuned", m1)):
        m.save_pretrained(res.model(name))
    (res.model("finetuned") / "metrics.json").write_text(json.dumps({"accuracy": 0.5}))
    split = pd.DataFrame(
        {"cell_id": list(ad.obs_names), "split": "test", "label": ad.obs["label"].astype(str)}
    )
    split.to_parquet(res.model("finetuned") / "splits.parquet")
    extract({"pretrained": m0, "finetuned": m1}, ds, vocab, out=res.attention, batch_size=16, device="cpu")
    res.write_table("de", study_de(ad))
    res.write_h5ad(res.qc_h5ad, ad)
    as_study(res, n_permuted_runs=0, n_boot=20)
    return res


def test_inputs_gene_map_and_table_route(results):
    inp = load_inputs(results)
    assert set(inp.stores) == {"pretrained", "finetuned"}
    assert inp.gene_map[2] == "G0"  # token id -> ensembl id -> var_names
    # length bins of the engine == ours: the table route equals the token-store route
    t, s = inp.tables, inp.stores["finetuned"]
    bins = cf.length_bins(s.lengths, 10)
    tab = cf.residual_from_tables(t["attention_by_gene"], t["attention_by_position_length"], offsets=s.offsets,
                                  token_ids=s.token_ids, cell_bins=bins, model="finetuned")  # fmt: skip
    gs = cf.gene_scores(s, cell_bins=bins, mean_heads=False)
    m = tab.merge(gs, on=["layer", "head", "token_id"], suffixes=("_t", "_s"))
    assert len(m) == len(gs)
    np.testing.assert_allclose(m.residual_t, m.residual_s, atol=1e-4)


def test_inputs_n_genes_expressed_and_well_check(results):
    inp = load_inputs(results)
    store = inp.stores["finetuned"]
    obs = inp.adata.obs
    ids = np.asarray(store.cell_ids).astype(str)
    np.testing.assert_array_equal(inp.n_genes(store), obs.loc[ids, "n_genes"].to_numpy(float))
    x = inp.adata.X.toarray()
    got = inp.expressed(store, ["G1", "G3", "absent"])
    assert set(got) == {"G1", "G3"}
    for j, g in ((1, "G1"), (3, "G3")):
        np.testing.assert_array_equal(got[g], x[obs.index.get_indexer(ids), j] > 0)
    wc = inp.well_confounds()
    assert set(wc["model"]) == {"pretrained", "finetuned"} and set(wc["adjustment"]) == {"none", "n_genes"}
    assert wc["n_wells"].eq(8).all() and wc["rho_pc1_log_dose"].isna().all()  # labels a/b: no dose


def test_stats_stage_writes_tables_metrics_and_annotations(results):
    summary = stats_of_results(str(results.root), n_boot=20, attribution_cells=6, top_k=5)
    assert "verdict" in summary
    out = {
        n: results.read_table(n) for n in ("agreement", "confounds", "significance", "methods", "change_ci")
    }
    assert all(len(df) > 0 for df in out.values())
    assert (
        results.read_table("attribution").attrs["params"]["attribution_cells"] == 6
    )  # parameters beside every table
    assert out["methods"].attrs["params"]["stage"] == "stats"
    assert list(out["confounds"].columns) == cf.CONFOUND_COLUMNS
    assert set(out["confounds"].score_type) == {"raw", "fold", "residual"}
    conf = out["confounds"]
    assert (conf["length_variable"] == "n_genes").all()  # obs n_genes, not the token count
    np.testing.assert_allclose(conf["spearman_vs_length"], conf["spearman_vs_tokens"])  # no cell was cut here
    wells = results.read_table("confound_wells")
    assert len(wells) == 4 and set(results.read_metrics()["confound_wells"]) == {
        f"{m}/{a}" for m in ("pretrained", "finetuned") for a in ("none", "n_genes")
    }
    assert results.read_metrics()["input"] == {}  # no tokenize stage ran here
    assert list(out["significance"].columns) == sg.SIGNIFICANCE_COLUMNS
    assert {"paired_gene", "paired_head", "between_class"} <= set(out["significance"].test)
    m = out["methods"]
    assert list(m.columns) == [*at.METHODS_COLUMNS, "uses_labels"]
    assert (
        not m.set_index("method").loc["detection", "uses_labels"]
        and m.set_index("method").loc["de", "uses_labels"]
    )
    want = {"attention_raw", "attention_residual", "rollout", "grad_input", "integrated_gradients", "deletion_prob", "deletion_cosine", "de",
            "mean_rank", "detection"}  # fmt: skip
    assert want <= set(m.method)
    assert m[m.method == "de"].auroc_planted.iloc[0] > 0.9
    metrics = results.read_metrics()
    assert metrics["classification"] == {"accuracy": 0.5}
    assert metrics["significance"]["calibration"]["unit"] == "well/replicate"
    cells = results.read_cells()
    cols = list(cells.uns["gene_attention"]["columns"])
    assert cells.varm["gene_attention"].shape == (cells.n_vars, len(cols)) and "finetuned_L0H0" in cols
    assert np.isfinite(cells.var["gene_attention_finetuned"]).sum() > 10


def test_cli_stats_same_schema(results, tmp_path):
    from typer.testing import CliRunner

    from geneattn.cli import app

    before = set(results.read_metrics())
    x0 = results.read_qc().X.copy()
    r = CliRunner().invoke(app, ["stats", str(results.root), "--attribution-cells", "0", "--top-k", "4"])
    assert r.exit_code == 0, r.output
    assert set(results.read_metrics()) == before  # one metrics.json schema
    assert (results.read_cells().X != x0).nnz == 0  # counts untouched
    assert "rollout" not in set(pd.read_parquet(results.table_path("methods")).method)
    r = CliRunner().invoke(app, ["stats", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert r.exit_code == 2 and "not a geneattn results directory" in r.output
