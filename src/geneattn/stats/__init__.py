"""Statistics: differential expression, agreement, confounds, significance, attribution baselines.

Submodules are imported lazily (nothing heavy runs at import). The study's use of them (which tables
it writes, ``metrics.json``) is `geneattn.study.statistics`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["de", "agreement", "confounds", "significance", "between_class", "attribution", "nulls", "run_deltas", "per_class", "baselines", "incremental", "adjust", "wells", "rank_genes", "de_df", "pseudobulk",
           "normalize", "umap"]  # fmt: skip

_SUBMODULES = (
    "de",
    "agreement",
    "confounds",
    "significance",
    "between_class",
    "attribution",
    "nulls",
    "run_deltas",
    "per_class",
    "baselines",
    "incremental",
    "adjust",
    "wells",
)
_FUNCS = {"rank_genes": "de", "de_df": "de", "pseudobulk": "de", "normalize": "de", "umap": "de"}

if TYPE_CHECKING:  # pragma: no cover
    from . import (
        adjust,
        agreement,
        attribution,
        baselines,
        confounds,
        de,
        incremental,
        nulls,
        per_class,
        significance,
        wells,
    )
    from .de import de_df, normalize, pseudobulk, rank_genes, umap


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCS:
        return getattr(importlib.import_module(f".{_FUNCS[name]}", __name__), name)
    msg = f"module 'geneattn.stats' has no attribute {name!r}"
    raise AttributeError(msg)
