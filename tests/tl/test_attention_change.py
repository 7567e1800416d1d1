"""`geneattn.tl.finetune` (the study's recipe) and `geneattn.tl.attention_change` against `attention.compare`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import geneattn as ga
from geneattn.errors import InputError


def test_finetune_uses_the_recipe_and_keeps_the_tokenizer(finetuned):
    d = finetuned.model_dir
    rec = json.loads((d / "recipe.json").read_text())
    want = ga.models.recipe(epochs=1, baselines=False, n_boot=10, device="cpu")
    assert rec["config"]["learning_rate"] == 1e-3 and rec["config"]["select_by"] == "macro_f1"
    assert rec["config"] == json.loads(json.dumps(__import__("dataclasses").asdict(want)))
    assert rec["model_input_size"] == 256 and (d / "vocab.json").is_file()
    # the classifier is a model of ours with its tokenizer: the tools take it as it is
    ts = ga.models.token_settings(d)
    assert ts.model_input_size == 256 and ts.special_tokens and not ts.geneformer
    assert set(finetuned.splits["split"]) <= {"train", "val", "test"}


@pytest.fixture(scope="module")
def changed(small_adata, finetuned):
    adata = small_adata.copy()
    ga.tl.attention_change(adata, "mini-nutlin", finetuned.model_dir, groupby="label", bins=50, device="cpu")
    return adata


def test_matches_compare_on_the_same_tokens(changed, small_adata, finetuned):
    ts = ga.models.token_settings("mini-nutlin")
    ds = ga.tokenize.tokenize(small_adata.copy(), ts.vocab, model_input_size=ts.model_input_size,
                              special_tokens=ts.special_tokens, obs_keys=["label"])  # fmt: skip
    res = ga.attention.extract({"pretrained": ts.path, "finetuned": finetuned.model_dir}, ds, ts.vocab,
                               store_tokens=False, device="cpu")  # fmt: skip
    for group in ("__all__", "10"):
        want = ga.attention.compare(res, bins=50, label=group)["head_change"]
        got = ga.get.attention_change(changed, group=group).drop(columns="group")
        pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)
    gene = ga.attention.compare(res, bins=50)["gene_change"]
    got = ga.get.attention_change(changed, by="gene")
    j = gene.merge(got, on=["ensembl_id", "metric", "layer", "head"], suffixes=("", "_got"))
    assert len(j) == len(got) > 100
    np.testing.assert_allclose(j["pct_change_got"], j["pct_change"])
    # per gene over heads: 100 * (mean fine-tuned / mean pretrained - 1), naively for MDM2
    mdm2 = gene[(gene["gene"] == "MDM2") & (gene["metric"] == "fold")]
    naive = 100 * (mdm2["other_mean"].mean() / mdm2["ref_mean"].mean() - 1)
    assert changed.var.loc["MDM2", "attention_change_fold"] == pytest.approx(naive)


def test_params_and_plots(changed):
    p = changed.uns["attention_change"]["params"]
    assert p["groupby"] == "label" and p["bins"] == 50 and p["n_cells"] == 12
    assert set(changed.uns["attention_change"]["head_change"]["group"]) == {"__all__", "0.1", "10"}
    fig = ga.pl.attention_change(changed, marks={"MDM2": 40})
    assert isinstance(fig, __import__("matplotlib").figure.Figure)
    __import__("matplotlib.pyplot").pyplot.close(fig)


def test_recipe_is_the_study_recipe():
    """`finetune_config` (geneattn run) is `models.recipe`; defaults of a mini model, Geneformer and pbmc68k."""
    from geneattn.study import StudyConfig
    from geneattn.study._stage import ALL, ConfigView
    from geneattn.study.training import finetune_config

    cfg = StudyConfig(out="unused").resolved()
    assert finetune_config(ConfigView(cfg, ALL, "t")) == ga.models.recipe(epochs=4, device=None)
    mini, gf, pbmc = ga.models.recipe(), ga.models.recipe(geneformer=True), ga.models.recipe("pbmc68k")
    assert (mini.learning_rate, gf.learning_rate, pbmc.learning_rate) == (1e-3, 5e-5, 3e-4)
    assert (pbmc.epochs, pbmc.pooling, pbmc.head_learning_rate) == (25, "mean", 3e-3)
    assert mini.select_by == "macro_f1" and mini.epochs == 4
    assert ga.models.recipe(learning_rate=None).learning_rate == 1e-3  # None: the recipe's
    with pytest.raises(InputError, match="unknown FinetuneConfig"):
        ga.models.recipe(lr=1)
