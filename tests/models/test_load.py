from __future__ import annotations

import json
import pickle

import pytest
import torch
from _ddp_smoke import tiny_vocab
from safetensors.torch import load_file, save_file
from transformers import BertForMaskedLM

from geneattn import InputError
from geneattn.models import check_vocab, load, make_config, save_model
from geneattn.tokenize import GeneVocab


@pytest.fixture(scope="module")
def v1_dir(tmp_path_factory):
    """A randomly initialised model with the exact released V1 config, saved as a user's checkpoint."""
    torch.manual_seed(0)
    model = BertForMaskedLM(make_config("gf-6L-30M-i2048"))
    d = tmp_path_factory.mktemp("v1")
    save_model(model, d)
    return d, model


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if k in sb)


def test_load_v1_safetensors_and_bin(v1_dir, tmp_path):
    d, model = v1_dir
    loaded = load(d, vocab=tiny_vocab(25_426))
    assert type(loaded).__name__ == "BertForMaskedLM"
    assert loaded.config._attn_implementation == "sdpa"
    assert _same(model, loaded)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_bytes((d / "config.json").read_bytes())
    torch.save(model.state_dict(), bin_dir / "pytorch_model.bin")
    assert _same(model, load(bin_dir))
    clf = load(d, task="classifier", id2label={0: "x", 1: "y"}, label2id={"x": 0, "y": 1})
    assert clf.config.num_labels == 2
    assert torch.equal(
        clf.bert.encoder.layer[5].output.dense.weight, model.bert.encoder.layer[5].output.dense.weight
    )


def test_real_v1_dictionary_pairs_with_v1_model(v1_dir, shared_dir):
    d = shared_dir / "geneformer-dictionaries" / "v1_gc30M"
    with (d / "token_dictionary_gc30M.pkl").open("rb") as f:
        size = len(pickle.load(f))  # noqa: S301 - a read-only test fixture from ../shared
    vocab = GeneVocab.from_geneformer(
        d / "token_dictionary_gc30M.pkl", d / "gene_median_dictionary_gc30M.pkl"
    )
    assert size == vocab.size == 25_426
    check_vocab(make_config("gf-6L-30M-i2048"), vocab)
    with pytest.raises(InputError, match=r"20,275.*25,426|25,426.*20,275"):
        check_vocab(make_config("Geneformer-V2-104M"), vocab)


def test_vocab_mismatch_message(v1_dir):
    d, _ = v1_dir
    with pytest.raises(InputError) as e:
        load(d, vocab=tiny_vocab(20_275))
    msg = str(e.value)
    assert "20,275" in msg and "25,426" in msg and "V1 gc30M" in msg and "V2 gc104M" in msg


def test_load_errors(tmp_path, v1_dir):
    with pytest.raises(InputError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(InputError, match="no config.json"):
        load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InputError, match="expected 'bert'"):
        load(tmp_path)
    d, _ = v1_dir
    (tmp_path / "config.json").write_bytes((d / "config.json").read_bytes())
    with pytest.raises(InputError, match="no model.safetensors"):
        load(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read model weights"):
        load(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot read model weights"):
        load(tmp_path)


def test_vocab_must_be_a_gene_vocab(v1_dir):
    with pytest.raises(InputError, match="GeneVocab"):
        load(v1_dir[0], vocab=25_426)


def _tiny_dir(tmp_path, name, keep, extra=None):
    """A tiny MLM checkpoint whose weight file keeps only the keys for which ``keep(key)`` holds."""
    torch.manual_seed(0)
    config = make_config("mini", vocab_size=30, max_position_embeddings=16)
    config.num_hidden_layers = 2
    d = tmp_path / name
    save_model(BertForMaskedLM(config), d)
    state = {k: v for k, v in load_file(d / "model.safetensors").items() if keep(k)}
    save_file({**state, **(extra or {})}, d / "model.safetensors")
    return d


def test_incomplete_weights_name_the_missing_keys(tmp_path):
    d = _tiny_dir(tmp_path, "emb", lambda k: "embeddings" in k)
    for task in ("mlm", "classifier"):
        with pytest.raises(InputError, match=r"missing from the weight file.*encoder\.layer\.0"):
            load(d, task=task)
    layer1 = _tiny_dir(tmp_path, "no-layer1", lambda k: "layer.1." not in k)
    with pytest.raises(InputError, match=r"layer\.1\."):
        load(layer1)


def test_unexpected_weights_are_errors_but_task_heads_are_not(tmp_path):
    extra = {"bert.encoder.layer.7.output.dense.weight": torch.zeros(2, 2)}
    d = _tiny_dir(tmp_path, "extra", lambda k: True, extra)
    with pytest.raises(InputError, match=r"not part of the model.*layer\.7"):
        load(d)
    # a Geneformer directory: MLM head present, no pooler; loads as either task
    d = _tiny_dir(tmp_path, "gf", lambda k: True)
    assert type(load(d, task="classifier", num_labels=2)).__name__ == "BertForSequenceClassification"
    no_head = _tiny_dir(tmp_path, "nohead", lambda k: not k.startswith("cls."))
    assert type(load(no_head, task="mlm")).__name__ == "BertForMaskedLM"
