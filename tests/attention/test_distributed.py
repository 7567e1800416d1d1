"""Two CPU processes (gloo) give the same tables and token store as one process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch.multiprocessing as mp
from _attention_helpers import distributed_worker, tiny_model, tiny_tokens, tiny_vocab

from geneattn.attention import AttentionResult, extract


def test_two_processes_equal_one(tmp_path):
    mp.spawn(
        distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "dist")), nprocs=2, join=True
    )
    two = AttentionResult.load(tmp_path / "dist")
    one = extract({"pt": tiny_model(0), "ft": tiny_model(1)}, tiny_tokens(11, seed=5), tiny_vocab(),
                  batch_size=2, device="cpu", length_bins=4)  # fmt: skip
    for name, df in one.tables.items():
        pd.testing.assert_frame_equal(df, two.tables[name], check_exact=False, rtol=1e-4, atol=1e-5)
    for m in ("pt", "ft"):
        np.testing.assert_allclose(two.token_logfold[m], one.token_logfold[m], atol=1e-5)
    np.testing.assert_array_equal(two.token_index["offsets"], one.token_index["offsets"])
    assert not list((tmp_path / "dist").glob(".tmp-*"))
