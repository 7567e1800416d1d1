from __future__ import annotations

import pytest

from geneattn import InputError
from geneattn.models import PRESETS, make_config


def test_v1_config_exact():
    c = make_config("gf-6L-30M-i2048")
    assert (c.num_hidden_layers, c.num_attention_heads, c.hidden_size, c.intermediate_size) == (
        6,
        4,
        256,
        512,
    )
    assert (c.max_position_embeddings, c.vocab_size, c.hidden_act) == (2048, 25_426, "relu")
    assert c.hidden_dropout_prob == c.attention_probs_dropout_prob == 0.02
    assert (c.type_vocab_size, c.layer_norm_eps, c.initializer_range, c.pad_token_id) == (2, 1e-12, 0.02, 0)
    assert c.architectures == ["BertForMaskedLM"]
    assert make_config("Geneformer-V1-10M").to_dict() == c.to_dict()


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("gf-12L-30M-i2048", (12, 8, 512, 1024, 2048, 25_426, 0.02)),
        ("gf-12L-95M-i4096", (12, 8, 512, 1024, 4096, 20_275, 0.02)),
        ("gf-20L-95M-i4096", (20, 14, 896, 1792, 4096, 20_275, 0.02)),
        ("Geneformer-V2-104M", (12, 12, 768, 3072, 4096, 20_275, 0.1)),
        ("Geneformer-V2-316M", (18, 18, 1152, 4608, 4096, 20_275, 0.1)),
    ],
)
def test_released_presets(name, dims):
    c = make_config(name)
    got = (
        c.num_hidden_layers,
        c.num_attention_heads,
        c.hidden_size,
        c.intermediate_size,
        c.max_position_embeddings,
        c.vocab_size,
        c.hidden_dropout_prob,
    )
    assert got == dims


def test_mini_keeps_6x4_and_takes_vocab():
    c = make_config("mini", vocab_size=500, max_position_embeddings=300, num_labels=3)
    assert (c.num_hidden_layers, c.num_attention_heads, c.vocab_size, c.max_position_embeddings) == (
        6,
        4,
        500,
        300,
    )
    assert c.num_labels == 3 and c.architectures == ["BertForSequenceClassification"]
    assert set(PRESETS) >= {"mini", "gf-6L-30M-i2048", "Geneformer-V2-316M"}


def test_bad_presets():
    with pytest.raises(InputError, match="unknown model preset"):
        make_config("gf-7L")
    with pytest.raises(InputError, match="needs vocab_size"):
        make_config("mini")
    with pytest.raises(InputError, match="num_labels"):
        make_config("mini", vocab_size=10, num_labels=1)
