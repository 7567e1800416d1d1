"""The registered attention function: the layer's real output plus per-token statistics.

``geneattn_stats`` is registered with transformers' `AttentionInterface` (and a matching mask
function with `AttentionMaskInterface`). BERT's self-attention calls it for every layer with
``(module, query, key, value, attention_mask, scaling=..., dropout=...)``; ``query``/``key``/``value``
are ``[B, H, L, d]`` and the mask is our additive key-padding mask ``[B, 1, 1, L]`` (0 valid, -inf pad).

Algorithm C (methods.md §6): pass 1 is a fused attention kernel that returns the output and the
log-sum-exp ``lse_i`` of each query row; pass 2 calls the same kernel with queries and keys swapped
and one augmented coordinate, ``[k_j s, 1] . [q_i, -lse_i]``, so its own log-sum-exp is
``log colsum_j = log sum_{i valid} A[i, j]`` -- exact column sums without an ``L x L`` tensor.
``method="blocks"`` (Algorithm A) computes the same numbers from explicit query blocks of the
softmax; it is the reference path.

Nothing is collected unless a model is inside `collecting()`; then each layer hands a dict of
``[B, H, L]`` float32 tensors (see `TokenStats`) to the sink. Heads set with `zero_heads` (used by
`ablation.ablating`) have their context vectors (the output of the attention function, before
``W_O``) set to zero; collected statistics then describe the ablated network.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .norms import head_gram, quad_norm

__all__ = [
    "ATTN_NAME",
    "register",
    "collecting",
    "zero_heads",
    "TokenStats",
    "fused_attention_lse",
    "column_logsum",
]

ATTN_NAME = "geneattn_stats"
_ACTIVE: dict[int, _LayerInfo] = {}
_ZEROED: dict[int, torch.Tensor] = {}  # id(self-attention module) -> head indices whose output is zeroed
_REGISTERED = False


@dataclass
class _LayerInfo:
    layer: int
    gram: torch.Tensor  # [H, d, d] = W_O,h^T W_O,h (float32), for ||x W_O,h^T||
    sink: Callable[[int, TokenStats], None]
    method: str
    block_size: int


@dataclass
class TokenStats:
    """Per-token statistics of one layer for one batch, all ``[B, H, L]`` float32.

    Attributes
    ----------
    logcol
        ``log sum_{i valid} A[i, j]`` = log fold (fold = n_c * a = column sum).
    fnorm
        ``||f_h(x_j)||`` with ``f_h(x) = (x W_V^h + b_V^h) W_O[:, h]^T`` (no ``b_O``; Kobayashi 2020).
    head_out
        ``||ctx_h[i] W_O[:, h]^T||``, the norm of head h's whole contribution to token i.
    first
        ``A[0, j]``, attention from the first token (row 0) to token j.
    """

    logcol: torch.Tensor
    fnorm: torch.Tensor
    head_out: torch.Tensor
    first: torch.Tensor


def _key_bias(
    attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device
) -> torch.Tensor | None:
    """The additive key bias ``[B, L]`` float32 (0 valid, -inf padded) from the mask we registered.

    ``None`` when there is no mask (no padding in the batch): the kernels then run unmasked.
    """
    if attention_mask is None:
        return None
    m = attention_mask
    if m.dtype == torch.bool:
        m = torch.zeros(m.shape, device=device).masked_fill(~m, -math.inf)
    # [B, 1, 1, L] (ours) or [B, 1, L, L] (a key-only mask repeated over queries): take query row 0
    return m.reshape(m.shape[0], -1, m.shape[-1])[:, 0, :].float().expand(batch, length)


def _pad_last(x: torch.Tensor, size: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, size - x.shape[-1])) if size > x.shape[-1] else x


def fused_attention_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused attention ``softmax(q k^T scale + bias) v`` and its row log-sum-exp.

    Parameters
    ----------
    q, k, v
        ``[B, H, L, e]`` (same head size ``e``).
    bias
        ``[B, L]`` additive key bias (0 or -inf), or ``None`` (no padding).
    scale
        Score scale.

    Returns
    -------
    ``(out [B, H, L, e], lse [B, H, L] float32)``. CPU: ``aten._scaled_dot_product_flash_attention_for_cpu``
    with the bias as ``attn_mask``; CUDA: memory-efficient kernel, the bias carried by an augmented
    coordinate (``[q s, 1] . [k, bias]``) because its ``attn_bias`` needs an aligned ``[.., L, L]`` tensor.
    """
    if q.device.type == "cpu":
        mask = None if bias is None else bias[:, None, None, :].to(q.dtype)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, attn_mask=mask, scale=scale
        )
        return out, lse.float()
    return augmented_lse(q, k, v, bias, scale, _cuda_kernel)


