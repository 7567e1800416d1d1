"""Reducers, norms and the fused column-sum kernel against naive full-tensor code."""

from __future__ import annotations

import math

import numpy as np
import torch

from geneattn.attention import RunningStats
from geneattn.attention.interface import _blocks, augmented_lse, column_logsum, fused_attention_lse
from geneattn.attention.norms import head_gram, quad_norm


def _naive(index, values, n_groups):
    out = []
    for g in range(n_groups):
        x = values[index == g]
        out.append((len(x), x.mean(0) if len(x) else np.full(values.shape[1], np.nan),
                    x.std(0, ddof=1) if len(x) > 1 else np.full(values.shape[1], np.nan)))  # fmt: skip
    return out


def test_running_stats_batches_merge_equal_one_shot():
    rng = np.random.default_rng(0)
    idx, vals = rng.integers(0, 7, 200), rng.normal(3.0, 0.5, (200, 5))
    one = RunningStats.from_values(torch.from_numpy(idx), torch.from_numpy(vals), 8)
    streamed = RunningStats.zeros(8, 5)
    for s in range(0, 200, 33):
        streamed.update(torch.from_numpy(idx[s : s + 33]), torch.from_numpy(vals[s : s + 33]).float())
    a = RunningStats.from_values(torch.from_numpy(idx[:90]), torch.from_numpy(vals[:90]), 8)
    b = RunningStats.from_values(torch.from_numpy(idx[90:]), torch.from_numpy(vals[90:]), 8)
    merged = a.merge(b)
    for g, (n, mean, sd) in enumerate(_naive(idx, vals, 8)):
        for rs, tol in ((one, 1e-12), (merged, 1e-12), (streamed, 1e-6)):
            assert rs.count[g].item() == n
            np.testing.assert_allclose(rs.mean[g].numpy(), mean, rtol=tol, atol=tol)
            np.testing.assert_allclose(rs.sd[g].numpy(), sd, rtol=max(tol, 1e-9), atol=tol)
    assert torch.isnan(one.mean[7]).all() and torch.isnan(one.sd[7]).all()  # empty group


def test_merge_groups_is_pooled():
    rng = np.random.default_rng(1)
    idx, vals = rng.integers(0, 6, 100), rng.normal(size=(100, 2))
    rs = RunningStats.from_values(torch.from_numpy(idx), torch.from_numpy(vals), 6).merge_groups(2)
    pooled = RunningStats.from_values(torch.from_numpy(idx % 3), torch.from_numpy(vals), 3)
    torch.testing.assert_close(rs.moments, pooled.moments)
    torch.testing.assert_close(rs.count, pooled.count)


def test_quad_norm_equals_projection():
    torch.manual_seed(0)
    b, h, length, d, dim = 2, 4, 5, 8, 32
    w = torch.randn(dim, h * d)
    x = torch.randn(b, h, length, d)
    f = torch.stack([x[:, i] @ w[:, i * d : (i + 1) * d].T for i in range(h)], 1)  # [B, H, L, D]
    torch.testing.assert_close(quad_norm(x, head_gram(w, h, d)), f.norm(dim=-1), rtol=1e-5, atol=1e-5)


def _qkv(seed=0, b=3, h=4, length=19, d=8):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, length, d, generator=g) * 2 for _ in range(3))
    lens = torch.tensor([length, 11, 4])[:b]
    valid = torch.arange(length)[None] < lens[:, None]
    bias = torch.zeros(b, length).masked_fill(~valid, -math.inf)
    return q, k, v, bias, valid


def _naive_attention(q, k, v, bias, scale):
    a = torch.softmax(q.double() @ k.double().transpose(-1, -2) * scale + bias[:, None, None, :], -1)
    return a, a @ v.double()


def test_column_sums_fused_and_blocks():
    q, k, v, bias, valid = _qkv()
    scale = 8**-0.5
    a, out_ref = _naive_attention(q, k, v, bias, scale)
    colsum = (a * valid[:, None, :, None]).sum(2)
    out, lse = fused_attention_lse(q, k, v, bias, scale)
    torch.testing.assert_close(out.double(), out_ref, atol=1e-5, rtol=1e-5)
    logcol = column_logsum(q, k, lse, bias, scale)
    m = valid[:, None, :].expand_as(colsum)
    torch.testing.assert_close(logcol.exp()[m].double(), colsum[m], atol=1e-5, rtol=1e-5)
    out_b, _, logcol_b = _blocks(q, k, v, bias, scale, 7)
    torch.testing.assert_close(logcol_b.exp()[m].double(), colsum[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_b.double(), out_ref, atol=1e-5, rtol=1e-5)


def test_augmented_coordinate_path():
    """The CUDA path (bias on an extra coordinate, unmasked kernel), run here with the CPU kernel."""
    q, k, v, bias, valid = _qkv(1)
    scale = 8**-0.5
    cpu = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

    def kernel(qa, ka, va):
        return cpu(qa, ka, va, scale=1.0)

    out, lse = augmented_lse(q, k, v, bias, scale, kernel)
    out_ref, lse_ref = fused_attention_lse(q, k, v, bias, scale)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse, lse_ref, atol=1e-5, rtol=1e-5)


def test_no_padding_runs_unmasked():
    q, k, v, _, _ = _qkv(2)
    scale = 8**-0.5
    a, out_ref = _naive_attention(q, k, v, torch.zeros(q.shape[0], q.shape[2]), scale)
    out, lse = fused_attention_lse(q, k, v, None, scale)
    torch.testing.assert_close(out.double(), out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        column_logsum(q, k, lse, None, scale).exp().double(), a.sum(2), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        _blocks(q, k, v, None, scale, 5)[2].exp().double(), a.sum(2), atol=1e-5, rtol=1e-5
    )
