"""``extract(precision=...)``: bf16 autocast for the model's layers, float32 attention statistics.

Run on the CPU (torch's CPU bf16 autocast); the CUDA route is in test_cuda.py. The unit of comparison
is one (layer, head, gene, label) row of ``attention_by_gene`` of a tiny random BERT.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _attention_helpers import tiny_model, tiny_tokens
from scipy.stats import spearmanr

from geneattn.attention import extract
from geneattn.attention.extract import precision_context
from geneattn.attention.interface import collecting
from geneattn.errors import InputError

GENE_STATS = ["fold_mean", "logfold_mean", "norm_mean", "fnorm_mean", "first_mean"]
MIN_RHO = 0.99  # bf16 vs fp32, Spearman over the rows of attention_by_gene (measured: > 0.9999)


@pytest.fixture(scope="module")
def runs():
    ds = tiny_tokens(30, seed=3, max_len=36)
    kw = dict(batch_size=8, device="cpu", length_bins=3)
    return {
        "fp32": extract({"m": tiny_model(0)}, ds, precision="fp32", **kw),
        "bf16": extract({"m": tiny_model(0)}, ds, precision="bf16", **kw),
        "bf16_blocks": extract({"m": tiny_model(0)}, ds, precision="bf16", method="blocks", **kw),
        "auto": extract({"m": tiny_model(0)}, ds, precision="auto", **kw),
        "other_fp32": extract({"m": tiny_model(1)}, ds, precision="fp32", **kw),  # a different model
    }


def _rho(a, b, col: str) -> float:
    x, y = a.tables["attention_by_gene"][col], b.tables["attention_by_gene"][col]
    return float(spearmanr(x, y, nan_policy="omit").statistic)


def test_bf16_statistics_agree_with_fp32(runs):
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert bf16.params["precision"] == "bf16" and fp32.params["precision"] == "fp32"
    for col in GENE_STATS:
        assert _rho(fp32, bf16, col) > MIN_RHO, col
        # the comparison can fail: another model's statistics are nowhere near (measured |rho| < 0.2)
        assert abs(_rho(fp32, runs["other_fp32"], col)) < 0.5, col
    # bf16 really ran (the numbers moved) and moved little: max |diff| of log fold < 0.1 (measured 0.024)
    diff = np.abs(
        fp32.tables["attention_by_gene"]["logfold_mean"] - bf16.tables["attention_by_gene"]["logfold_mean"]
    )
    assert 0 < diff.max() < 0.1
    assert bf16.token_logfold["m"].dtype == np.float32
    assert all(bf16.tables["attention_by_gene"][c].dtype == np.float64 for c in GENE_STATS)


def test_bf16_fused_equals_bf16_blocks(runs):
    """Layer 0 reads the same bf16 q/k/v under both methods: Algorithm C agrees with the reference path.

    Later layers see inputs that differ by bf16 rounding of the first layer's output (measured 2.5%).
    """
    a, b = (runs[k].tables["attention_by_gene"].query("layer == 0") for k in ("bf16", "bf16_blocks"))
    for col in GENE_STATS:  # measured: max |diff| 2.5e-4, max relative 4e-5 (log fold: 2e-3 near 0)
        np.testing.assert_allclose(a[col], b[col], rtol=1e-3, atol=1e-3, err_msg=col)


def test_auto_is_fp32_on_the_cpu(runs):
    assert runs["auto"].params["precision"] == "fp32"
    for col in GENE_STATS:
        np.testing.assert_array_equal(
            runs["auto"].tables["attention_by_gene"][col], runs["fp32"].tables["attention_by_gene"][col]
        )


def test_statistics_are_float32_under_bf16_autocast():
    """The layer's products run in bf16, the statistics in float32: attention rows still sum to 1.

    Without the float32 region in the attention function, ``A[0, :]`` summed to 1 +- 1.6e-2 here.
    """
    model = tiny_model(0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 40, (3, 30), generator=g)
    valid = torch.arange(30)[None] < torch.tensor([30, 17, 5])[:, None]
    seen = []
    with torch.inference_mode(), collecting(model, lambda layer, s: seen.append(s)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model.bert(input_ids=ids, attention_mask=valid.long())
    assert len(seen) == 2
    n = valid.sum(1)[:, None].float()
    for s in seen:
        assert {t.dtype for t in (s.logcol, s.fnorm, s.head_out, s.first)} == {torch.float32}
        row0 = (s.first * valid[:, None]).sum(-1)  # sum_j A[0, j] = 1
        cols = (s.logcol.exp() * valid[:, None]).sum(-1) / n  # (1/n) sum_j sum_i A[i, j] = 1
        torch.testing.assert_close(row0, torch.ones_like(row0), atol=5e-4, rtol=0)
        torch.testing.assert_close(cols, torch.ones_like(cols), atol=5e-4, rtol=0)


def test_precision_is_checked():
    with pytest.raises(InputError, match="precision must be one of"):
        extract({"m": tiny_model(0)}, tiny_tokens(3), device="cpu", precision="fp16")
    cuda = torch.device("cuda")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        assert precision_context("bf16", cuda)[0] == "bf16"
    else:  # asked for bf16 on a CUDA device that cannot: one clear line, before any work
        with pytest.raises(InputError, match="needs the CPU or a CUDA device with bf16 support"):
            precision_context("bf16", cuda)
        assert precision_context("auto", cuda)[0] == "fp32"
    assert precision_context("fp32", cuda)[0] == "fp32"
