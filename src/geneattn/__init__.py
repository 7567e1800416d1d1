"""Find the genes a single-cell foundation model attends to, and test whether that signal is real.

Nothing runs at import: submodules are imported lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._settings import settings
from .errors import InputError, OutputError

__version__ = "0.2.0"

_SUBMODULES = (
    "io",
    "datasets",
    "tokenize",
    "models",
    "attention",
    "stats",
    "get",
    "tl",
    "pl",
    "plotting",
    "report",
    "pipeline",
    "study",
)

__all__ = ["InputError", "OutputError", "settings", "__version__", *_SUBMODULES]

if TYPE_CHECKING:  # pragma: no cover
    from . import (  # noqa: F401
        attention,
        datasets,
        get,
        io,
        models,
        pipeline,
        pl,
        plotting,
        report,
        stats,
        study,
        tl,
        tokenize,
    )


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    msg = f"module 'geneattn' has no attribute {name!r}"
    raise AttributeError(msg)
