"""The study's fine-tuning recipe as a `FinetuneConfig`: the one place that holds its defaults.

``geneattn run`` (`geneattn.study.training.finetune_config`), `geneattn.tl.finetune` and the README's
Python example all train through `recipe`, so they train the same model.
"""

from __future__ import annotations

import dataclasses
import math

from ..errors import InputError
from ._ftconfig import FinetuneConfig

__all__ = ["recipe", "ENCODER_LEARNING_RATES"]

#: the encoder's fine-tuning learning rate when the recipe sets none: a small model pretrained here
#: needs 1e-3 (at 1e-4 it does not learn within a few epochs); Geneformer's own is 5e-5
ENCODER_LEARNING_RATES = {"mini": 1e-3, "geneformer": 5e-5}

# study field -> FinetuneConfig field
_FIELDS = {
    "finetune_epochs": "epochs",
    "finetune_lr": "learning_rate",
    "finetune_head_lr": "head_learning_rate",
    "pooling": "pooling",
}


def recipe(dataset: str | None = None, *, geneformer: bool = False, **overrides: object) -> FinetuneConfig:
    """The study's fine-tuning recipe (what ``geneattn run`` trains), with ``overrides`` on top.

    Parameters
    ----------
    dataset
        A built-in dataset with its own recipe (``"pbmc68k"``; `geneattn.study.RECIPES`); None or
        any other name: the default recipe.
    geneformer
        Fine-tuning a Geneformer checkpoint: the default recipe with Geneformer's learning rate 5e-5
        (a model pretrained here: 1e-3; `ENCODER_LEARNING_RATES`).
    **overrides
        `FinetuneConfig` fields that replace the recipe's (None values are ignored).

    Returns
    -------
    `FinetuneConfig`: the recipe's epochs, learning rates and pooling; the epoch is selected by
    validation macro-F1 (a briefly trained small model grows over-confident, its validation loss rising,
    while its validation accuracy still improves).
    """
    from ..study.config import RECIPES

    table = RECIPES["default"] if geneformer else RECIPES.get(dataset or "default", RECIPES["default"])
    kwargs: dict[str, object] = {_FIELDS[k]: v for k, v in table.items() if k in _FIELDS}
    kwargs.setdefault("learning_rate", ENCODER_LEARNING_RATES["geneformer" if geneformer else "mini"])
    kwargs["select_by"] = "macro_f1"
    names = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        msg = f"recipe: unknown FinetuneConfig field(s) {', '.join(unknown)}"
        raise InputError(msg)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("learning_rate", "head_learning_rate"):
        value = kwargs.get(name)
        if isinstance(value, int | float) and math.isfinite(value):
            kwargs[name] = float(value)
    return FinetuneConfig(**kwargs)
