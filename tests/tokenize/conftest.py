"""Fixtures for the tokenizer tests: Geneformer's dictionaries and golden tokens in ../shared."""

from __future__ import annotations

import pytest
from _tokenize_paths import GOLDEN, V1_FILES, V2_FILES

from _shared_data import skip_or_fail


def _need(paths):
    missing = [p for p in paths if not p.is_file()]
    if missing:
        skip_or_fail(f"Geneformer dictionaries/golden files not present in ../shared ({missing[0]})")


@pytest.fixture(scope="session")
def v2_vocab():
    from geneattn.tokenize import GeneVocab

    _need(V2_FILES)
    return GeneVocab.from_geneformer(*V2_FILES)


@pytest.fixture(scope="session")
def v1_vocab():
    from geneattn.tokenize import GeneVocab

    _need(V1_FILES)
    return GeneVocab.from_geneformer(*V1_FILES)


@pytest.fixture(scope="session")
def golden_dir():
    _need([GOLDEN / "small.h5ad", GOLDEN / "small_messy.h5ad"])
    return GOLDEN
