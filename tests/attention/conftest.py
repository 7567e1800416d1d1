"""Fixtures for the attention tests (helpers in _attention_helpers.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from _attention_helpers import tiny_model, tiny_tokens, tiny_vocab

from datasets import Dataset


@pytest.fixture
def model() -> torch.nn.Module:
    return tiny_model(0)


@pytest.fixture
def tokens() -> Dataset:
    return tiny_tokens()


@pytest.fixture
def vocab() -> SimpleNamespace:
    return tiny_vocab()
