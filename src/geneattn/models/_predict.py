"""Class logits of a fine-tuned classifier, and the tokens every cell starts and ends with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedModel

from ._data import pad_batch
from ._loop import autocast

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = ["edge_tokens", "predict"]


def edge_tokens(ids: datasets.Dataset, sample: int = 2048) -> tuple[int | None, int | None]:
    """The token every cell starts with (``<cls>``) and ends with (``<eos>``), or None where they differ."""
    seqs = ids[: min(len(ids), sample)]["input_ids"]
    firsts, lasts = {int(s[0]) for s in seqs}, {int(s[-1]) for s in seqs}
    return (firsts.pop() if len(firsts) == 1 else None), (lasts.pop() if len(lasts) == 1 else None)


def predict(
    model: PreTrainedModel, input_ids: Sequence[Sequence[int]], *, batch_size: int = 32
) -> np.ndarray:
    """Class logits ``[n_cells, n_labels]`` (batches sorted by length to limit padding)."""
    device = next(model.parameters()).device
    pad = model.config.pad_token_id or 0
    order = np.argsort([-len(s) for s in input_ids], kind="stable")
    logits = np.zeros((len(input_ids), model.config.num_labels), dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, attn = pad_batch([input_ids[i] for i in idx], pad)
            out = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits
            logits[idx] = out.float().cpu().numpy()
    model.train(was_training)
    return logits
