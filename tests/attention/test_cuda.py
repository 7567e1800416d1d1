"""The CUDA route: the augmented-coordinate kernel call, `extract` on a GPU, a bf16 fine-tune step.

Tests marked ``gpu`` need a CUDA device and are skipped without one. The CPU tests run the same
route (`augmented_lse`, and `extract` with every fused call sent through it) with a CPU stand-in for
the CUDA kernel that keeps its conventions (unmasked, scale 1, head size a multiple of 8, log-sum-exp
padded to a multiple of 32 rows), so the route is tested on machines without a GPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _attention_helpers import tiny_model, tiny_tokens
from scipy.stats import spearmanr

from geneattn.attention import extract, interface
from geneattn.attention.interface import _cuda_kernel, augmented_lse, column_logsum, fused_attention_lse

NO_CUDA = "needs a CUDA device (torch.cuda.is_available() is False)"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
# (atol = rtol) of the kernel route against a float64 reference computed from the same input values
TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2}
TABLES = ("attention_by_gene", "attention_by_position", "head_norms")


def _qkv(dtype: torch.dtype, device: str, seed: int = 0, d: int = 64):
    """Random ``[3, 4, 37, d]`` q/k/v and a key bias with cells of 37, 20 and 5 tokens (rest padding)."""
    g = torch.Generator().manual_seed(seed)
    b, h, length = 3, 4, 37
    q, k, v = (torch.randn(b, h, length, d, generator=g) for _ in range(3))
    valid = torch.arange(length)[None] < torch.tensor([length, 20, 5])[:, None]
    bias = torch.zeros(b, length).masked_fill(~valid, -math.inf)
    return *(x.to(device, dtype) for x in (q, k, v)), bias.to(device), valid.to(device)


def _reference(q, k, v, bias, scale):
    """softmax(q k^T scale + bias) v, its row log-sum-exp and column sums over valid queries (float64)."""
    scores = q.double() @ k.double().transpose(-1, -2) * scale + bias.double()[:, None, None, :]
    lse = torch.logsumexp(scores, -1)
    a = torch.exp(scores - lse[..., None])
    colsum = (a * torch.isfinite(bias)[:, None, :, None]).sum(2)
    return a @ v.double(), lse, colsum


def _stand_in(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU stand-in for `_cuda_kernel`: unmasked, scale 1, float32 inside, lse padded to 32 rows with NaN."""
    assert q.shape[-1] % 8 == 0, (
        "the memory-efficient kernel is called with head sizes that are multiples of 8"
    )
    scores = q.float() @ k.float().transpose(-1, -2)
    lse = torch.logsumexp(scores, -1)
    out = (torch.exp(scores - lse[..., None]) @ v.float()).to(q.dtype)
    pad = -lse.shape[-1] % 32
    return out, torch.nn.functional.pad(lse, (0, pad), value=math.nan)


def _check_route(out, lse, ref_out, ref_lse, valid, dtype):
    tol = TOL[dtype]
    m = valid[:, None, :].expand_as(lse)  # padded query rows are not used downstream
    assert out.dtype == dtype and lse.dtype == torch.float32 and lse.shape == ref_lse.shape
    torch.testing.assert_close(out.double()[m], ref_out[m], atol=tol, rtol=tol)
    torch.testing.assert_close(lse.double()[m], ref_lse[m], atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [8, 64])
def test_augmented_route_with_a_cpu_stand_in(dtype, d):
    q, k, v, bias, valid = _qkv(dtype, "cpu", d=d)
    scale = d**-0.5
    ref_out, ref_lse, _ = _reference(q, k, v, bias, scale)
    _check_route(*augmented_lse(q, k, v, bias, scale, _stand_in), ref_out, ref_lse, valid, dtype)
    # the stand-in is checked too: the real CPU kernel gives the same
    _check_route(*fused_attention_lse(q, k, v, bias, scale), ref_out, ref_lse, valid, dtype)


def _through_augmented(q, k, v, bias, scale):
    return augmented_lse(q, k, v, bias, scale, _stand_in)


def _tables_close(a, b, tol: float) -> None:
    for name in TABLES:
        ta, tb = a.tables[name], b.tables[name]
        assert ta.shape == tb.shape and list(ta.columns) == list(tb.columns), name
        for col in ta.columns:
            if ta[col].dtype.kind == "f":
                np.testing.assert_allclose(ta[col], tb[col], atol=tol, rtol=tol, err_msg=f"{name}.{col}")
            else:
                assert ta[col].tolist() == tb[col].tolist(), f"{name}.{col}"


