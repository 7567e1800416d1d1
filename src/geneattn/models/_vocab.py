"""The tokenizer's vocabulary as training needs it: a `GeneVocab` and its special-token ids."""

from __future__ import annotations

from ..errors import InputError
from ..tokenize.vocab import GeneVocab

__all__ = ["require_vocab", "special_ids"]


def require_vocab(vocab: object) -> GeneVocab:
    """``vocab`` if it is a `GeneVocab`, else an `InputError` saying where one comes from."""
    if not isinstance(vocab, GeneVocab):
        msg = (
            f"vocab must be a GeneVocab (the tokenizer's vocabulary: vocab.json beside the tokens, "
            f"geneattn.tokenize.load_vocab), got {type(vocab).__name__}"
        )
        raise InputError(msg)
    return vocab


def special_ids(vocab: GeneVocab) -> list[int]:
    """Ids never masked or used as features: ``<pad>``, ``<mask>`` and, if present, ``<cls>``/``<eos>``."""
    ids = {vocab.pad_id, vocab.mask_id}
    ids.update(i for i in (vocab.cls_id, vocab.eos_id) if i is not None)
    return sorted(ids)
