"""Kobayashi et al. (2020) norms without the ``[B, H, L, L, D]`` tensor (methods.md §1.3).

For head h with value vectors ``v_j = x_j W_V^h + b_V^h`` (``[d]``, bias included) and output
projection slice ``W_O,h = W_O[:, h*d:(h+1)*d]`` (``[D, d]``, no ``b_O``):

* ``f_h(x_j) = v_j W_O,h^T`` and ``||f_h(x_j)||^2 = v_j G_h v_j^T`` with ``G_h = W_O,h^T W_O,h`` (``[d, d]``),
  so the norm costs a ``d x d`` product instead of a ``d x D`` one;
* ``||alpha_ij f_h(x_j)|| = alpha_ij ||f_h(x_j)||`` (alpha >= 0), hence the norm-weighted attention
  received ``sum_i alpha_ij ||f_h(x_j)|| = colsum_j * ||f_h(x_j)||``;
* head h's output at token i, ``||sum_j alpha_ij f_h(x_j)|| = ||ctx_h[i] W_O,h^T||`` = the same quadratic
  form applied to the head's context vector.
"""

from __future__ import annotations

import torch

__all__ = ["head_gram", "quad_norm"]


def head_gram(weight: torch.Tensor, n_heads: int, head_size: int) -> torch.Tensor:
    """``G_h = W_O,h^T W_O,h`` for each head, ``[H, d, d]`` float32.

    Parameters
    ----------
    weight
        ``BertSelfOutput.dense.weight``, ``[D, H*d]`` (``nn.Linear`` stores ``(out, in)``).
    n_heads, head_size
        ``H`` and ``d``.
    """
    w = weight.detach().float().reshape(weight.shape[0], n_heads, head_size)  # [D, H, d]
    return torch.einsum("Dhd,Dhe->hde", w, w)


def quad_norm(x: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """``||x[b, h, l] W_O,h^T||`` for ``x`` ``[B, H, L, d]`` and ``gram`` ``[H, d, d]`` -> ``[B, H, L]``."""
    sq = (torch.matmul(x, gram[None]) * x).sum(-1)  # v G v^T per token
    return sq.clamp_min(0).sqrt()
