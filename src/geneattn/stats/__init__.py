"""Statistics: differential expression, agreement, confounds, significance, attribution baselines.

Submodules are imported lazily (nothing heavy runs at import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "de",
    "agreement",
    "confounds",
    "significance",
    "attribution",
    "run",
    "rank_genes",
    "de_df",
    "pseudobulk",
    "normalize",
    "umap",
    "run_stats",
]

_SUBMODULES = ("de", "agreement", "confounds", "significance", "attribution", "run")
_FUNCS = {
    "rank_genes": "de",
    "de_df": "de",
    "pseudobulk": "de",
    "normalize": "de",
    "umap": "de",
    "run_stats": "run",
}

if TYPE_CHECKING:  # pragma: no cover
    from . import agreement, attribution, confounds, de, run, significance
    from .de import de_df, normalize, pseudobulk, rank_genes, umap
    from .run import run_stats


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCS:
        return getattr(importlib.import_module(f".{_FUNCS[name]}", __name__), name)
    msg = f"module 'geneattn.stats' has no attribute {name!r}"
    raise AttributeError(msg)
