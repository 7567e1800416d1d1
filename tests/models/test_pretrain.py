from __future__ import annotations

import json

import pytest
import torch
from _ddp_smoke import tiny_vocab
from safetensors.torch import load_file

import geneattn.models._loop as loop
from geneattn import InputError
from geneattn.models import PretrainConfig, load, pretrain


def _weights(path):
    return load_file(path / "model.safetensors")


def test_pretrain_writes_hf_dir(pretrained, vocab):
    files = {p.name for p in pretrained.iterdir()}
    assert {"config.json", "model.safetensors", "train_log.json", "vocab.json"} <= files
    log = json.loads((pretrained / "train_log.json").read_text())
    assert log["steps"] == 11 and len(log["history"]) == 11  # 88 training cells (8 held out) / 8
    assert all(h["loss"] > 0 for h in log["history"])
    lrs = [h["lr"] for h in log["history"]]
    assert lrs[0] < max(lrs) and lrs[-1] < max(lrs)  # warm-up then decay
    model = load(pretrained, vocab=vocab)
    assert type(model).__name__ == "BertForMaskedLM" and model.config.num_hidden_layers == 2
    assert model.config.max_position_embeddings == 23  # mini: the corpus's longest cell


def test_killed_run_resumes_to_the_same_model(tokens, vocab, tiny_config, pretrained, tmp_path, monkeypatch):
    cfg = PretrainConfig(epochs=1, batch_size=8, save_steps=5, eval_cells=8, config_overrides=tiny_config)

    def die(state):
        if state.step == 7:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_after_step", die)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tokens, vocab, out=tmp_path, config=cfg, seed=0)
    assert (tmp_path / "checkpoints" / "step-00000005").is_dir()
    assert not (tmp_path / "model.safetensors").exists()
    monkeypatch.setattr(loop, "_after_step", lambda state: None)
    pretrain(tokens, vocab, out=tmp_path, config=cfg, seed=0)
    a, b = _weights(tmp_path), _weights(pretrained)  # same seed, uninterrupted run
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="different run"):
        pretrain(tokens, vocab, out=tmp_path, config=cfg, seed=1)


def test_pretrain_bad_inputs(tokens, vocab, tiny_config, tmp_path):
    cfg = PretrainConfig(epochs=1, config_overrides=tiny_config)
    with pytest.raises(InputError, match="vocabulary"):
        pretrain(tokens, tiny_vocab(30), out=tmp_path, config=cfg)
    with pytest.raises(InputError, match="GeneVocab"):
        pretrain(tokens, 60, out=tmp_path, config=cfg)
    with pytest.raises(InputError, match="positions"):
        pretrain(
            tokens,
            vocab,
            out=tmp_path,
            config=PretrainConfig(max_position_embeddings=10, config_overrides=tiny_config),
        )
    with pytest.raises(InputError, match="unknown preset"):
        PretrainConfig(preset="huge")
    with pytest.raises(InputError, match="mlm_probability"):
        PretrainConfig(mlm_probability=1.5)
