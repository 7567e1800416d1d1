from __future__ import annotations

import pytest
import torch

from geneattn.models._loop import autocast
from geneattn.models._throughput import Throughput


def test_throughput_skips_the_first_step_and_stops_after_the_window(monkeypatch):
    clock = iter([0.0, 5.0] + [t for i in range(12) for t in (10.0 + i, 10.5 + i)])
    monkeypatch.setattr("geneattn.models._throughput.time.perf_counter", lambda: next(clock))
    meter = Throughput(steps=10)
    for _ in range(13):
        meter.start()
        meter.stop(n_cells=8, n_tokens=800)
    r = meter.result
    # the 5 s warm-up step is left out: 10 steps of 0.5 s
    assert r == {"steps_measured": 10, "seconds_per_step": 0.5, "cells_per_s": 16.0, "tokens_per_s": 1600.0}


def test_throughput_of_a_short_run():
    meter = Throughput(steps=10)
    for i in range(3):
        meter.start()
        meter.stop(n_cells=4, n_tokens=40, last=i == 2)
    assert meter.result["steps_measured"] == 2
    assert meter.result["tokens_per_s"] == pytest.approx(10 * meter.result["cells_per_s"], rel=1e-3)


def test_autocast_is_a_noop_on_cpu():
    with autocast(torch.device("cpu")):
        x = torch.ones(2, 2) @ torch.ones(2, 2)
    assert x.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_autocast_bf16_on_cuda():
    dev = torch.device("cuda")
    with autocast(dev):
        x = torch.ones(4, 4, device=dev) @ torch.ones(4, 4, device=dev)
    assert x.dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)


def test_param_groups_give_each_prefix_its_rate_and_skip_decay_on_norms():
    from _ddp_smoke import TINY
    from transformers import BertForSequenceClassification

    from geneattn.models import make_config
    from geneattn.models._loop import LoopSpec, _lr_factor, _param_groups

    config = make_config("mini", vocab_size=40, max_position_embeddings=16, num_labels=3)
    for k, v in TINY.items():
        setattr(config, k, v)
    model = BertForSequenceClassification(config)
    model.bert.encoder.layer[0].requires_grad_(requires_grad=False)
    rates = (("classifier.", 1e-2), ("bert.pooler.", 1e-2), ("bert.embeddings.word_embeddings.", 3e-2))
    spec = LoopSpec(epochs=1, learning_rate=1e-4, weight_decay=0.1, warmup_steps=None, warmup_ratio=0.1,
                    max_grad_norm=1.0, save_steps=0, keep_checkpoints=1, seed=0, rates=rates)  # fmt: skip
    groups = _param_groups(model, spec)
    where = {id(p): g for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        if name.startswith("bert.encoder.layer.0."):
            assert id(p) not in where  # frozen
            continue
        g = where[id(p)]
        want = next((r for pre, r in rates if name.startswith(pre)), 1e-4)
        assert g["peak_lr"] == want, name
        assert g["weight_decay"] == (0.0 if p.ndim < 2 or "LayerNorm" in name else 0.1), name
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    # linear warm-up then linear decay to 0
    factors = [_lr_factor(s, 100, 10) for s in range(100)]
    assert factors[0] == 0.1 and factors[9] == 1.0 and factors[10] == 1.0 and factors[-1] == 1 / 90
