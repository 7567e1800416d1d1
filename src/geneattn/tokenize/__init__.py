"""Geneformer rank-value encoding: vocabularies, the exact tokenizer, tokens on disk.

`tokenize` reproduces Geneformer's ``TranscriptomeTokenizer`` token for token (including the
order of tied genes) while streaming from backed ``.h5ad`` files.
"""

from __future__ import annotations

from .dataset import PARAMS_FILE, VOCAB_FILE, geneformer_settings, load_tokens, load_vocab, tokenize
from .rank_value import encode
from .vocab import SPECIAL_TOKENS, GeneVocab, build_vocab, load_pickle

__all__ = [
    "GeneVocab",
    "build_vocab",
    "load_pickle",
    "tokenize",
    "geneformer_settings",
    "load_tokens",
    "load_vocab",
    "encode",
    "SPECIAL_TOKENS",
    "VOCAB_FILE",
    "PARAMS_FILE",
]
