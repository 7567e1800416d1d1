"""Stage ``tokenize``: Geneformer rank-value encoding of the study cells and the pretraining corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from .. import _keys as K
from ..tokenize import GeneVocab
from ._stage import ConfigView, StageContext, stage


def _vocab(cfg: ConfigView, corpus: Path) -> tuple[GeneVocab, bool, int]:
    """(vocabulary, special tokens, input size): the checkpoint's own (`token_settings`), or the corpus's."""
    from ..models import token_settings
    from ..tokenize import build_vocab, geneformer_settings

    if cfg.builtin is None and cfg.model is None:
        vocab = build_vocab(str(corpus), special_tokens=False)
        return vocab, *geneformer_settings(vocab, model_input_size=cfg.model_input_size)
    model = cfg.builtin if cfg.builtin is not None else cfg.model
    ts = token_settings(model, dictionaries=cfg.dictionaries, model_input_size=cfg.model_input_size)
    return ts.vocab, ts.special_tokens, ts.model_input_size


@stage(
    "tokenize",
    deps=("data",),
    reads=("model_input_size", "model", "dictionaries", "checkpoint"),
    outputs=("tokens/vocab.json",),
)
def tokenize(ctx: StageContext) -> str:
    """Rank-value encode the study cells (``tokens/``) and the pretraining corpus (``corpus_tokens/``)."""
    import anndata as ad

    from ..tokenize import tokenize as encode

    res, cfg = ctx.results, ctx.config
    corpus = res.corpus_h5ad if res.corpus_h5ad.is_file() else res.study_h5ad
    vocab, special, size = _vocab(cfg, corpus)
    obs = ad.read_h5ad(res.study_h5ad, backed="r")
    keys = [k for k in K.TOKEN_OBS_KEYS if k in obs.obs.columns]
    obs.file.close()
    ds = encode(str(res.study_h5ad), vocab, out=res.tokens, model_input_size=size, special_tokens=special,
                obs_keys=keys)  # fmt: skip
    if cfg.model is None and cfg.builtin is None:
        encode(str(corpus), vocab, out=res.corpus_tokens, model_input_size=size, special_tokens=special)
    elif res.corpus_tokens.exists():
        shutil.rmtree(res.corpus_tokens)
    median = int(pd.Series(ds["length"]).median())
    return f"{len(ds)} cells, vocabulary {vocab.size} tokens, median {median} tokens per cell"
