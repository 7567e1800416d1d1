from __future__ import annotations

import pytest
from _ddp_smoke import TINY, tiny_tokens, tiny_vocab


@pytest.fixture(scope="session")
def tokens():
    """96 cells, 3 classes (a/b/c) with class-specific genes, 4 wells per class, vocabulary 60."""
    return tiny_tokens()


@pytest.fixture(scope="session")
def vocab():
    """The tiny tokens' `GeneVocab` (60 tokens: <pad>, <mask>, G2 ... G59)."""
    return tiny_vocab()


@pytest.fixture(scope="session")
def tiny_config():
    return dict(TINY)


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, tokens, vocab, tiny_config):
    from geneattn.models import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pt") / "model"
    cfg = PretrainConfig(epochs=1, batch_size=8, save_steps=5, eval_cells=8, config_overrides=tiny_config)
    return pretrain(tokens, vocab, out=out, config=cfg, seed=0)
