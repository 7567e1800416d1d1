"""What every tool shares: the model's tokenizer settings, the cells' tokens, a serialisable params dict."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData

    import datasets

    from ..models import TokenSettings

ModelLike = str | os.PathLike[str]


def model_name(model: ModelLike) -> str:
    """The name a model's columns carry: a shipped checkpoint's name, else its directory's name."""
    return model if isinstance(model, str) and not Path(model).exists() else Path(model).resolve().name


def check_groupby(adata: AnnData, groupby: str | None) -> None:
    """`InputError` unless ``groupby`` is None or an ``obs`` column without missing values."""
    if groupby is None:
        return
    if groupby not in adata.obs.columns:
        msg = f"groupby {groupby!r} is not an obs column (columns: {list(adata.obs.columns)})"
        raise InputError(msg)
    if adata.obs[groupby].isna().any():
        msg = f"obs[{groupby!r}] has missing values"
        raise InputError(msg)


def tokens(
    adata: AnnData, settings: TokenSettings, *, obs_keys: Sequence[str | None] = (), layer: str | None = None
) -> datasets.Dataset:
    """The cells of ``adata`` rank-value encoded as ``settings`` says, in memory (``obs_keys`` copied)."""
    from ..tokenize import tokenize

    keys = list(dict.fromkeys(k for k in obs_keys if k is not None and k in adata.obs.columns))
    return tokenize(adata, settings.vocab, out=None, model_input_size=settings.model_input_size,
                    special_tokens=settings.special_tokens, obs_keys=keys, layer=layer)  # fmt: skip


def params(settings: TokenSettings, **extra: object) -> dict[str, object]:
    """``uns[key]["params"]``: the model and its tokenizer settings plus ``extra`` (None values left out)."""
    out: dict[str, object] = {
        "model": str(settings.path),
        "vocab_fingerprint": settings.vocab.fingerprint,
        "model_input_size": int(settings.model_input_size),
        "special_tokens": bool(settings.special_tokens),
    }
    out.update({k: v for k, v in extra.items() if v is not None})
    return out
