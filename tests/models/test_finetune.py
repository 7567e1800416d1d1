from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from geneattn import InputError
from geneattn.models import FinetuneConfig, finetune, load, make_splits
from geneattn.models.metrics import group_metrics

GROUPS = {"ab": ["a", "b"], "c": ["c"]}


@pytest.fixture(scope="module")
def result(tokens, pretrained, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "clf"
    cfg = FinetuneConfig(epochs=2, batch_size=8, learning_rate=1e-3, freeze_layers=1)
    return finetune(tokens, model=pretrained, out=out, groups=GROUPS, config=cfg, seed=0)


def test_finetune_outputs(result, pretrained):
    out = result.model_dir
    assert {"config.json", "model.safetensors", "metrics.json", "splits.parquet"} <= {
        p.name for p in out.iterdir()
    }
    model = load(out)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"} and model.config.label2id["c"] == 2
    # the frozen first layer is the pretrained one
    base = load(pretrained)
    assert torch.equal(
        model.bert.encoder.layer[0].output.dense.weight, base.bert.encoder.layer[0].output.dense.weight
    )
    assert not torch.equal(
        model.bert.encoder.layer[1].output.dense.weight, base.bert.encoder.layer[1].output.dense.weight
    )
    m = json.loads((out / "metrics.json").read_text())
    for key in (
        "accuracy",
        "macro_f1",
        "per_class_recall",
        "confusion",
        "groups",
        "baselines",
        "n_train",
        "n_val",
        "n_test",
    ):
        assert key in m
    assert m["n_train"] + m["n_val"] + m["n_test"] == 96
    assert np.asarray(m["confusion"]["matrix"]).sum() == m["n_test"]
    assert m["groups"]["confusion"]["labels"] == ["ab", "c"]
    assert set(m["baselines"]) == {"majority", "logreg", "length"}
    assert m["baselines"]["logreg"]["accuracy"] > 0.6  # class-specific genes are easy for a linear model
    assert m["pooling"] == "first" and model.config.geneattn_pooling == "first"  # tokens without <cls>
    assert m["n_test_units"] == 3 and m["bootstrap"]["unit"] == "well"
    assert m["bootstrap"]["n_boot"] == 0 and m["accuracy_ci"] is None  # one test well per class: no interval
    assert m["flags"]["learned"] is None and m["flags"]["best_epoch_zero"] == (m["best_epoch"] == 0)
    assert [t["n_cells"] for t in m["by_genes_expressed"]] and sum(
        t["n_cells"] for t in m["by_genes_expressed"]
    ) == m["n_test"]


def test_splits_grouped_by_well(result, tokens):
    assert result.metrics["split_grouped_by"] == "well"
    splits = pd.read_parquet(result.model_dir / "splits.parquet")
    assert list(splits.columns[:2]) == ["cell_id", "split"] and len(splits) == 96
    splits["well"] = tokens["well"]
    assert (splits.groupby("well")["split"].nunique() == 1).all()


def test_same_seed_same_metrics(result, tokens, pretrained, tmp_path):
    cfg = FinetuneConfig(epochs=2, batch_size=8, learning_rate=1e-3, freeze_layers=1)
    again = finetune(tokens, model=pretrained, out=tmp_path, groups=GROUPS, config=cfg, seed=0)
    assert again.metrics == result.metrics
    assert again.splits.equals(result.splits)


def test_group_fallback_warns():
    labels = np.array(["a"] * 20 + ["b"] * 20)
    groups = np.array(["w1"] * 20 + [f"w{i % 4 + 2}" for i in range(20)])  # class a in one well only
    with pytest.warns(UserWarning, match="cannot split by group"):
        split, grouped = make_splits(labels, groups, seed=0)
    assert not grouped and set(split) == {"train", "val", "test"}


def test_group_metrics_map_fine_to_coarse():
    m = group_metrics(["a", "b", "c", "d"], ["b", "c", "c", "a"], GROUPS)
    assert m["n_cells"] == 3  # d is in no group
    assert m["accuracy"] == pytest.approx(2 / 3)


def test_finetune_bad_inputs(tokens, pretrained, tmp_path):
    cfg = FinetuneConfig(epochs=1, baselines=False)
    with pytest.raises(InputError, match="label column 'dose'"):
        finetune(tokens, model=pretrained, out=tmp_path, label_key="dose", config=cfg)
    one = tokens.map(lambda r: {"label": "a"})
    with pytest.raises(InputError, match="one class"):
        finetune(one, model=pretrained, out=tmp_path, config=cfg)
    with pytest.raises(InputError, match="not labels"):
        finetune(tokens, model=pretrained, out=tmp_path, groups={"x": ["zzz"]}, config=cfg)
    with pytest.raises(InputError, match="freeze_layers"):
        finetune(tokens, model=pretrained, out=tmp_path, config=FinetuneConfig(freeze_layers=9))
    long = tokens.map(lambda r: {"input_ids": r["input_ids"] * 3, "length": r["length"] * 3})
    with pytest.raises(InputError, match="positions"):
        finetune(long, model=pretrained, out=tmp_path, config=cfg)
    with pytest.raises(InputError, match="does not exist"):
        finetune(tokens, model=tmp_path / "missing", out=tmp_path, config=cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big = tokens.map(lambda r: {"input_ids": [*r["input_ids"][:-1], 99]})
    with pytest.raises(InputError, match="vocabulary"):
        finetune(big, model=pretrained, out=tmp_path, config=cfg)
