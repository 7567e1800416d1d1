"""The study's control runs in parallel worker processes give exactly the runs trained one by one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file

from geneattn.models import FinetuneConfig, make_splits
from geneattn.study import _workers


def _jobs(tmp_path, tokens, pretrained, tag: str) -> list:
    labels, wells = np.asarray(tokens["label"]), np.asarray(tokens["well"])
    split, _ = make_splits(labels, wells, test_size=1 / 4, val_size=1 / 4, seed=0)
    split_path = tmp_path / "splits.parquet"
    pd.DataFrame({"cell_id": tokens["cell_id"], "split": split}).to_parquet(split_path)
    tok_dir = tmp_path / "tokens"
    if not tok_dir.exists():
        tokens.save_to_disk(str(tok_dir))
    cfg = FinetuneConfig(epochs=2, batch_size=8, learning_rate=1e-3, baselines=False, n_boot=20, device="cpu")
    return [_workers.Job(name, kind, str(tok_dir), str(split_path), str(pretrained), str(tmp_path / tag / name), None,
                         cfg, seed=seed, label_seed=11)
            for name, kind, seed in (("seed1", "real", 1000), ("permuted1", "permuted", 2000))]  # fmt: skip


def test_parallel_control_runs_equal_serial_ones(tmp_path, tokens, pretrained, monkeypatch):
    serial = dict(_workers.train_one(j) for j in _jobs(tmp_path, tokens, pretrained, "serial"))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # two workers of one thread, as on 2 cores
    parallel = _workers.run_jobs(_jobs(tmp_path, tokens, pretrained, "parallel"), device=None)
    assert set(parallel) == {"seed1", "permuted1"}
    for name in parallel:
        assert parallel[name]["accuracy"] == serial[name]["accuracy"]
        a = load_file(tmp_path / "serial" / name / "model.safetensors")
        b = load_file(tmp_path / "parallel" / name / "model.safetensors")
        assert all(np.array_equal(a[k], b[k]) for k in a)
    w1 = load_file(tmp_path / "serial" / "seed1" / "model.safetensors")
    w2 = load_file(tmp_path / "serial" / "permuted1" / "model.safetensors")
    assert any(not np.array_equal(w1[k], w2[k]) for k in w1)  # different runs, not one copied
