"""A checkpoint's own tokenizer: its vocabulary, special tokens and input size (`token_settings`).

The one place that decides how cells are tokenized for a given model, used by the study's tokenize
stage and by `geneattn.tl`: a shipped checkpoint (its ``vocab.json`` and ``recipe.json``), a model of
ours (``vocab.json`` beside ``config.json``), or a Geneformer checkpoint with Geneformer's dictionaries.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..tokenize.vocab import GeneVocab
from ._builtin import BUILTIN, builtin_checkpoint
from .presets import V1_VOCAB_SIZE, V2_VOCAB_SIZE

__all__ = ["TokenSettings", "resolve_checkpoint", "geneformer_vocab", "token_settings"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TokenSettings:
    """How to tokenize cells for one model.

    Attributes
    ----------
    path
        The model directory.
    vocab
        Its vocabulary.
    special_tokens
        Whether cells start with ``<cls>`` and end with ``<eos>``.
    model_input_size
        Maximum tokens per cell (special tokens included).
    geneformer
        Whether the vocabulary comes from Geneformer's dictionaries (a Geneformer checkpoint).
    """

    path: Path
    vocab: GeneVocab
    special_tokens: bool
    model_input_size: int
    geneformer: bool = False


def resolve_checkpoint(model: PathLike) -> Path:
    """A shipped checkpoint's name (``"mini-nutlin"``) or a model directory with a ``config.json``."""
    if isinstance(model, str) and model in BUILTIN:
        return builtin_checkpoint(model)
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        msg = f"{model} is not a model directory (no config.json) nor a shipped checkpoint ({', '.join(BUILTIN)})"
        raise InputError(msg)
    return path


def geneformer_vocab(model: PathLike, dictionaries: PathLike) -> GeneVocab:
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


def _trained_size(path: Path) -> int | None:
    """Tokens per cell the model was pretrained with (``recipe.json``), or None when not recorded."""
    recipe = path / "recipe.json"
    if not recipe.is_file():
        return None
    try:
        return int(json.loads(recipe.read_text(encoding="utf-8"))["model_input_size"])
    except (ValueError, KeyError, TypeError) as e:
        msg = f"{recipe} has no model_input_size ({type(e).__name__}: {e})"
        raise InputError(msg) from None


def token_settings(
    model: PathLike, *, dictionaries: PathLike | None = None, model_input_size: int | None = None
) -> TokenSettings:
    """The tokenizer settings of ``model``: vocabulary, special tokens and input size.

    Parameters
    ----------
    model
        A shipped checkpoint's name or path, a model directory of ours (``vocab.json`` beside
        ``config.json``), or a Geneformer checkpoint (then ``dictionaries`` is needed).
    dictionaries
        Directory with Geneformer's dictionaries (searched recursively for the one matching the
        model's vocabulary size: V1 ``gc30M``, V2 ``gc104M``).
    model_input_size
        Upper bound on the tokens per cell (None: the model's own).

    Returns
    -------
    `TokenSettings`. Geneformer V1 dictionaries: no special tokens, 2,048 tokens; V2: ``<cls>`` ...
    ``<eos>``, 4,096. A shipped checkpoint: at most the size it was pretrained with (``recipe.json``);
    a model of ours without one: at most its position embeddings.
    """
    from ..tokenize import geneformer_settings

    path = resolve_checkpoint(model)
    if (path / "vocab.json").is_file() and dictionaries is None:
        vocab = GeneVocab.from_json(path / "vocab.json")
        special, size = geneformer_settings(vocab)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        trained = _trained_size(path) or int(config.get("max_position_embeddings", size))
        size = min(size, trained)
        geneformer = False
    elif dictionaries is not None:
        vocab = geneformer_vocab(path, dictionaries)
        special, size = geneformer_settings(vocab)  # V1: 2,048 tokens; V2: <cls> ... <eos>, 4,096
        geneformer = True
    else:
        msg = f"{path} has no vocab.json: pass dictionaries= (the Geneformer dictionaries of this model)"
        raise InputError(msg)
    if model_input_size is not None:
        size = min(size, int(model_input_size))
    return TokenSettings(path, vocab, special, size, geneformer)
