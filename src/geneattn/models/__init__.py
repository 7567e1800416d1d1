"""Models: Geneformer presets, checkpoint loading, pretraining (masked gene modelling) and fine-tuning.

Importing this package is cheap: submodules (and torch/transformers) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._classes import sort_classes  # torch-free: the one class order, re-exported here

if TYPE_CHECKING:  # pragma: no cover
    from ._args import TrainArgs
    from ._assess import classifier_labels, evaluate_classifier
    from ._builtin import BUILTIN, builtin_checkpoint, builtin_input_size
    from ._checkpoint import TokenSettings, geneformer_vocab, resolve_checkpoint, token_settings
    from ._finetune import FinetuneResult, finetune, learned_run
    from ._ftconfig import FinetuneConfig
    from ._load import check_vocab, load, save_model
    from ._predict import predict
    from ._pretrain import PretrainConfig, pretrain
    from ._recipe import recipe
    from .presets import PRESETS, make_config
    from .splits import make_splits, permute_labels

_WHERE = {
    "BUILTIN": "_builtin",
    "builtin_checkpoint": "_builtin",
    "builtin_input_size": "_builtin",
    "evaluate_classifier": "_assess",
    "classifier_labels": "_assess",
    "TokenSettings": "_checkpoint",
    "geneformer_vocab": "_checkpoint",
    "resolve_checkpoint": "_checkpoint",
    "token_settings": "_checkpoint",
    "recipe": "_recipe",
    "PRESETS": "presets",
    "make_config": "presets",
    "load": "_load",
    "check_vocab": "_load",
    "save_model": "_load",
    "TrainArgs": "_args",
    "PretrainConfig": "_pretrain",
    "pretrain": "_pretrain",
    "FinetuneConfig": "_ftconfig",
    "FinetuneResult": "_finetune",
    "finetune": "_finetune",
    "learned_run": "_finetune",
    "predict": "_predict",
    "make_splits": "splits",
    "permute_labels": "splits",
}

__all__ = [  # noqa: F822 - resolved lazily by __getattr__
    "BUILTIN",
    "FinetuneConfig",
    "FinetuneResult",
    "PRESETS",
    "PretrainConfig",
    "TokenSettings",
    "TrainArgs",
    "builtin_checkpoint",
    "builtin_input_size",
    "check_vocab",
    "classifier_labels",
    "evaluate_classifier",
    "finetune",
    "geneformer_vocab",
    "learned_run",
    "load",
    "make_config",
    "make_splits",
    "permute_labels",
    "predict",
    "pretrain",
    "recipe",
    "resolve_checkpoint",
    "save_model",
    "sort_classes",
    "token_settings",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
