"""Token datasets for training: reading, length-grouped batching, padding and masking."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = ["as_dataset", "lengths_of", "length_grouped_batches", "pad_batch", "mask_tokens", "shard_batches"]

logger = logging.getLogger(__name__)


def as_dataset(tokens: Any) -> Any:
    """A `datasets.Dataset` from a dataset or a directory written with ``save_to_disk``."""
    import datasets

    if isinstance(tokens, (str, os.PathLike)):
        path = Path(tokens)
        if not path.exists():
            msg = f"token directory {path} does not exist"
            raise InputError(msg)
        try:
            tokens = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - not a saved dataset
            msg = f"{path} is not a tokenized dataset (datasets.save_to_disk): {e}"
            raise InputError(msg) from None
    if isinstance(tokens, datasets.DatasetDict):
        if len(tokens) != 1:
            msg = f"expected one token dataset, got splits {list(tokens)}"
            raise InputError(msg)
        tokens = next(iter(tokens.values()))
    if not isinstance(tokens, datasets.Dataset):
        msg = f"tokens must be a datasets.Dataset or a directory, got {type(tokens).__name__}"
        raise InputError(msg)
    if "input_ids" not in tokens.column_names:
        msg = f"token dataset has no 'input_ids' column (columns: {tokens.column_names})"
        raise InputError(msg)
    if len(tokens) == 0:
        msg = "token dataset is empty"
        raise InputError(msg)
    return tokens


def lengths_of(ds: Any) -> np.ndarray:
    """Token count per cell (the ``length`` column, or computed from ``input_ids``)."""
    if "length" in ds.column_names:
        lengths = np.asarray(ds["length"], dtype=np.int64)
    else:
        lengths = np.fromiter((len(x) for x in ds["input_ids"]), dtype=np.int64, count=len(ds))
    if (lengths < 1).any():
        msg = f"{int((lengths < 1).sum())} cells have no tokens; drop empty cells before training"
        raise InputError(msg)
    return lengths


def max_token_id(ds: Any) -> int:
    """Largest token id in the dataset (one pass over Arrow, in chunks)."""
    import pyarrow.compute as pc

    col = ds.data.column("input_ids")
    flat = pc.list_flatten(col)
    return int(pc.max(flat).as_py())


def length_grouped_batches(
    indices: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator, mega: int = 50
) -> list[np.ndarray]:
    """Batches of similar length (as HF ``LengthGroupedSampler``): shuffle, sort within mega-batches.

    ``indices`` are shuffled, cut into mega-batches of ``mega * batch_size`` cells, each sorted by
    length (longest first) and cut into batches; the batch order is then shuffled, so padding
    is small while every epoch sees a different order.
    """
    perm = rng.permutation(indices)
    size = mega * batch_size
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), size):
        chunk = perm[start : start + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def shard_batches(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """Batches for one process: every ``world_size``-th, truncated so all processes take equal steps."""
    n = len(batches) // world_size if world_size > 1 else len(batches)
    return batches[rank::world_size][:n]


def pad_batch(seqs: Sequence[Sequence[int] | np.ndarray], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``input_ids`` and ``attention_mask`` tensors ``[batch, max_len]``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        attn[i, : len(s)] = 1
    return ids, attn


@functools.lru_cache(maxsize=8)
def _gene_ids(vocab_size: int, special_ids: tuple[int, ...]) -> torch.Tensor:
    keep = np.ones(vocab_size, dtype=bool)
    keep[list(special_ids)] = False
    return torch.from_numpy(np.flatnonzero(keep))


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    special_ids: list[int],
    mask_id: int,
    vocab_size: int,
    probability: float,
    replace_prob: float,
    random_prob: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked gene modelling inputs and labels (HF ``DataCollatorForLanguageModeling`` scheme).

    Each real (non-pad, non-special) token is selected with ``probability``; a selected token is
    replaced by ``<mask>`` with ``replace_prob``, by a random gene with ``random_prob``, and kept
    otherwise. Labels are the original ids at selected positions and -100 elsewhere. At least one
    token per batch is selected so every step has a loss.
    """
    labels = input_ids.clone()
    eligible = attention_mask.bool()
    for sid in special_ids:
        eligible &= input_ids != sid
    draw = torch.rand(input_ids.shape, generator=generator)
    selected = eligible & (draw < probability)
    if not selected.any() and eligible.any():
        first = torch.nonzero(eligible)[0]
        selected[first[0], first[1]] = True
    labels[~selected] = -100
    inputs = input_ids.clone()
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < replace_prob)
    to_random = selected & (action >= replace_prob) & (action < replace_prob + random_prob)
    inputs[to_mask] = mask_id
    if to_random.any():
        genes = _gene_ids(vocab_size, tuple(special_ids))
        pick = torch.randint(len(genes), (int(to_random.sum()),), generator=generator)
        inputs[to_random] = genes[pick]
    return inputs, labels