def test_extract_through_the_cuda_route_on_cpu(monkeypatch):
    """Both passes of Algorithm C (pass 2 with its own augmented coordinate) through `augmented_lse`."""
    ds = tiny_tokens(12, seed=4)
    kw = dict(batch_size=4, device="cpu", length_bins=3)
    cpu = extract({"m": tiny_model(0)}, ds, **kw)
    calls = []

    def route(q, k, v, bias, scale):
        calls.append(q.shape)
        return _through_augmented(q, k, v, bias, scale)

    monkeypatch.setattr(interface, "fused_attention_lse", route)
    aug = extract({"m": tiny_model(0)}, ds, **kw)
    assert len(calls) == 2 * 2 * 3  # 2 passes x 2 layers x 3 batches: the route really ran
    _tables_close(cpu, aug, 1e-5)
    np.testing.assert_allclose(cpu.token_logfold["m"], aug.token_logfold["m"], atol=1e-5)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernel_matches_eager(dtype):
    q, k, v, bias, valid = _qkv(dtype, "cuda")
    scale = 64**-0.5
    ref_out, ref_lse, ref_col = _reference(q, k, v, bias, scale)
    _check_route(*augmented_lse(q, k, v, bias, scale, _cuda_kernel), ref_out, ref_lse, valid, dtype)
    out, lse = fused_attention_lse(q, k, v, bias, scale)  # the dispatch on a CUDA tensor
    _check_route(out, lse, ref_out, ref_lse, valid, dtype)
    # pass 2 in float32 from pass 1's lse: column sums of the attention matrix
    m = valid[:, None, :].expand_as(ref_col)
    col = column_logsum(q, k, lse, bias, scale).exp().double()
    torch.testing.assert_close(col[m], ref_col[m], atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.gpu
@needs_cuda
def test_extract_on_cuda_equals_cpu():
    ds = tiny_tokens(12, seed=4)
    kw = dict(batch_size=4, length_bins=3)
    cpu = extract({"m": tiny_model(0)}, ds, device="cpu", **kw)
    gpu = extract({"m": tiny_model(0)}, ds, device="cuda", precision="fp32", **kw)
    assert gpu.params["device"].startswith("cuda") and gpu.params["precision"] == "fp32"
    _tables_close(cpu, gpu, 1e-4)
    if torch.cuda.is_bf16_supported():
        bf16 = extract({"m": tiny_model(0)}, ds, device="cuda", **kw)  # "auto": bf16 here
        assert bf16.params["precision"] == "bf16"
        a, b = cpu.tables["attention_by_gene"], bf16.tables["attention_by_gene"]
        for col in ("fold_mean", "logfold_mean", "norm_mean", "first_mean"):
            assert spearmanr(a[col], b[col], nan_policy="omit").statistic > 0.99, col


@pytest.mark.gpu
@needs_cuda
def test_finetune_step_bf16_on_cuda():
    """One `_train_step` of the fine-tuning loop on CUDA, under its bf16 autocast: finite loss, weights move."""
    from geneattn.models._loop import Dist, LoopSpec, _param_groups, _train_step

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this CUDA device has no bf16 support")
    dev = torch.device("cuda")
    model = tiny_model(0, classifier=True).train().to(dev)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 40, (8, 24), generator=g)
    mask = (torch.arange(24)[None] < torch.randint(5, 25, (8,), generator=g)[:, None]).long()
    y = torch.arange(8) % 3

    class Task:
        lengths = mask.sum(1).numpy()
        logits_dtype: torch.dtype | None = None

        def step(self, module, batch, generator):
            b = torch.as_tensor(batch)
            logits = module(input_ids=ids[b].to(dev), attention_mask=mask[b].to(dev)).logits
            Task.logits_dtype = logits.dtype
            return torch.nn.functional.cross_entropy(logits.float(), y[b].to(dev))

    spec = LoopSpec(epochs=1, learning_rate=1e-3, weight_decay=0.0, warmup_steps=0, warmup_ratio=0.0,
                    max_grad_norm=1.0, save_steps=0, keep_checkpoints=1, seed=0)  # fmt: skip
    opt = torch.optim.AdamW(_param_groups(model, spec), lr=spec.learning_rate)
    before = model.classifier.weight.detach().clone()
    loss = _train_step(model, model, opt, Task(), np.arange(8), 0, 2, 0, spec, Dist(device=dev))
    assert Task.logits_dtype == torch.bfloat16  # the step ran under bf16 autocast
    assert torch.isfinite(loss) and loss.item() > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not torch.equal(model.classifier.weight, before)