def _cuda_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, scale=1.0)[:2]
    return out, lse


def augmented_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    kernel: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """`fused_attention_lse` for kernels without a usable mask: the key bias rides on an extra coordinate.

    ``[q s, 1, 0..] . [k, bias, 0..]`` (head size padded to a multiple of 8 with zeros) with scale 1;
    ``kernel(q, k, v) -> (out, lse)`` is an unmasked fused attention (CUDA: memory-efficient kernel).
    """
    e, length = q.shape[-1], q.shape[2]
    if bias is None:
        bias = torch.zeros(q.shape[0], length, device=q.device)
    qa = torch.cat([q * scale, torch.ones_like(q[..., :1])], -1)
    ka = torch.cat([k, bias[:, None, :, None].to(k.dtype).clamp_min(-1e30).expand_as(k[..., :1])], -1)
    size = (e + 1 + 7) // 8 * 8  # kernels want head sizes that are multiples of 8
    out, lse = kernel(_pad_last(qa, size), _pad_last(ka, size), _pad_last(v, size))
    return out[..., :e], lse[..., :length].float()


def column_logsum(
    q: torch.Tensor, k: torch.Tensor, lse: torch.Tensor, bias: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """Algorithm C pass 2: ``log sum_{i valid} A[i, j]`` ``[B, H, L]`` from ``q, k`` and pass 1's ``lse``.

    Keys attend to queries: ``[k_j s, 1] . [q_i, -lse_i]``, padded queries removed by ``bias``; the
    kernel's log-sum-exp is the log column sum. Values are zeros (the kernels need them; unused).
    Entries for padded keys are meaningless.
    """
    bsz, nh, length, d = q.shape
    ka = q.new_empty(bsz, nh, length, d + 1, dtype=torch.float32)
    ka[..., :d] = k
    ka[..., :d] *= scale
    ka[..., d] = 1.0
    qa = torch.empty_like(ka)
    qa[..., :d] = q
    qa[..., d] = -lse
    _, lse2 = fused_attention_lse(ka, qa, _zeros_like(qa), bias, 1.0)
    return lse2


_ZEROS: list[torch.Tensor] = []


def _zeros_like(x: torch.Tensor) -> torch.Tensor:
    """A cached zero tensor shaped like ``x`` (pass 2's unused values; read-only for the kernels)."""
    if not _ZEROS or _ZEROS[0].shape != x.shape or _ZEROS[0].device != x.device or _ZEROS[0].dtype != x.dtype:
        _ZEROS[:] = [torch.zeros_like(x)]
    return _ZEROS[0]


def _blocks(q, k, v, bias, scale, block_size):
    """Algorithm A: explicit softmax per query block; returns (out, lse, logcol), exact, O(b L) memory."""
    bsz, nh, length, _ = q.shape
    if bias is None:
        bias = torch.zeros(bsz, length, device=q.device)
    valid_q = torch.isfinite(bias)[:, None, :, None]  # [B, 1, L, 1]
    col = q.new_zeros(bsz, nh, length, dtype=torch.float32)
    outs, lses = [], []
    for s in range(0, length, block_size):
        scores = (q[:, :, s : s + block_size].float() @ k.float().transpose(-1, -2)) * scale
        scores = scores + bias[:, None, None, :]
        lse = torch.logsumexp(scores, -1)
        probs = torch.exp(scores - lse[..., None])
        outs.append((probs @ v.float()).to(v.dtype))
        lses.append(lse)
        col += (probs * valid_q[:, :, s : s + block_size]).sum(2)
    return torch.cat(outs, 2), torch.cat(lses, 2), torch.log(col)


def geneattn_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention function registered as ``geneattn_stats``: same output as ``sdpa_attention_forward``.

    Returns ``(attn_output [B, L, H, d], None)`` in the dtype of ``query`` (bf16 under bf16 autocast);
    heads set by `zero_heads` are zero. When ``module`` is being collected, hands the layer's
    `TokenStats` (float32 whatever the autocast) to the sink.
    """
    if dropout and module.training:
        msg = "geneattn_stats attention is for inference only (model.eval())"
        raise RuntimeError(msg)
    # statistics in float32 under bf16 autocast: the kernels take the layer's own q/k/v dtype, every
    # product below casts up explicitly, and autocast must not cast it back down (einsum, matmul)
    with torch.autocast(query.device.type, enabled=False):
        return _forward(module, query, key, value, attention_mask, scaling)


def _forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
) -> tuple[torch.Tensor, None]:
    bsz, nh, length, d = query.shape
    scale = scaling if scaling is not None else d**-0.5
    bias = _key_bias(attention_mask, bsz, length, query.device)
    info = _ACTIVE.get(id(module))
    if info is not None and info.method == "blocks":
        out, lse, logcol = _blocks(query, key, value, bias, scale, info.block_size)
    else:
        out, lse = fused_attention_lse(query, key, value, bias, scale)
        logcol = column_logsum(query, key, lse, bias, scale) if info is not None else None
    zeroed = _ZEROED.get(id(module))
    if zeroed is not None:
        out = out.index_fill(1, zeroed.to(out.device), 0.0)
    if info is not None:
        with torch.no_grad():
            # attention from the first token: A[0, j] = exp(q_0 . k_j s + bias_j - lse_0)
            s0 = torch.einsum("bhd,bhld->bhl", query[:, :, 0].float(), key.float()) * scale
            first = torch.exp((s0 if bias is None else s0 + bias[:, None, :]) - lse[:, :, :1])
            gram = info.gram
            info.sink(
                info.layer,
                TokenStats(
                    logcol=logcol,
                    fnorm=quad_norm(value.float(), gram),
                    head_out=quad_norm(out.float(), gram),
                    first=first,
                ),
            )
    return out.transpose(1, 2).contiguous(), None


def _mask_fn(
    batch_size: int,
    q_length: int,
    kv_length: int,
    attention_mask: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: Any = "cpu",
    **kwargs: Any,
) -> torch.Tensor | None:
    """Key-padding mask ``[B, 1, 1, kv]`` additive float (0 valid, -inf padded); ``None`` if no padding."""
    if attention_mask is None:
        return None
    m = attention_mask.to(device=device, dtype=torch.bool)[:, -kv_length:]
    if bool(m.all()):
        return None
    return torch.zeros(m.shape, dtype=dtype, device=device).masked_fill(~m, -math.inf)[:, None, None, :]


def zero_heads(module: torch.nn.Module, heads: Sequence[int] | None) -> None:
    """Zero the outputs of ``heads`` of self-attention ``module`` in ``geneattn_stats`` (``None``: none).

    Only takes effect while the model runs with ``geneattn_stats`` attention; see
    `geneattn.attention.ablation.ablating`, which also switches the implementation and restores it.
    """
    if heads is None or len(heads) == 0:
        _ZEROED.pop(id(module), None)
    else:
        _ZEROED[id(module)] = torch.as_tensor(sorted(set(heads)), dtype=torch.long)


def register() -> None:
    """Register ``geneattn_stats`` with transformers (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_NAME, geneattn_attention_forward)
    AttentionMaskInterface.register(ATTN_NAME, _mask_fn)
    _REGISTERED = True


def encoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The ``BertLayer`` list of a BERT model (``BertModel``, ``...ForMaskedLM``, ``...ForSequenceClassification``)."""
    base = getattr(model, getattr(model, "base_model_prefix", "bert"), model)
    enc = getattr(base, "encoder", None)
    if enc is None or not hasattr(enc, "layer"):
        msg = f"{type(model).__name__} is not a BERT encoder (no .encoder.layer)"
        raise TypeError(msg)
    return list(enc.layer)


def set_attn(model: torch.nn.Module, name: str) -> None:
    """Switch ``model`` (and its sub-configs) to attention implementation ``name``."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:  # pragma: no cover - plain modules
        model.config._attn_implementation = name


@contextlib.contextmanager
def collecting(
    model: torch.nn.Module,
    sink: Callable[[int, TokenStats], None],
    *,
    method: str = "fused",
    block_size: int = 256,
) -> Iterator[torch.nn.Module]:
    """Run ``model`` with ``geneattn_stats`` attention; each layer's `TokenStats` go to ``sink(layer, stats)``.

    The model's previous attention implementation is restored on exit.
    """
    if method not in ("fused", "blocks"):
        msg = f"method must be 'fused' or 'blocks', got {method!r}"
        raise ValueError(msg)
    register()
    layers = encoder_layers(model)
    old = model.config._attn_implementation
    keys = []
    for i, layer in enumerate(layers):
        self_attn = layer.attention.self
        nh, d = self_attn.num_attention_heads, self_attn.attention_head_size
        gram = head_gram(layer.attention.output.dense.weight, nh, d)
        _ACTIVE[id(self_attn)] = _LayerInfo(i, gram, sink, method, block_size)
        keys.append(id(self_attn))
    set_attn(model, ATTN_NAME)
    try:
        yield model
    finally:
        for key in keys:
            _ACTIVE.pop(key, None)
        if not _ACTIVE:
            _ZEROS.clear()
        set_attn(model, old or "sdpa")
