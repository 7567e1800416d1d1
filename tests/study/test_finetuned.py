"""``geneattn run --finetuned DIR``: a study of an already fine-tuned classifier beside its pretrained model.

Two classifiers: one saved by geneattn's fine-tune (`geneattn.tl.finetune`, which is `models.finetune`
as ``geneattn finetune`` runs it) of the shipped checkpoint, and a Geneformer-format
``BertForSequenceClassification`` directory (tiny, made with transformers from the V1 dictionaries'
vocabulary size, labels in another order than the study's). Nothing is trained or copied; the
classifier is evaluated on the study's test split; the run-level null is skipped, with the reason.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import geneattn as ga
from geneattn._results import Results
from geneattn.cli import app
from geneattn.study import StudyConfig, run_study

SMALL = dict(cells_per_dose=12, model_input_size=64, n_boot=10, attribution_cells=0, top_k=10, device="cpu",
             min_cells_per_class=5, ablation_top_k=0)  # fmt: skip


def _geneformer_pair(root, id2label):
    """A tiny V1-vocabulary masked-LM and a classifier on its encoder, saved with transformers."""
    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    cfg = dict(vocab_size=ga.models.presets.V1_VOCAB_SIZE, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=37, max_position_embeddings=2048)  # fmt: skip
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(**cfg))
    clf = BertForSequenceClassification(
        BertConfig(**cfg, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    )
    clf.bert.load_state_dict(mlm.bert.state_dict(), strict=False)
    mlm.save_pretrained(root / "pretrained")
    clf.save_pretrained(root / "classifier")
    return root / "pretrained", root / "classifier"


def _naive_accuracy(classifier, tokens_dir, splits):
    """Accuracy on the test split from transformers alone (first-token pooling, the model's id2label)."""
    from transformers import BertForSequenceClassification

    clf = BertForSequenceClassification.from_pretrained(classifier).eval()
    ds = ga.tokenize.load_tokens(tokens_dir)
    test = set(splits.loc[splits["split"] == "test", "cell_id"])
    hits = []
    with torch.no_grad():
        for ids, cell, label in zip(ds["input_ids"], ds["cell_id"], ds["label"], strict=True):
            if cell in test:
                pred = clf.config.id2label[int(clf(torch.tensor([ids])).logits.argmax())]
                hits.append(pred == str(label))
    return float(np.mean(hits)), len(hits)


@pytest.fixture(scope="module")
def geneformer_study(tmp_path_factory, shared_dir):
    root = tmp_path_factory.mktemp("byo")
    pt, clf = _geneformer_pair(root, {0: "10", 1: "0.1", 2: "5", 3: "0.5"})
    dicts = shared_dir / "geneformer-dictionaries" / "v1_gc30M"
    cfg = StudyConfig(
        out=str(root / "res"), model=str(pt), dictionaries=str(dicts), finetuned=str(clf), **SMALL
    )
    run_study(cfg, progress=False)
    return Results(root / "res"), clf


def test_geneformer_classifier_is_evaluated_not_trained(geneformer_study):
    res, clf = geneformer_study
    assert not (res.model("finetuned") / "config.json").exists()  # nothing copied, nothing trained
    record = json.loads(res.model_record("finetuned").read_text())
    assert record["path"] == str(clf) and record["evaluated"] is True
    m = res.read_metrics()
    splits = pd.read_parquet(res.model("finetuned") / "splits.parquet")
    acc, n_test = _naive_accuracy(clf, res.tokens, splits)
    assert m["classification"]["n_test"] == n_test > 0
    assert m["classification"]["accuracy"] == pytest.approx(
        acc
    )  # the head was put in the study's class order
    assert "controls" in m["skipped"] and "control fine-tunes" in m["skipped"]["controls"]
    assert m["verdict"]["task_change"]["tested"] is False
    abg = pd.read_parquet(res.attention / "attention_by_gene.parquet", columns=["model"])
    assert set(abg["model"]) == {"pretrained", "finetuned"}
    assert res.read_table("run_deltas").empty and (res.root / "report.html").is_file()


def test_own_classifier_through_the_cli_and_toml(tmp_path):
    """A classifier saved by geneattn's fine-tune of the shipped checkpoint; ``finetuned`` in the TOML."""
    adata = ga.datasets.nutlin_sim(seed=3, cells_per_dose=12)
    adata = adata[adata.obs["label"].isin(["0.1", "0.5", "5", "10"])].copy()
    ft = ga.tl.finetune(
        adata, "mini-nutlin", out=tmp_path / "ft", epochs=1, baselines=False, n_boot=10, device="cpu"
    )
    toml = tmp_path / "study.toml"
    toml.write_text(
        ga.study.dump_toml({**SMALL, "finetuned": str(ft.model_dir), "out": str(tmp_path / "res")})
    )
    r = CliRunner().invoke(app, ["run", "--config", str(toml)])
    assert r.exit_code == 0, r.output
    res = Results(tmp_path / "res")
    m = res.read_metrics()
    assert m["classification"]["evaluated_only"]["model"] == str(ft.model_dir)
    assert "controls" in m["skipped"] and res.read_table("run_deltas").empty
    assert (
        len(res.read_table("head_ablation")) > 1
    )  # every head ablated on the test cells: no training needed
    assert StudyConfig.from_dict(ga.study.load_toml(res.root / "config.toml")).finetuned == str(ft.model_dir)


@pytest.mark.slow
def test_labels_that_are_not_the_studys_are_said(tmp_path, shared_dir):
    pt, clf = _geneformer_pair(tmp_path, {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2", 3: "LABEL_3"})
    dicts = shared_dir / "geneformer-dictionaries" / "v1_gc30M"
    toml = tmp_path / "small.toml"
    toml.write_text(ga.study.dump_toml(SMALL))
    args = ["run", "--config", str(toml), "--out", str(tmp_path / "res"), "--model", str(pt), "--dictionaries",
            str(dicts), "--finetuned", str(clf)]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = Results(tmp_path / "res")
    record = json.loads(res.model_record("finetuned").read_text())
    assert record["evaluated"] is False and "LABEL_0" in record["reason"]
    m = res.read_metrics()
    assert {"controls", "ablation"} <= set(m["skipped"]) and res.read_table("head_ablation").empty


def test_missing_finetuned_is_refused_up_front(tmp_path):
    r = CliRunner().invoke(
        app, ["run", "--out", str(tmp_path / "res"), "--finetuned", str(tmp_path / "nope")]
    )
    assert r.exit_code == 2 and "fine-tuned model directory not found" in r.output
    assert not (tmp_path / "res").exists()
