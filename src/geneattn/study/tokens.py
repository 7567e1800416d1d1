"""Stage ``tokenize``: Geneformer rank-value encoding of the study cells and the pretraining corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from .. import _keys as K
from ..errors import InputError
from ..models.presets import V1_VOCAB_SIZE, V2_VOCAB_SIZE
from ..tokenize import GeneVocab
from ._stage import ConfigView, StageContext, stage


def geneformer_vocab(model: str, dictionaries: str) -> GeneVocab:
    """Geneformer's dictionaries under ``dictionaries`` that match ``model``'s vocabulary size."""
    mcfg = Path(model) / "config.json"
    if not mcfg.is_file():
        msg = f"{model} is not a model directory (no config.json)"
        raise InputError(msg)
    n = int(json.loads(mcfg.read_text(encoding="utf-8"))["vocab_size"])
    tag = {V1_VOCAB_SIZE: "gc30M", V2_VOCAB_SIZE: "gc104M"}.get(n)
    root = Path(dictionaries)
    tok = sorted(root.rglob(f"token_dictionary_{tag}.pkl" if tag else "token_dictionary*.pkl"))
    if not tok:
        msg = f"no Geneformer token dictionary for a model with {n} tokens under {root}"
        raise InputError(msg)
    d, suffix = tok[0].parent, tok[0].stem.removeprefix("token_dictionary")
    mapping = d / f"ensembl_mapping_dict{suffix}.pkl"
    vocab = GeneVocab.from_geneformer(
        tok[0], d / f"gene_median_dictionary{suffix}.pkl", mapping if mapping.is_file() else None
    )
    vocab.check_model_vocab_size(n)
    return vocab


def _vocab(cfg: ConfigView, corpus: Path) -> tuple[GeneVocab, bool, int]:
    """(vocabulary, special tokens, input size): Geneformer's, the shipped checkpoint's, or the corpus's."""
    from ..tokenize import build_vocab, geneformer_settings

    if cfg.builtin is not None:
        from ..models import builtin_checkpoint, builtin_input_size

        path = builtin_checkpoint(cfg.builtin)
        vocab = GeneVocab.from_json(path / "vocab.json")
        special, _ = geneformer_settings(vocab)
        return vocab, special, min(cfg.model_input_size, builtin_input_size(cfg.builtin))
    if cfg.model is None:
        vocab = build_vocab(str(corpus), special_tokens=False)
        return vocab, *geneformer_settings(vocab, model_input_size=cfg.model_input_size)
    vocab = geneformer_vocab(cfg.model, cfg.dictionaries)
    special, size = geneformer_settings(vocab)  # V1: 2,048 tokens; V2: <cls> ... <eos>, 4,096
    return vocab, special, min(cfg.model_input_size, size)


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
