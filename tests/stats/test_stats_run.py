"""End to end: a tiny results directory (real tokens, tiny BERTs, real attention extraction) -> run_stats / CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from _stats_synth import make_counts, tiny_bert

from geneattn.stats import attribution as at
from geneattn.stats import confounds as cf
from geneattn.stats import significance as sg
from geneattn.stats.run import load_inputs, run_stats


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from datasets import Dataset
    from geneattn.attention import extract

    root = tmp_path_factory.mktemp("results")
    ad = make_counts(n_cells=48, n_genes=30, n_markers=4, n_wells=8, seed=2)
    x = ad.X.toarray()
    ids = [(2 + np.argsort(-row, kind="stable")[: int((row > 0).sum())]).tolist() for row in x]
    ds = Dataset.from_dict(
        {
            "input_ids": ids,
            "length": [len(i) for i in ids],
            "cell_id": list(ad.obs_names),
            "label": ad.obs["label"].astype(str).tolist(),
        }
    )
    ds.save_to_disk(str(root / "tokens"))
    n_vocab = 2 + ad.n_vars
    m0, m1 = tiny_bert(0, n_vocab), tiny_bert(1, n_vocab)
    for name, m in (("pretrained", m0), ("finetuned", m1)):
        m.save_pretrained(root / "models" / name)
    vocab = SimpleNamespace(
        id_to_gene=np.array(["<pad>", "<mask>", *ad.var["ensembl_id"]]), symbols={}, pad_id=0
    )
    extract(
        {"pretrained": m0, "finetuned": m1}, ds, vocab, out=root / "attention", batch_size=16, device="cpu"
    )
    ad.write_h5ad(root / "cells.h5ad")
    (root / "metrics.json").write_text(json.dumps({"classification": {"accuracy": 0.5}}))
    return root


def test_inputs_gene_map(results):
    inp = load_inputs(results)
    assert set(inp.stores) == {"pretrained", "finetuned"}
    assert inp.gene_map[2] == "G0"  # token id -> ensembl id -> var_names
    # length bins of the engine == ours: the table route equals the token-store route
    t = inp.tables
    s = inp.stores["finetuned"]
    bins = cf.length_bins(s.lengths, 10)
    tab = cf.residual_from_tables(
        t["attention_by_gene"],
        t["attention_by_position_length"],
        s.offsets,
        s.token_ids,
        bins,
        model="finetuned",
    )
    gs = cf.gene_scores(s, cell_bins=bins, mean_heads=False)
    m = tab.merge(gs, on=["layer", "head", "token_id"], suffixes=("_t", "_s"))
    assert len(m) == len(gs)
    np.testing.assert_allclose(m.residual_t, m.residual_s, atol=1e-4)


def test_run_stats_writes_tables(results):
    out = run_stats(
        results,
        seed=0,
        k=5,
        n_boot=20,
        attribution_cells=6,
        deletion_cells=2,
        deletion_top_k=3,
        ig_steps=4,
        umap=False,
    )
    for name in ("de", "agreement", "confounds", "significance", "methods", "change_ci"):
        df = pd.read_parquet(results / "tables" / f"{name}.parquet")
        assert len(df) == len(out[name]) > 0, name
    de = out["de"]
    assert set(de["method"]) == {"wilcoxon", "wilcoxon_ref", "pseudobulk"}
    assert set(de[(de.method == "wilcoxon") & (de.group == "b")].gene[:4]) == {"G0", "G1", "G2", "G3"}
    assert list(out["confounds"].columns) == cf.CONFOUND_COLUMNS
    assert set(out["confounds"].score_type) == {"raw", "fold", "residual"}
    assert list(out["significance"].columns) == sg.SIGNIFICANCE_COLUMNS
    assert {"paired_gene", "paired_head", "between_class"} <= set(out["significance"].test)
    m = out["methods"]
    assert list(m.columns) == at.METHODS_COLUMNS
    assert {
        "attention",
        "rollout",
        "grad_input",
        "integrated_gradients",
        "deletion_prob",
        "deletion_cosine",
        "de",
        "mean_rank",
        "detection",
    } <= set(m.method)
    assert m[m.method == "de"].auroc_planted.iloc[0] > 0.9
    metrics = json.loads((results / "metrics.json").read_text())
    assert metrics["classification"] == {"accuracy": 0.5}
    assert "null_calibration" in metrics["stats"] and metrics["stats"]["seed"] == 0


def test_cli_stats(results, tmp_path):
    import anndata as ad
    from typer.testing import CliRunner

    from geneattn.cli import app

    x0 = ad.read_h5ad(results / "cells.h5ad").X.copy()
    args = ["stats", str(results), "--attribution-cells", "0", "--no-umap", "--n-boot", "10", "--annotate"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (results / "tables" / "methods.parquet").is_file()
    annotated = ad.read_h5ad(results / "cells.h5ad")
    assert "de" in annotated.uns and "lognorm" not in annotated.layers
    assert (annotated.X != x0).nnz == 0
    # user errors: a one-line message (exit code 2 is app.py's mapping of InputError)
    r = CliRunner().invoke(app, ["stats", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "does not exist" in (r.output + str(r.exception))
    r = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert r.exit_code != 0 and "cells.h5ad" in (r.output + str(r.exception))
