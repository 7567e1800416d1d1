"""Vocabulary helpers: accept a `GeneVocab` (or anything with ``size``/``pad_id``/``mask_id``) or an int size."""

from __future__ import annotations

from typing import Any

from ..errors import InputError

__all__ = ["vocab_size", "special_ids", "pad_id", "mask_id"]


def vocab_size(vocab: Any) -> int:
    """The number of token ids in ``vocab`` (a `GeneVocab` or an int)."""
    if isinstance(vocab, bool):
        msg = "vocab must be a GeneVocab or an int size"
        raise InputError(msg)
    if isinstance(vocab, int):
        size = vocab
    elif hasattr(vocab, "size"):
        size = int(vocab.size)
    else:
        msg = f"vocab must be a GeneVocab or an int size, got {type(vocab).__name__}"
        raise InputError(msg)
    if size < 3:
        msg = f"vocabulary size must be >= 3 (<pad>, <mask> and genes), got {size}"
        raise InputError(msg)
    return size


def pad_id(vocab: Any) -> int:
    """``<pad>`` id (0 for Geneformer and for an int vocabulary)."""
    return int(getattr(vocab, "pad_id", 0))


def mask_id(vocab: Any) -> int:
    """``<mask>`` id (1 for Geneformer and for an int vocabulary)."""
    return int(getattr(vocab, "mask_id", 1))


def special_ids(vocab: Any) -> list[int]:
    """Ids never masked or used as features: ``<pad>``, ``<mask>`` and, if present, ``<cls>``/``<eos>``.

    An int vocabulary only knows ``<pad>`` (0) and ``<mask>`` (1).
    """
    ids = {pad_id(vocab), mask_id(vocab)}
    for name in ("cls_id", "eos_id"):
        value = getattr(vocab, name, None)
        if value is not None:
            ids.add(int(value))
    return sorted(ids)
