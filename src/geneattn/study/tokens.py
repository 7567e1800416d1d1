"""Stage ``tokenize``: Geneformer rank-value encoding of the study cells and the pretraining corpus."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import write_json
from .._results import Results
from ..tokenize import GeneVocab
from ._stage import ConfigView, StageContext, stage

if TYPE_CHECKING:
    import datasets


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


#: what the tokenize stage records about the cut of each cell to the model's input
INPUT_FILE = "input.json"


def effective_input_size(cfg: ConfigView) -> int:
    """Tokens per cell the study uses: ``model_input_size`` capped by the model's positions.

    The shipped checkpoint's pretraining size (`geneattn.models.builtin_input_size`, 256 for
    ``mini-nutlin``), a model directory's ``max_position_embeddings``, else ``model_input_size``.
    """
    if cfg.builtin is not None:
        from ..models import builtin_input_size

        return min(cfg.model_input_size, builtin_input_size(cfg.builtin))
    mcfg = Path(cfg.model) / "config.json" if cfg.model is not None else None
    if mcfg is not None and mcfg.is_file():
        n = json.loads(mcfg.read_text(encoding="utf-8")).get("max_position_embeddings")
        return min(cfg.model_input_size, int(n)) if n else cfg.model_input_size
    return cfg.model_input_size


def input_size_note(cfg: ConfigView) -> str:
    """A header line for ``config.toml`` when the model caps ``model_input_size`` ("" otherwise)."""
    size = effective_input_size(cfg)
    if size == cfg.model_input_size:
        return ""
    return (
        f"\nmodel_input_size = {cfg.model_input_size} was requested; the model has {size} positions, "
        f"so cells are cut to {size} tokens (effective model_input_size = {size}; see tokens/{INPUT_FILE})"
    )


def annotate_input_size(toml_text: str, cfg: ConfigView) -> str:
    """``config.toml`` text with the effective input size beside ``model_input_size`` when the model caps it.

    The key keeps the requested value (``geneattn run --config`` reproduces the run either way); the
    comment on its line and the header line (`input_size_note`) give the value used.
    """
    size = effective_input_size(cfg)
    if size == cfg.model_input_size:
        return toml_text
    line = f"model_input_size = {cfg.model_input_size}"
    comment = f"  # requested; effective {size}: the model has {size} positions (tokens/{INPUT_FILE})"
    return "\n".join(x + comment if x == line else x for x in toml_text.split("\n"))


def input_summary(
    n_genes: np.ndarray, lengths: np.ndarray, *, requested: int, size: int, n_special: int
) -> dict[str, object]:
    """How the input cut the cells: the effective size and the share of cells truncated.

    Parameters
    ----------
    n_genes
        Genes expressed per cell before truncation (``obs["n_genes"]``: every gene with a count).
    lengths
        Tokens per cell in the input (special tokens included).
    requested, size
        ``model_input_size`` asked for and used.
    n_special
        Special tokens per input (``<cls>`` and ``<eos>``: 2).

    Returns
    -------
    dict ``model_input_size_requested, model_input_size, genes_per_input, n_cells, n_cells_truncated,
    share_cells_truncated, median_genes_expressed, max_genes_expressed, median_genes_in_input``. A
    cell is truncated when its input is full and it expresses more genes than the input holds.
    """
    n_genes = np.asarray(n_genes, dtype=np.float64)
    genes_in = np.asarray(lengths, dtype=np.int64) - n_special
    capacity = size - n_special
    cut = (genes_in >= capacity) & (n_genes > genes_in)
    n = len(genes_in)
    return {
        "model_input_size_requested": int(requested),
        "model_input_size": int(size),
        "genes_per_input": int(capacity),
        "n_cells": n,
        "n_cells_truncated": int(cut.sum()),
        "share_cells_truncated": float(cut.mean()) if n else float("nan"),
        "median_genes_expressed": float(np.median(n_genes)) if n else float("nan"),
        "max_genes_expressed": int(n_genes.max()) if n else 0,
        "median_genes_in_input": float(np.median(genes_in)) if n else float("nan"),
    }


def read_input_summary(res: Results) -> dict[str, object]:
    """``tokens/input.json`` of a results directory ({} when the tokenize stage did not write it)."""
    path = res.tokens / INPUT_FILE
    return res.read_json(path) if path.is_file() else {}


def _n_genes(ds: datasets.Dataset, study_h5ad: Path) -> np.ndarray:
    """Genes expressed per cell before truncation: the tokens' ``n_genes`` column, else counted in X."""
    if K.N_GENES in ds.column_names:
        return np.asarray(ds[K.N_GENES], dtype=np.float64)
    import anndata as ad

    x = ad.read_h5ad(study_h5ad).X
    return np.asarray((x > 0).sum(axis=1)).ravel().astype(np.float64)


@stage(
    "tokenize",
    deps=("data",),
    reads=("model_input_size", "model", "dictionaries", "checkpoint"),
    outputs=("tokens/vocab.json", f"tokens/{INPUT_FILE}"),
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
    n_special = 2 if special and vocab.cls_id is not None and vocab.eos_id is not None else 0
    summary = input_summary(_n_genes(ds, res.study_h5ad), np.asarray(ds["length"]), requested=cfg.model_input_size,
                            size=size, n_special=n_special)  # fmt: skip
    write_json(res.tokens / INPUT_FILE, summary)
    median = int(pd.Series(ds["length"]).median())
    return (
        f"{len(ds)} cells, vocabulary {vocab.size} tokens, median {median} tokens per cell; input {size} tokens "
        f"(requested {cfg.model_input_size}): {summary['share_cells_truncated']:.0%} of cells cut "
        f"(median {summary['median_genes_expressed']:.0f} genes expressed, {summary['median_genes_in_input']:.0f} in the input)"
    )
