"""Model configurations: Geneformer's released models and a CPU-sized ``mini`` preset.

Values follow the released ``config.json`` files (``geneformer-tokenizer.md`` §5). All released
models are ``BertForMaskedLM`` with relu activations, absolute positions, ``type_vocab_size`` 2,
``layer_norm_eps`` 1e-12, ``initializer_range`` 0.02 and ``pad_token_id`` 0.

Pairing with dictionaries: vocabulary 25,426 / 2,048 positions = Geneformer V1 ``gc30M``
dictionaries (no special tokens); vocabulary 20,275 / 4,096 positions = V2 ``gc104M`` (= gc95M)
dictionaries (with ``<cls>``/``<eos>``).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

from transformers import BertConfig

from ..errors import InputError

__all__ = ["PRESETS", "make_config", "V1_VOCAB_SIZE", "V2_VOCAB_SIZE", "vocab_pairing_hint"]

V1_VOCAB_SIZE = 25_426
V2_VOCAB_SIZE = 20_275

_COMMON: dict[str, Any] = {
    "hidden_act": "relu",
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
    "pad_token_id": 0,
}


def _preset(
    layers: int,
    hidden: int,
    heads: int,
    intermediate: int,
    max_pos: int,
    vocab: int | None,
    dropout: float,
    attn_dropout: float | None = None,
) -> Mapping[str, Any]:
    return types.MappingProxyType(
        {
            **_COMMON,
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "intermediate_size": intermediate,
            "max_position_embeddings": max_pos,
            "vocab_size": vocab,
            "hidden_dropout_prob": dropout,
            "attention_probs_dropout_prob": dropout if attn_dropout is None else attn_dropout,
        }
    )


#: Preset name -> BertConfig keyword arguments (read-only). ``vocab_size`` None means "the
#: tokenizer's vocabulary" and must be given to `make_config`.
PRESETS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType(
    {
        # Geneformer V1's 6 layers x 4 heads at 1/4 the width (head dim 16): ~10k tokens/s of training
        # on 2 CPU cores. No attention dropout: on CPU, dropout on the (batch, head, L, L) attention
        # probabilities costs as much as the attention itself and forces the unfused kernel.
        "mini": _preset(6, 64, 4, 128, 2048, None, 0.02, attn_dropout=0.0),
        "gf-6L-30M-i2048": _preset(6, 256, 4, 512, 2048, V1_VOCAB_SIZE, 0.02),
        "gf-12L-30M-i2048": _preset(12, 512, 8, 1024, 2048, V1_VOCAB_SIZE, 0.02),
        "gf-12L-95M-i4096": _preset(12, 512, 8, 1024, 4096, V2_VOCAB_SIZE, 0.02),
        "gf-20L-95M-i4096": _preset(20, 896, 14, 1792, 4096, V2_VOCAB_SIZE, 0.02),
        "Geneformer-V2-104M": _preset(12, 768, 12, 3072, 4096, V2_VOCAB_SIZE, 0.1),
        "Geneformer-V2-316M": _preset(18, 1152, 18, 4608, 4096, V2_VOCAB_SIZE, 0.1),
    }
)

_ALIASES = {"Geneformer-V1-10M": "gf-6L-30M-i2048", "v1": "gf-6L-30M-i2048", "gf-6L-30M": "gf-6L-30M-i2048"}


def vocab_pairing_hint(size: int) -> str:
    """Which Geneformer dictionaries and models a vocabulary size belongs to (for error messages)."""
    if size == V1_VOCAB_SIZE:
        return "25,426 = Geneformer V1 gc30M dictionaries (gf-6L-30M-i2048 / Geneformer-V1-10M, gf-12L-30M-i2048)"
    if size == V2_VOCAB_SIZE:
        return (
            "20,275 = Geneformer V2 gc104M/gc95M dictionaries "
            "(Geneformer-V2-104M/-316M, gf-12L-95M-i4096, gf-20L-95M-i4096)"
        )
    return f"{size:,} = not a released Geneformer vocabulary (a geneattn-built vocabulary?)"


def make_config(
    preset: str,
    *,
    vocab_size: int | None = None,
    max_position_embeddings: int | None = None,
    num_labels: int | None = None,
) -> BertConfig:
    """Build a `transformers.BertConfig` from a preset.

    Parameters
    ----------
    preset
        One of `PRESETS` (``mini``, ``gf-6L-30M-i2048``, ..., ``Geneformer-V2-316M``); the alias
        ``Geneformer-V1-10M`` names ``gf-6L-30M-i2048``.
    vocab_size
        Vocabulary size (the tokenizer's ``GeneVocab.size``). Required for ``mini``; for released
        presets it overrides the released size (a warning-free override: the caller pairs vocabularies).
    max_position_embeddings
        Maximum input length; defaults to the preset's (2048 or 4096).
    num_labels
        Number of classes for a sequence-classification head.

    Returns
    -------
    BertConfig
        With ``architectures`` set to ``BertForMaskedLM`` (or ``BertForSequenceClassification``
        when ``num_labels`` is given).
    """
    name = _ALIASES.get(preset, preset)
    if name not in PRESETS:
        msg = f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}"
        raise InputError(msg)
    kwargs = dict(PRESETS[name])
    if vocab_size is not None:
        kwargs["vocab_size"] = int(vocab_size)
    if kwargs["vocab_size"] is None:
        msg = f"preset {name!r} needs vocab_size (the tokenizer's vocabulary size)"
        raise InputError(msg)
    if kwargs["vocab_size"] < 3:
        msg = f"vocab_size must be >= 3 (<pad>, <mask> and genes), got {kwargs['vocab_size']}"
        raise InputError(msg)
    if max_position_embeddings is not None:
        if max_position_embeddings < 1:
            msg = f"max_position_embeddings must be positive, got {max_position_embeddings}"
            raise InputError(msg)
        kwargs["max_position_embeddings"] = int(max_position_embeddings)
    arch = "BertForMaskedLM"
    if num_labels is not None:
        if num_labels < 2:
            msg = f"num_labels must be >= 2, got {num_labels}"
            raise InputError(msg)
        kwargs["num_labels"] = int(num_labels)
        arch = "BertForSequenceClassification"
    config = BertConfig(**kwargs, architectures=[arch])
    config.geneattn_preset = name
    return config
