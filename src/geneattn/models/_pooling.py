"""How a classifier summarises a cell: its first token (``<cls>`` or a gene) or the mean of its tokens.

`BertForSequenceClassification` pools the first token. Masked mean pooling (the mean of the last
hidden states over a cell's tokens, ``<pad>`` excluded) is added with two forward hooks on the
unchanged HF model: one on ``bert`` keeps the batch's attention mask, one on ``bert.pooler``
hands it the masked mean in place of the first position's hidden state. The
choice is recorded as ``geneattn_pooling`` (``"cls"``, ``"first"`` or ``"mean"``) in the model's
``config.json``; `geneattn.models.load` re-attaches the hooks to a model saved with ``"mean"``, so
prediction, attention extraction, ablation and attribution all see the pooling it was trained with.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from .._keys import POOLINGS
from ..errors import InputError

__all__ = ["POOLINGS", "is_mean_pooled", "use_pooling"]


_HOOKED = "_geneattn_mean_pooling"


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over positions of ``hidden [B, L, H]`` where ``mask [B, L]`` is 1 (all positions if None)."""
    if mask is None:
        return hidden.mean(1)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def is_mean_pooled(model: PreTrainedModel) -> bool:
    """Whether ``model`` pools the mean of its tokens (``geneattn_pooling = "mean"``)."""
    return getattr(model.config, "geneattn_pooling", None) == "mean"


def use_pooling(model: PreTrainedModel, pooling: str | None = None) -> PreTrainedModel:
    """Set (``pooling`` given) or apply (None: the config's) the pooling of a BERT classifier, in place.

    Only ``"mean"`` changes the computation (hooks, attached once); ``"cls"`` and ``"first"`` are
    BERT's own first-token pooling. Models without a pooler (masked-LM models) are returned unchanged.
    """
    if pooling is not None:
        if pooling not in POOLINGS[1:]:
            msg = f"pooling must be one of {POOLINGS[1:]}, got {pooling!r}"
            raise InputError(msg)
        if getattr(model, _HOOKED, False) and pooling != "mean":
            msg = "a model with mean pooling hooks cannot switch back to first-token pooling"
            raise InputError(msg)
        model.config.geneattn_pooling = pooling
    bert = getattr(model, "bert", None)
    if not is_mean_pooled(model) or getattr(bert, "pooler", None) is None or getattr(model, _HOOKED, False):
        return model
    state: dict[str, torch.Tensor | None] = {}

    def keep_mask(_mod: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state["mask"] = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def pool_mean(_mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (masked_mean(args[0], state.get("mask")).unsqueeze(1),)  # the pooler reads position 0

    bert.register_forward_pre_hook(keep_mask, with_kwargs=True)
    bert.pooler.register_forward_pre_hook(pool_mean)
    setattr(model, _HOOKED, True)
    return model
