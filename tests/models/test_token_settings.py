"""`geneattn.models.token_settings`: the tokenizer each kind of checkpoint is paired with."""

from __future__ import annotations

import json

import pytest

import geneattn as ga
from geneattn.errors import InputError


def test_shipped_checkpoint_by_name_and_path():
    by_name = ga.models.token_settings("mini-nutlin")
    by_path = ga.models.token_settings(ga.models.builtin_checkpoint())
    assert by_name == by_path
    assert by_name.special_tokens and by_name.model_input_size == ga.models.builtin_input_size() == 256
    assert ga.models.token_settings("mini-nutlin", model_input_size=64).model_input_size == 64
    assert ga.models.token_settings("mini-nutlin", model_input_size=4096).model_input_size == 256


def test_geneformer_checkpoint_needs_its_dictionaries(tmp_path, shared_dir):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": ga.models.presets.V1_VOCAB_SIZE}))
    with pytest.raises(InputError, match="dictionaries="):
        ga.models.token_settings(tmp_path)
    ts = ga.models.token_settings(tmp_path, dictionaries=shared_dir / "geneformer-dictionaries")
    assert ts.geneformer and not ts.special_tokens and ts.model_input_size == 2048  # V1
    assert ts.vocab.size == ga.models.presets.V1_VOCAB_SIZE


def test_a_model_of_ours_is_bounded_by_its_positions(tmp_path):
    ck = ga.models.builtin_checkpoint()
    (tmp_path / "vocab.json").write_text((ck / "vocab.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 10, "max_position_embeddings": 128}))
    assert ga.models.token_settings(tmp_path).model_input_size == 128


def test_not_a_model():
    with pytest.raises(InputError, match="not a model directory"):
        ga.models.token_settings("no-such-model")
