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
