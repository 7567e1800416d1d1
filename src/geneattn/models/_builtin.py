"""Checkpoints shipped inside the package (``geneattn/models/checkpoints/<name>/``)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..errors import InputError

__all__ = ["builtin_checkpoint", "builtin_input_size", "BUILTIN", "DEFAULT_CHECKPOINT"]

DEFAULT_CHECKPOINT = "mini-nutlin"
#: name -> what it is (each directory holds config.json, model.safetensors, vocab.json, RECIPE.md)
BUILTIN = {
    "mini-nutlin": "mini preset pretrained on simulated nutlin-3a cells at all 8 doses (not the study's cells)",
}
FILES = ("config.json", "model.safetensors", "vocab.json")


def _fail(path: Path, what: str) -> InputError:
    return InputError(
        f"built-in checkpoint {path.name!r} is unusable: {what}; reinstall geneattn or re-create it "
        f"with the commands in {path / 'RECIPE.md'}"
    )


def builtin_checkpoint(name: str = DEFAULT_CHECKPOINT) -> Path:
    """The directory of a shipped checkpoint, checked to be complete and readable.

    Parameters
    ----------
    name
        One of `BUILTIN` (``"mini-nutlin"``).

    Returns
    -------
    Path
        A model directory for `geneattn.models.load` / `finetune`; its ``vocab.json`` is the
        vocabulary to tokenize with.

    Raises
    ------
    InputError
        If the name is unknown, or a file is missing or corrupted (unreadable JSON, truncated
        weights, a vocabulary whose size differs from the model's).
    """
    if name not in BUILTIN:
        msg = f"unknown built-in checkpoint {name!r}; choose one of {sorted(BUILTIN)}"
        raise InputError(msg)
    path = _root() / name
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise _fail(path, f"missing {', '.join(missing)}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        size = int(config["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _fail(path, f"config.json is not a model config ({type(e).__name__}: {e})") from None
    _check_weights(path, size)
    from ..tokenize import GeneVocab

    try:
        vocab = GeneVocab.from_json(path / "vocab.json")
    except InputError as e:
        raise _fail(path, f"vocab.json: {e}") from None
    if vocab.size != size:
        raise _fail(path, f"vocab.json has {vocab.size} tokens but the model {size}")
    return path


def builtin_input_size(name: str = DEFAULT_CHECKPOINT) -> int:
    """Tokens per cell the shipped checkpoint was pretrained with (its ``recipe.json``).

    Study cells are tokenized to at most this many tokens: positions beyond it were never trained.
    """
    path = builtin_checkpoint(name)
    try:
        return int(json.loads((path / "recipe.json").read_text(encoding="utf-8"))["model_input_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _fail(path, f"recipe.json has no model_input_size ({type(e).__name__}: {e})") from None


def _root() -> Path:
    """Where the shipped checkpoints live (package data)."""
    return Path(str(resources.files("geneattn.models") / "checkpoints"))


def _check_weights(path: Path, vocab_size: int) -> None:
    """Read every tensor (a few MB): a truncated or altered file fails here, not mid-study."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        state = load_file(path / "model.safetensors")
    except (SafetensorError, OSError, ValueError) as e:
        raise _fail(path, f"model.safetensors is unreadable ({e})") from None
    emb = next((v for k, v in state.items() if k.endswith("word_embeddings.weight")), None)
    if emb is None or emb.shape[0] != vocab_size:
        raise _fail(path, "model.safetensors has no token embeddings matching config.json")
