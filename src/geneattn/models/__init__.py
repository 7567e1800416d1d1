"""Models: Geneformer presets, checkpoint loading, pretraining (masked gene modelling) and fine-tuning.

Importing this package is cheap: submodules (and torch/transformers) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._classes import sort_classes  # torch-free: the one class order, re-exported here

if TYPE_CHECKING:  # pragma: no cover
    from ._args import TrainArgs
    from ._builtin import BUILTIN, builtin_checkpoint, builtin_input_size
    from ._finetune import FinetuneResult, finetune, learned_run
    from ._ftconfig import FinetuneConfig
    from ._load import check_vocab, load, save_model
    from ._predict import predict
    from ._pretrain import PretrainConfig, pretrain
    from .presets import PRESETS, make_config
    from .splits import make_splits, permute_labels

_WHERE = {
    "BUILTIN": "_builtin",
    "builtin_checkpoint": "_builtin",
    "builtin_input_size": "_builtin",
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
    "TrainArgs",
    "builtin_checkpoint",
    "builtin_input_size",
    "check_vocab",
    "finetune",
    "learned_run",
    "load",
    "make_config",
    "make_splits",
    "permute_labels",
    "predict",
    "pretrain",
    "save_model",
    "sort_classes",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
