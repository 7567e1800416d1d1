"""Held-out masked-gene evaluation: MLM loss and top-1/top-10 accuracy, beside gene-frequency baselines.

The held-out cells are masked once, with a fixed seed (15% of genes, every selected gene replaced
by ``<mask>``), so every evaluation scores the same positions. Two baselines that ignore the
cell's other genes score the same positions:

* ``unigram``: each gene's frequency in the training cells (add-one smoothed);
* ``unigram_by_position``: the frequency of each gene at that rank position (bins of
  ``POSITION_BIN`` positions), which also knows where in a cell a gene usually sits.

A model that learned only gene frequencies (or frequencies by rank) matches them; one that uses
the other genes of the cell beats them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover
    import datasets

from ._data import mask_tokens, pad_batch

__all__ = ["HeldOut", "held_out", "evaluate_mlm", "POSITION_BIN"]

POSITION_BIN = 32
TOP_K = (1, 10)


@dataclasses.dataclass
class HeldOut:
    """Masked held-out batches and the baselines' scores on them."""

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]  # inputs, attn, labels, pos
    n_cells: int
    n_masked: int
    baselines: dict[str, dict[str, float]]


def _token_table(ds: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Token id and position of every token of ``ds`` (flattened, in order)."""
    import pyarrow.compute as pc

    col = ds.with_format("arrow")[:]["input_ids"]
    ids = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.int64)
    parent = pc.list_parent_indices(col).to_numpy(zero_copy_only=False)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return ids, np.arange(len(ids)) - starts[parent]


def _baseline_logprobs(
    train: datasets.Dataset, vocab_size: int, specials: list[int], n_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Log p(gene) and log p(gene | position bin) over the training cells (add-one smoothed)."""
    ids, pos = _token_table(train)
    keep = ~np.isin(ids, specials)
    ids, bins = ids[keep], np.minimum(pos[keep] // POSITION_BIN, n_bins - 1)
    uni = np.bincount(ids, minlength=vocab_size).astype(np.float64) + 1.0
    uni[specials] = 0.0  # never a label
    by_pos = np.bincount(bins * vocab_size + ids, minlength=n_bins * vocab_size).reshape(n_bins, vocab_size)
    by_pos = by_pos + uni / uni.sum() * vocab_size  # add-one, spread like the unigram
    with np.errstate(divide="ignore"):
        return np.log(uni / uni.sum()), np.log(by_pos / by_pos.sum(axis=1, keepdims=True))


def _ranks(logp: np.ndarray) -> np.ndarray:
    """Per row, the number of tokens with a strictly higher log-probability than each token."""
    desc = np.sort(-logp, axis=-1)
    return np.stack([np.searchsorted(d, -row, side="left") for d, row in zip(desc, logp, strict=True)])


def _summary(loss_sum: float, ranks: np.ndarray) -> dict[str, float]:
    n = max(1, len(ranks))
    return {"loss": loss_sum / n, **{f"top{k}": float((ranks < k).mean()) for k in TOP_K}}


def held_out(
    ds: datasets.Dataset,
    idx: np.ndarray,
    train_idx: np.ndarray,
    *,
    special_ids: list[int],
    mask_id: int,
    pad_id: int,
    vocab_size: int,
    probability: float,
    batch_size: int,
    seed: int,
) -> HeldOut:
    """Mask the cells ``idx`` once (seeded) and score the gene-frequency baselines on them."""
    gen = torch.Generator().manual_seed(seed)
    batches, labels_all, pos_all = [], [], []
    order = idx[np.argsort(-np.asarray([len(x) for x in ds[idx.tolist()]["input_ids"]]), kind="stable")]
    for start in range(0, len(order), batch_size):
        ids, attn = pad_batch(ds[order[start : start + batch_size].tolist()]["input_ids"], pad_id)
        inputs, labels = mask_tokens(
            ids, attn, special_ids=special_ids, mask_id=mask_id, vocab_size=vocab_size,
            probability=probability, replace_prob=1.0, random_prob=0.0, generator=gen,
        )  # fmt: skip
        sel = labels != -100
        positions = torch.arange(ids.shape[1]).expand_as(ids)[sel]
        batches.append((inputs, attn, labels, positions))
        labels_all.append(labels[sel].numpy())
        pos_all.append(positions.numpy())
    labels, pos = np.concatenate(labels_all), np.concatenate(pos_all)
    n_bins = max(1, math.ceil((int(pos.max()) + 1) / POSITION_BIN))
    uni, by_pos = _baseline_logprobs(ds.select(train_idx), vocab_size, special_ids, n_bins)
    bins = np.minimum(pos // POSITION_BIN, n_bins - 1)
    rank_uni, rank_pos = _ranks(uni[None, :])[0], _ranks(by_pos)
    base = {
        "unigram": _summary(float(-uni[labels].sum()), rank_uni[labels]),
        "unigram_by_position": _summary(float(-by_pos[bins, labels].sum()), rank_pos[bins, labels]),
    }
    return HeldOut(batches=batches, n_cells=len(idx), n_masked=len(labels), baselines=base)


@torch.inference_mode()
def evaluate_mlm(model: torch.nn.Module, held: HeldOut, device: torch.device) -> dict[str, float]:
    """The model's loss and top-k accuracy on the held-out masked genes."""
    from ._loop import autocast

    loss_sum, ranks = 0.0, []
    for inputs, attn, lab, _ in held.batches:
        with autocast(device):
            hidden = model.bert(input_ids=inputs.to(device), attention_mask=attn.to(device)).last_hidden_state
            logits = model.cls(hidden[lab.to(device) != -100])
        logp = torch.log_softmax(logits.float(), dim=-1)
        true = logp.gather(1, lab[lab != -100].to(device)[:, None])
        loss_sum -= float(true.sum())
        ranks.append((logp > true).sum(dim=1).cpu().numpy())
    return _summary(loss_sum, np.concatenate(ranks))
